"""A NumPy reference of llama2.c inference: the oracle every C build is checked against.

Same semantics as run.c: fp32 activations, RoPE recomputed per position, grouped-query attention, SwiGLU,
xorshift64* sampler with temperature and top-p, prompt tokens forced, generation ending on BOS.
"""

import ctypes
import ctypes.util
import dataclasses

import numpy as np

from deploy.tokenizer import BOS, printable

F32 = np.float32
MASK64 = (1 << 64) - 1

# Every sum runs in index order with float32 rounding after each product and each addition, as run.c's loops do,
# and expf, sqrtf, powf, cosf and sinf come from this machine's libm, so the reference agrees with a C build here to
# the last bit rather than to a tolerance.


def seq_sum(values):
    return np.cumsum(values, dtype=F32)[-1]


def matvec(columns, x):
    """W @ x with W given as its transpose (columns contiguous): out[i] = sum over j in order of W[i, j] * x[j]."""
    out = np.zeros(columns.shape[1], F32)
    for j in range(columns.shape[0]):
        out += columns[j] * x[j]
    return out


def _libm():
    try:
        return ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    except OSError:
        return None


LIBM = _libm()


def _float_function(name, double_version):
    """This machine's float libm function (what a C build calls), or the double one rounded once without a libm."""
    if LIBM is None:
        return lambda x: double_version(np.asarray(x, np.float64)).astype(F32)
    function = getattr(LIBM, name)
    function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float]
    vectorized = np.vectorize(function, otypes=[F32])
    return lambda x: vectorized(np.asarray(x, F32)).astype(F32)


EXPF = _float_function("expf", np.exp)
SQRTF = _float_function("sqrtf", np.sqrt)
COSF = _float_function("cosf", np.cos)
SINF = _float_function("sinf", np.sin)


def powf(base, exponents):
    if LIBM is None:
        return np.power(np.float64(base), np.asarray(exponents, np.float64)).astype(F32)
    LIBM.powf.restype, LIBM.powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    return np.array([LIBM.powf(base, float(e)) for e in np.asarray(exponents, F32)], F32)


def rmsnorm(x, weight):
    ss = seq_sum(x * x) / F32(len(x)) + F32(1e-5)
    scale = F32(1.0) / SQRTF(ss)
    return weight * (scale * x)


def softmax(x):
    e = EXPF(x - x.max())
    return e / seq_sum(e)


