"""A NumPy reference of llama2.c inference: the oracle every C build is checked against.

Same semantics as run.c: fp32 activations, RoPE recomputed per position, grouped-query attention, SwiGLU,
xorshift64* sampler with temperature and top-p, prompt tokens forced, generation ending on BOS.
"""

import dataclasses

import numpy as np

from deploy.tokenizer import BOS, printable

F32 = np.float32
MASK64 = (1 << 64) - 1


def rmsnorm(x, weight):
    scale = F32(1.0) / np.sqrt(np.mean(x * x, dtype=F32) + F32(1e-5))
    return weight * (scale * x)


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum(dtype=F32)


class Transformer:
    def __init__(self, model):
        self.model, self.config = model, model.config
        c = self.config
        self.key_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), F32)
        self.value_cache = np.zeros((c.n_layers, c.seq_len, c.kv_dim), F32)
        half = np.arange(0, c.head_size, 2, dtype=F32) / F32(c.head_size)
        self.inv_freq = (F32(1.0) / np.power(F32(10000.0), half)).astype(F32)

    def _rope(self, vec, pos):
        angle = F32(pos) * np.tile(self.inv_freq, len(vec) // len(self.inv_freq) // 2)
        cos, sin = np.cos(angle).astype(F32), np.sin(angle).astype(F32)
        even, odd = vec[0::2].copy(), vec[1::2].copy()
        vec[0::2] = even * cos - odd * sin
        vec[1::2] = even * sin + odd * cos

    def forward(self, token, pos):
        c, w = self.config, self.model.weights
        hs, kv_mul = c.head_size, c.n_heads // c.n_kv_heads
        x = w["tok_embeddings"][token].astype(F32).copy()
        for layer in range(c.n_layers):
            xb = rmsnorm(x, w["rms_att"][layer])
            q = w["wq"][layer] @ xb
            k = w["wk"][layer] @ xb
            v = w["wv"][layer] @ xb
            self._rope(q, pos)
            self._rope(k, pos)
            self.key_cache[layer, pos], self.value_cache[layer, pos] = k, v
            keys = self.key_cache[layer, :pos + 1].reshape(pos + 1, c.n_kv_heads, hs)
            values = self.value_cache[layer, :pos + 1].reshape(pos + 1, c.n_kv_heads, hs)
            heads = q.reshape(c.n_heads, hs)
            out = np.empty_like(heads)
            for h in range(c.n_heads):
                scores = keys[:, h // kv_mul] @ heads[h] / np.sqrt(F32(hs))
                out[h] = softmax(scores.astype(F32)) @ values[:, h // kv_mul]
            x = x + w["wo"][layer] @ out.ravel()
            xb = rmsnorm(x, w["rms_ffn"][layer])
            h1, h3 = w["w1"][layer] @ xb, w["w3"][layer] @ xb
            hidden = h1 * (F32(1.0) / (F32(1.0) + np.exp(-h1))) * h3
            x = x + w["w2"][layer] @ hidden
        x = rmsnorm(x, w["rms_final"])
        return (self.model.classifier @ x).astype(F32)


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
