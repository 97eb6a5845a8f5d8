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
# and the float math functions are either this machine's libm (as a default build calls them) or the template's
# portable ones (as an exact build runs them): so the reference agrees with a C build to the last bit, not to a
# tolerance.


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


def _libm_function(libm, name, arity=1):
    function = getattr(libm, name)
    function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float] * arity
    vectorized = np.vectorize(function, otypes=[F32])
    return lambda *args: vectorized(*[np.asarray(a, F32) for a in args]).astype(F32)


class LibmMath:
    """This machine's libm float functions: what a default C build here calls."""

    def __init__(self):
        libm = _libm()
        if libm is None:
            raise RuntimeError("no libm to load")
        self.expf, self.cosf, self.sinf = (_libm_function(libm, name) for name in ("expf", "cosf", "sinf"))
        powf = _libm_function(libm, "powf", 2)
        self.pow10000f = lambda e: powf(F32(10000.0), e)

    @staticmethod
    def sqrtf(x):
        return np.sqrt(np.asarray(x, F32))


def _r(x):
    return np.asarray(x, F32)


class PortableMath:
    """The exact-mode math of ports/run.c.j2 (portable_expf, portable_sincos) step for step in float32."""

    @staticmethod
    def sqrtf(x):
        return np.sqrt(np.asarray(x, np.float64)).astype(F32)

    @staticmethod
    def expf(x):
        x = _r(x)
        k = np.floor(_r(_r(x * F32(1.44269502)) + F32(0.5)))
        r = _r(x - _r(k * F32(0.693145752)))
        r = _r(r - _r(k * F32(1.42860677e-06)))
        p = np.full_like(r, F32(0.000198412701))
        for c in (0.00138888892, 0.00833333377, 0.0416666679, 0.166666672, 0.5, 1.0, 1.0):
            p = _r(_r(p * r) + F32(c))
        with np.errstate(over="ignore"):
            out = np.ldexp(p.astype(np.float64), k.astype(np.int64)).astype(F32)
        out = np.where(x > F32(88.5), F32(np.inf), out)
        return np.where(x < F32(-104.0), F32(0.0), out).astype(F32)

    def pow10000f(self, e):
        return self.expf(_r(_r(e) * F32(9.2103405)))

    @staticmethod
    def _sincos(x, want_cos):
        x = _r(x)
        n = np.floor(_r(_r(x * F32(0.636619747)) + F32(0.5)))
        quadrant = (n.astype(np.int64) + (1 if want_cos else 0)) & 3
        r = _r(x - _r(n * F32(1.5703125)))
        r = _r(r - _r(n * F32(0.000483751297)))
        r = _r(r - _r(n * F32(7.54979013e-08)))
        r2 = _r(r * r)
        s = np.full_like(r, F32(2.75573188e-06))
        for c in (-0.000198412701, 0.00833333377, -0.166666672):
            s = _r(_r(s * r2) + F32(c))
        s = _r(r + _r(_r(s * r2) * r))
        c = np.full_like(r, F32(2.48015876e-05))
        for k in (-0.00138888892, 0.0416666679, -0.5, 1.0):
            c = _r(_r(c * r2) + F32(k))
        return np.select([quadrant == 0, quadrant == 1, quadrant == 2], [s, c, -s], -c).astype(F32)

    def cosf(self, x):
        return self._sincos(x, True)

    def sinf(self, x):
        return self._sincos(x, False)


MATH = {"libm": LibmMath, "portable": PortableMath}


def rmsnorm(x, weight, math):
    ss = seq_sum(x * x) / F32(len(x)) + F32(1e-5)
    scale = F32(1.0) / math.sqrtf(ss)
    return weight * (scale * x)


def softmax(x, math):
    e = math.expf(x - x.max())
    return e / seq_sum(e)