class Transformer:
    def __init__(self, model):
        self.model, self.config = model, model.config
        c, w = self.config, model.weights
        self.columns = {name: np.ascontiguousarray(np.swapaxes(w[name], -1, -2))
                        for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")}
        self.columns["classifier"] = np.ascontiguousarray(model.classifier.T)
        self.key_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), F32)
        self.value_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), F32)
        head_dim = (np.arange(0, c.dim, 2) % c.head_size).astype(F32) / F32(c.head_size)
        self.inv_freq = F32(1.0) / powf(10000.0, head_dim)

    def _rope(self, vec, pos):
        angle = F32(pos) * self.inv_freq[:len(vec) // 2]
        cos, sin = COSF(angle), SINF(angle)
        even, odd = vec[0::2].copy(), vec[1::2].copy()
        vec[0::2] = even * cos - odd * sin
        vec[1::2] = even * sin + odd * cos

    def _attention(self, layer, q, pos):
        c = self.config
        hs, kv_mul = c.head_size, c.n_heads // c.n_kv_heads
        out = np.zeros(c.dim, F32)
        scale = SQRTF(F32(hs))
        for h in range(c.n_heads):
            kv = slice((h // kv_mul) * hs, (h // kv_mul + 1) * hs)
            keys, values = self.key_cache[layer, :pos + 1, kv], self.value_cache[layer, :pos + 1, kv]
            query = q[h * hs:(h + 1) * hs]
            scores = np.zeros(pos + 1, F32)
            for i in range(hs):
                scores += keys[:, i] * query[i]
            weights = softmax(scores / scale)
            head = np.zeros(hs, F32)
            for t in range(pos + 1):
                head += weights[t] * values[t]
            out[h * hs:(h + 1) * hs] = head
        return out

    def forward(self, token, pos):
        c, w, cols = self.config, self.model.weights, self.columns
        x = w["tok_embeddings"][token].astype(F32).copy()
        for layer in range(c.n_layers):
            xb = rmsnorm(x, w["rms_att"][layer])
            q = matvec(cols["wq"][layer], xb)
            k = matvec(cols["wk"][layer], xb)
            v = matvec(cols["wv"][layer], xb)
            self._rope(q, pos)
            self._rope(k, pos)
            self.key_cache[layer, pos], self.value_cache[layer, pos] = k, v
            x = x + matvec(cols["wo"][layer], self._attention(layer, q, pos))
            xb = rmsnorm(x, w["rms_ffn"][layer])
            h1, h3 = matvec(cols["w1"][layer], xb), matvec(cols["w3"][layer], xb)
            hidden = h1 * (F32(1.0) / (F32(1.0) + EXPF(-h1))) * h3
            x = x + matvec(cols["w2"][layer], hidden)
        x = rmsnorm(x, w["rms_final"])
        return matvec(cols["classifier"], x)


@dataclasses.dataclass
class Sampler:
    vocab_size: int
    temperature: float
    topp: float
    state: int

    def random_u32(self):
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & MASK64
        s ^= s >> 27
        self.state = s
        return ((s * 0x2545F4914F6CDD1D) & MASK64) >> 32

    def random_f32(self):
        return F32(self.random_u32() >> 8) / F32(16777216.0)

    def sample(self, logits):
        if self.temperature == 0.0:
            return int(np.argmax(logits))
        probs = softmax((logits / F32(self.temperature)).astype(F32)).astype(F32)
        coin = self.random_f32()
        if self.topp <= 0 or self.topp >= 1:
            cdf = np.cumsum(probs, dtype=F32)
            hit = np.nonzero(coin < cdf)[0]
            return int(hit[0]) if len(hit) else self.vocab_size - 1
        return self._sample_topp(probs, coin)

    def _sample_topp(self, probs, coin):
        cutoff = (F32(1.0) - F32(self.topp)) / F32(len(probs) - 1)
        candidates = np.nonzero(probs >= cutoff)[0]
        order = candidates[np.argsort(-probs[candidates], kind="stable")]
        cumulative = np.cumsum(probs[order], dtype=F32)
        over = np.nonzero(cumulative > F32(self.topp))[0]
        last = int(over[0]) if len(over) else len(order) - 1
        r = coin * cumulative[last]
        hit = np.nonzero(r < cumulative[:last + 1])[0]
        return int(order[hit[0]] if len(hit) else order[last])


@dataclasses.dataclass
class Generation:
    tokens: list  # every token fed or produced, starting with BOS
    text: bytes  # what run.c prints on stdout
    logits: list  # one array per forward step


def parse_float(value):
    """atof() as run.c's flags read it, then rounded to float like run.c's variables."""
    return float(F32(value))


def generate(model, tokenizer, prompt="", steps=256, temperature=1.0, topp=0.9, seed=1):
    """run.c's generate mode; `steps` and `seed` already normalised the way run.c's main does."""
    if steps <= 0 or steps > model.config.seq_len:
        steps = model.config.seq_len
    transformer = Transformer(model)
    sampler = Sampler(model.config.vocab_size, parse_float(temperature), parse_float(topp), seed)
    prompt_tokens = tokenizer.encode(prompt or "", bos=True)
    token, pos, text, fed, all_logits = prompt_tokens[0], 0, b"", [prompt_tokens[0]], []
    while pos < steps:
        logits = transformer.forward(token, pos)
        all_logits.append(logits.copy())
        nxt = prompt_tokens[pos + 1] if pos < len(prompt_tokens) - 1 else sampler.sample(logits)
        pos += 1
        if nxt == BOS:
            break
        text += printable(tokenizer.decode_piece(token, nxt))
        fed.append(nxt)
        token = nxt
    return Generation(fed, text + b"\n", all_logits)
