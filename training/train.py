"""Train the project's own stories260K-shaped model on the grammar corpus and export it as a llama2.c v0 checkpoint.

The PyTorch model computes exactly what run.c (and deploy.reference) computes: RMSNorm with eps 1e-5, RoPE on the
pairs (2i, 2i+1) of every head with frequency 1/10000^(2i/head_size), grouped-query attention (query head h reads kv
head h // (n_heads / n_kv_heads)), a SwiGLU feed-forward w2(silu(w1 x) * w3 x), and the token embeddings reused as the
classifier. Linear weights are stored (out, in), the layout deploy.checkpoint.Config.shapes() uses.

    python3 -m training.train                  # tokenizer + model into models/, about 15 minutes on 2 cores

Everything is seeded: the corpus, the tokenizer, the initial weights and the batches.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.checkpoint import Config, Model, read_model, write_model  # noqa: E402
from deploy.tokenizer import BOS  # noqa: E402

SHAPE = Config(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, seq_len=512)
NORM_EPS = 1e-5


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS))


def rope_angles(config, length):
    """(length, head_size/2) angles pos * 1/10000^(2i/head_size), in float32 as run.c computes them."""
    exponent = torch.arange(0, config.head_size, 2, dtype=torch.float32) / config.head_size
    inv_freq = 1.0 / torch.pow(torch.tensor(10000.0), exponent)
    return torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None, :]


def apply_rope(x, cos, sin):
    """Rotate the pairs (2i, 2i+1) of every head. x: (batch, time, heads, head_size); cos, sin: (time, head_size/2)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        d, kv, h = config.dim, config.kv_dim, config.hidden_dim
        self.rms_att, self.rms_ffn = RMSNorm(d), RMSNorm(d)
        # (out, in) weights, registered in this order (the seeded initialisation follows it)
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, kv, bias=False)
        self.wv = nn.Linear(d, kv, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.w1 = nn.Linear(d, h, bias=False)
        self.w2 = nn.Linear(h, d, bias=False)
        self.w3 = nn.Linear(d, h, bias=False)

    def forward(self, x, cos, sin):
        c = self.config
        batch, length, _ = x.shape
        xb = self.rms_att(x)
        q = self.wq(xb).view(batch, length, c.n_heads, c.head_size)
        k = self.wk(xb).view(batch, length, c.n_kv_heads, c.head_size)
        v = self.wv(xb).view(batch, length, c.n_kv_heads, c.head_size)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        group = c.n_heads // c.n_kv_heads  # query head h uses kv head h // group
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  is_causal=True)
        x = x + self.wo(attended.transpose(1, 2).reshape(batch, length, c.dim))
        xb = self.rms_ffn(x)
        return x + self.w2(F.silu(self.w1(xb)) * self.w3(xb))


class TinyLlama(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.rms_final = RMSNorm(config.dim)
        angles = rope_angles(config, config.seq_len)
        self.register_buffer("cos", torch.cos(angles), persistent=False)
        self.register_buffer("sin", torch.sin(angles), persistent=False)
        self._init_weights()

    def _init_weights(self):
        for name, parameter in self.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):  # residual outputs start small
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * self.config.n_layers))
            elif not name.endswith("rms_att.weight") and not name.endswith("rms_ffn.weight") \
                    and name != "rms_final.weight":
                nn.init.normal_(parameter, std=0.02)

    def forward(self, tokens):
        length = tokens.shape[1]
        x = self.tok_embeddings(tokens)
        cos, sin = self.cos[:length], self.sin[:length]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.rms_final(x) @ self.tok_embeddings.weight.T  # shared classifier

    @classmethod
    def from_model(cls, model):
        """The PyTorch model holding the weights of a deploy.checkpoint.Model (e.g. read_model of an export)."""
        net = cls(model.config)
        w = model.weights
        with torch.no_grad():
            net.tok_embeddings.weight.copy_(torch.from_numpy(np.array(w["tok_embeddings"])))
            net.rms_final.weight.copy_(torch.from_numpy(np.array(w["rms_final"])))
            for index, layer in enumerate(net.layers):
                layer.rms_att.weight.copy_(torch.from_numpy(np.array(w["rms_att"][index])))
                layer.rms_ffn.weight.copy_(torch.from_numpy(np.array(w["rms_ffn"][index])))
                for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
                    getattr(layer, name).weight.copy_(torch.from_numpy(np.array(w[name][index])))
        return net.eval()

    def export(self):
        """deploy.checkpoint.Model with the canonical shapes of Config.shapes()."""
        def stack(get):
            return np.stack([get(layer).detach().float().numpy() for layer in self.layers])

        weights = {"tok_embeddings": self.tok_embeddings.weight.detach().float().numpy(),
                   "rms_att": stack(lambda layer: layer.rms_att.weight),
                   "rms_ffn": stack(lambda layer: layer.rms_ffn.weight),
                   "rms_final": self.rms_final.weight.detach().float().numpy()}
        for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
            weights[name] = stack(lambda layer: getattr(layer, name).weight)  # nn.Linear keeps (out, in)
        weights = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in weights.items()}
        return Model(self.config, weights)


# ---------------------------------------------------------------------------------------------------------------------
# data