class Transformer:
    def __init__(self, model, math="libm"):
        self.model, self.config, self.math = model, model.config, MATH[math]()
        w = model.weights
        self.columns = {name: np.ascontiguousarray(np.swapaxes(w[name], -1, -2))
                        for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")}
        self.columns["classifier"] = np.ascontiguousarray(model.classifier.T)
        self._start()

    def _start(self):
        """The KV cache and RoPE frequencies, for a fresh generation."""
        c = self.config
        self.key_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), F32)
        self.value_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), F32)
        head_dim = (np.arange(0, c.dim, 2) % c.head_size).astype(F32) / F32(c.head_size)
        self.inv_freq = F32(1.0) / self.math.pow10000f(head_dim)

    def _rope(self, vec, pos):
        angle = F32(pos) * self.inv_freq[:len(vec) // 2]
        cos, sin = self.math.cosf(angle), self.math.sinf(angle)
        even, odd = vec[0::2].copy(), vec[1::2].copy()
        vec[0::2] = even * cos - odd * sin
        vec[1::2] = even * sin + odd * cos

    def _attention(self, layer, q, pos):
        c = self.config
        hs, kv_mul = c.head_size, c.n_heads // c.n_kv_heads
        out = np.zeros(c.dim, F32)
        scale = self.math.sqrtf(F32(hs))
        for h in range(c.n_heads):
            kv = slice((h // kv_mul) * hs, (h // kv_mul + 1) * hs)
            keys, values = self.key_cache[layer, :pos + 1, kv], self.value_cache[layer, :pos + 1, kv]
            query = q[h * hs:(h + 1) * hs]
            scores = np.zeros(pos + 1, F32)
            for i in range(hs):
                scores += keys[:, i] * query[i]
            weights = softmax(scores / scale, self.math)
            head = np.zeros(hs, F32)
            for t in range(pos + 1):
                head += weights[t] * values[t]
            out[h * hs:(h + 1) * hs] = head
        return out

    def project(self, kind, layer, x):
        return matvec(self.columns[kind][layer], x)

    def classify(self, x):
        return matvec(self.columns["classifier"], x)

    def forward(self, token, pos):
        c, w = self.config, self.model.weights
        x = w["tok_embeddings"][token].astype(F32).copy()
        for layer in range(c.n_layers):
            xb = rmsnorm(x, w["rms_att"][layer], self.math)
            q = self.project("wq", layer, xb)
            k = self.project("wk", layer, xb)
            v = self.project("wv", layer, xb)
            self._rope(q, pos)
            self._rope(k, pos)
            self.key_cache[layer, pos], self.value_cache[layer, pos] = k, v
            x = x + self.project("wo", layer, self._attention(layer, q, pos))
            xb = rmsnorm(x, w["rms_ffn"][layer], self.math)
            h1, h3 = self.project("w1", layer, xb), self.project("w3", layer, xb)
            hidden = h1 * (F32(1.0) / (F32(1.0) + self.math.expf(-h1))) * h3
            x = x + self.project("w2", layer, hidden)
        x = rmsnorm(x, w["rms_final"], self.math)
        return self.classify(x)


def round_half_away(values):
    wide = np.asarray(values, np.float64)
    return np.where(wide >= 0, np.floor(wide + 0.5), -np.floor(0.5 - wide)).astype(F32)


def quantize_groups(x, group):
    """The template's quantize(): per group, scale = max|x| / 127 and q = round(x / scale), half away from zero."""
    groups = np.asarray(x, F32).reshape(-1, group)
    scales = (np.abs(groups).max(axis=1) / F32(127.0)).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(scales[:, None] != 0, round_half_away(groups / scales[:, None]), 0)
    return q.astype(np.int64), scales


def matvec_q8(q, scales, x, group):
    """The template's matmul_q8: integer sums per group, each scaled by the weight's and the activation's scale,
    then the groups added in order."""
    xq, xs = quantize_groups(x, group)
    rows, cols = q.shape
    whole = (q.reshape(rows, cols // group, group).astype(np.int64) * xq.reshape(1, -1, group)).sum(axis=2)
    terms = (whole.astype(F32) * scales) * xs
    return np.cumsum(terms.astype(F32), axis=1, dtype=F32)[:, -1]


class QuantizedTransformer(Transformer):
    """An int8 (v2) checkpoint as the ports run it; `tensors` come from deploy.checkpoint.read_quantized."""

    def __init__(self, header, tensors, math="libm"):
        from deploy.checkpoint import Model

        self.group, self.tensors = header.group_size, tensors
        q, s = tensors["tok_embeddings"]
        embeddings = (q.astype(F32) * np.repeat(s, self.group, axis=1)).astype(F32)
        weights = {name: tensors[name] for name in ("rms_att", "rms_ffn", "rms_final")}
        model = Model(header.config, {**weights, "tok_embeddings": embeddings})
        self.model, self.config, self.math = model, header.config, MATH[math]()
        self._start()

    def project(self, kind, layer, x):
        q, s = self.tensors[kind]
        return matvec_q8(q[layer], s[layer], x, self.group)

    def classify(self, x):
        q, s = self.tensors["tok_embeddings" if self.config.shared_classifier else "wcls"]
        return matvec_q8(q, s, x, self.group)


class TernaryTransformer(Transformer):
    """A ternary (v3) checkpoint as the ports run it; `tensors` come from deploy.checkpoint.read_ternary. Norms,
    embeddings and the classifier stay fp32."""

    def __init__(self, header, tensors, math="libm"):
        from deploy.checkpoint import LAYER_MATRICES, Model

        self.tensors = tensors
        model = Model(header.config, {name: value for name, value in tensors.items() if name not in LAYER_MATRICES})
        self.model, self.config, self.math = model, header.config, MATH[math]()
        self.columns = {"classifier": np.ascontiguousarray(model.classifier.T)}
        self._start()

    def project(self, kind, layer, x):
        from deploy.ternary import matvec

        trits, scales = self.tensors[kind]
        return matvec(trits[layer], scales[layer], x)


def transformer_for(model, math="libm"):
    """The reference for a Model (fp32) or a (header, tensors) pair from read_quantized (int8) or read_ternary."""
    if not isinstance(model, tuple):
        return Transformer(model, math)
    return (TernaryTransformer if model[0].version == 3 else QuantizedTransformer)(*model, math)


@dataclasses.dataclass
class Sampler:
    vocab_size: int
    temperature: float
    topp: float
    state: int
    math: object = dataclasses.field(default_factory=LibmMath)

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
        probs = softmax((logits / F32(self.temperature)).astype(F32), self.math).astype(F32)
        coin = self.random_f32()
        if self.topp <= 0 or self.topp >= 1:
            cdf = np.cumsum(probs, dtype=F32)
            hit = np.nonzero(coin < cdf)[0]
            return int(hit[0]) if len(hit) else self.vocab_size - 1
        return self._sample_topp(probs, coin)

    def _sample_topp(self, probs, coin):
        cutoff = F32(F32(1.0) - F32(self.topp)) / F32(len(probs) - 1)
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


def generate(model, tokenizer, prompt="", steps=256, temperature=1.0, topp=0.9, seed=1, math="libm"):
    """run.c's generate mode; `seed` already normalised the way run.c's main does. `math` is "libm" (what a default
    build calls) or "portable" (an exact build's math). `model` is a Model (fp32), or (header, tensors) from
    deploy.checkpoint.read_quantized (int8) or read_ternary (v3)."""
    transformer = transformer_for(model, math)
    model = transformer.model
    if steps <= 0 or steps > model.config.seq_len:
        steps = model.config.seq_len
    sampler = Sampler(model.config.vocab_size, parse_float(temperature), parse_float(topp), seed, transformer.math)
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
