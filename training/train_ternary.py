"""Quantization-aware training of the ternary (BitNet b1.58) tiny model, exported as a v3 checkpoint.

The fp32 model of train.py (models/tiny260k.bin) is the starting point; every layer matrix becomes a `BitLinear`
whose forward pass is what the ports compute: weights as trits times their absmean, the input quantized per token to
int8 (absmax). The rounding has no gradient, so the straight-through estimator passes the gradient of the quantized
weights and activations to the latent fp32 ones. Norms, embeddings and the (shared) classifier stay fp32, as in v3.

    python3 -m training.train_ternary              # models/tiny260k-ternary.bin, 10-35 minutes on 2 shared cores
"""

import argparse
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

from deploy.checkpoint import TERNARY, read_model, read_ternary, write_model  # noqa: E402
from deploy.tokenizer import read_tokenizer  # noqa: E402
from training.train import Batches, TinyLlama, encode_stories, evaluate, greedy, learning_rate  # noqa: E402


def straight_through(exact, quantized):
    """`quantized` in the forward pass, the gradient of `exact` in the backward pass."""
    return exact + (quantized - exact).detach()


class BitLinear(nn.Linear):
    """nn.Linear with ternary weights (absmean scale) and int8 per-token activations (absmax), as run.c's v3 path."""

    def forward(self, x):
        w = self.weight
        scale = w.abs().mean().clamp(min=1e-8)
        w_q = straight_through(w, (w / scale).round().clamp(-1, 1) * scale)
        x_scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127.0
        x_q = straight_through(x, (x / x_scale).round().clamp(-127, 127) * x_scale)
        return F.linear(x_q, w_q)


def make_ternary(model):
    """Swap every layer matrix of a TinyLlama for a BitLinear holding the same latent weights."""
    for layer in model.layers:
        for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
            old = getattr(layer, name)
            new = BitLinear(old.in_features, old.out_features, bias=False)
            with torch.no_grad():
                new.weight.copy_(old.weight)
            setattr(layer, name, new)
    return model


def train(args):
    from training.corpus import generate_stories
    from training.tokenizer import Encoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    begun = time.time()
    tokenizer = read_tokenizer(args.tokenizer, 512)
    encoder = Encoder(tokenizer)
    train_tokens, train_starts = encode_stories(encoder, generate_stories(args.stories, args.corpus_seed))
    val_tokens, val_starts = encode_stories(encoder, generate_stories(1000, args.corpus_seed + 1))
    model = make_ternary(TinyLlama.from_model(read_model(args.init)).train())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    batches = Batches(train_tokens, train_starts, args.seq_len, args.seed)
    val_batches = Batches(val_tokens, val_starts, args.seq_len, args.seed + 1)
    print(f"ternary QAT from {args.init}: validation loss at the start {evaluate(model, val_batches, 4, 32):.4f}",
          flush=True)

    started = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        x, y = batches.get(args.batch_size)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            elapsed = time.time() - started
            print(f"step {step:5d}/{args.steps}  loss {loss.item():.4f}  {elapsed:5.0f} s elapsed, "
                  f"~{elapsed / (step + 1) * (args.steps - step - 1):.0f} s left", flush=True)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            print(f"step {step + 1:5d}  validation loss {evaluate(model, val_batches, 4, 32):.4f}", flush=True)
    train_seconds = time.time() - started

    write_model(model.export(), args.out, version=TERNARY, byteorder="little")
    check_export(model, args.out, encoder.encode("Once upon a time", bos=True))
    sample = greedy(model, encoder.encode("Once upon a time", bos=True), 200)
    print("greedy (PyTorch):", b"".join(tokenizer.pieces[t] for t in sample[1:]).decode("utf-8", "replace").strip())
    print(f"training: {train_seconds / 60:.1f} min for {args.steps} steps; total {(time.time() - begun) / 60:.1f} min")


def check_export(model, path, tokens):
    """The exported trits are the ones the PyTorch forward used (same absmean rounding), and the NumPy reference on
    the file agrees with the PyTorch model within the activation rounding's tolerance."""
    from deploy.reference import TernaryTransformer

    header, tensors = read_ternary(path)
    for index, layer in enumerate(model.layers):
        for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
            w = getattr(layer, name).weight.detach()
            ours = (w / w.abs().mean()).round().clamp(-1, 1).to(torch.int8).numpy()
            flipped = int((ours != tensors[name][0][index]).sum())
            if flipped > 2:
                raise SystemExit(f"{name} of layer {index}: {flipped} trits differ between PyTorch and the export")
    reference = TernaryTransformer(header, tensors)
    theirs = np.stack([reference.forward(token, pos) for pos, token in enumerate(tokens)])
    with torch.no_grad():
        ours = model.eval()(torch.tensor([tokens]))[0].numpy()
    print(f"export: {path}; max |logit difference| against deploy.reference: {np.abs(ours - theirs).max():.2e} "
          f"(logits up to {np.abs(theirs).max():.1f})", flush=True)


def main():
    parser = argparse.ArgumentParser(description="Quantization-aware training of the ternary tiny model.")
    parser.add_argument("--init", default=str(ROOT / "models" / "tiny260k.bin"), help="fp32 model to start from")
    parser.add_argument("--tokenizer", default=str(ROOT / "models" / "tiny260k-tok.bin"))
    parser.add_argument("--out", default=str(ROOT / "models" / "tiny260k-ternary.bin"))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--stories", type=int, default=40000)
    parser.add_argument("--corpus-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=200)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