def encode_stories(encoder, stories):
    """All stories as one token stream, each starting with BOS, and the offset where each starts."""
    chunks = [encoder.encode(story, bos=True) for story in stories]
    starts = np.cumsum([0] + [len(chunk) for chunk in chunks[:-1]])
    return np.concatenate([np.asarray(chunk, np.int16) for chunk in chunks]), starts


class Batches:
    """Windows of length+1 tokens that start at a story's BOS (as generation does), drawn with a seeded generator."""

    def __init__(self, tokens, starts, length, seed):
        self.tokens = torch.from_numpy(tokens.astype(np.int64))
        self.starts = torch.from_numpy(starts[starts + length + 1 <= len(tokens)].astype(np.int64))
        self.length = length
        self.generator = torch.Generator().manual_seed(seed)

    def get(self, size):
        picks = self.starts[torch.randint(len(self.starts), (size,), generator=self.generator)]
        windows = torch.stack([self.tokens[start:start + self.length + 1] for start in picks.tolist()])
        return windows[:, :-1], windows[:, 1:]


def learning_rate(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model, batches, count, size):
    model.eval()
    losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
              for x, y in (batches.get(size) for _ in range(count))]
    model.train()
    return sum(losses) / len(losses)


@torch.no_grad()
def greedy(model, tokens, steps):
    """Greedy continuation with the PyTorch model (no cache: fine for a few hundred tokens)."""
    model.eval()
    tokens = list(tokens)
    while len(tokens) < steps:
        nxt = int(model(torch.tensor([tokens]))[0, -1].argmax())
        if nxt == BOS:
            break
        tokens.append(nxt)
    return tokens


# ---------------------------------------------------------------------------------------------------------------------
# checks against the NumPy reference


def logit_difference(model, path, tokens):
    """Max |logit| difference between the PyTorch model and deploy.reference on the exported file, over `tokens`."""
    from deploy.reference import Transformer

    reference = Transformer(read_model(path))
    ours = model.eval()(torch.tensor([tokens]))[0].detach().numpy()
    theirs = np.stack([reference.forward(token, pos) for pos, token in enumerate(tokens)])
    return float(np.abs(ours - theirs).max()), float(np.abs(theirs).max())


def train(args):
    from training.corpus import generate_stories
    from training.tokenizer import Encoder, build as build_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    begun = time.time()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(args.tokenizer_out, stories=5000, seed=args.corpus_seed)
    encoder = Encoder(tokenizer)
    train_tokens, train_starts = encode_stories(encoder, generate_stories(args.stories, args.corpus_seed))
    val_tokens, val_starts = encode_stories(encoder, generate_stories(1000, args.corpus_seed + 1))
    print(f"corpus: {args.stories} stories, {len(train_tokens):,} tokens "
          f"({len(train_tokens) / args.stories:.0f} per story); prepared in {time.time() - begun:.0f} s", flush=True)

    model = TinyLlama(SHAPE)
    count = sum(parameter.numel() for parameter in model.parameters())
    print(f"model: {count:,} parameters (checkpoint's count {SHAPE.parameter_count():,})", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    batches = Batches(train_tokens, train_starts, args.seq_len, args.seed)
    val_batches = Batches(val_tokens, val_starts, args.seq_len, args.seed + 1)

    started, smoothed = time.time(), None
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        x, y = batches.get(args.batch_size)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        if step % args.log_every == 0 or step == args.steps - 1:
            elapsed = time.time() - started
            eta = elapsed / (step + 1) * (args.steps - step - 1)
            print(f"step {step:5d}/{args.steps}  loss {loss.item():.4f}  (smoothed {smoothed:.4f})  "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}  {elapsed:5.0f} s elapsed, ~{eta:.0f} s left", flush=True)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            print(f"step {step + 1:5d}  validation loss {evaluate(model, val_batches, 4, args.batch_size):.4f}",
                  flush=True)
    train_seconds = time.time() - started

    write_model(model.export(), args.out, version=0, byteorder="little")
    prompt = encoder.encode("Once upon a time", bos=True)
    difference, scale = logit_difference(model, args.out, prompt)
    print(f"export: {args.out}; max |logit difference| against deploy.reference over {len(prompt)} positions: "
          f"{difference:.2e} (logits up to {scale:.1f})", flush=True)
    if difference >= 1e-4:
        raise SystemExit("the exported model does not compute what the PyTorch model computes")
    sample = greedy(model, prompt, 160)
    text = b"".join(tokenizer.pieces[token] for token in sample[1:]).decode("utf-8", "replace")
    print(f"greedy (PyTorch): {text.strip()}")
    print(f"training: {train_seconds / 60:.1f} min for {args.steps} steps; total {(time.time() - begun) / 60:.1f} min")


def main():
    parser = argparse.ArgumentParser(description="Train the tiny stories260K-shaped model on the grammar corpus.")
    parser.add_argument("--out", default=str(ROOT / "models" / "tiny260k.bin"))
    parser.add_argument("--tokenizer-out", default=str(ROOT / "models" / "tiny260k-tok.bin"))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256, help="training window (the checkpoint says 512)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--stories", type=int, default=40000)
    parser.add_argument("--corpus-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=500)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
