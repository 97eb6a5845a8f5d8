#!/usr/bin/env python3
"""Streaming on real limits (issue 11): a Llama 2 7B-shaped int8 checkpoint (about 7 GB, synthetic, under
build/bench/) runs a few tokens on this machine under `-b 1024`, its tok/s set against the disk's read bandwidth
measured the same way (dd in 64 MB reads after dropping the page cache, before and after each run: the
VM's disk is shared and varies); and the projection for EXO's 128 MB Pentium II.

Run as root (dropping the page cache needs it):  .venv/bin/python scripts/bench_streaming.py [--runs 3] [--steps 5]
Figures: docs/streaming.md.
"""

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.build import build  # noqa: E402
from deploy.checkpoint import Config, Header, read_header  # noqa: E402
from deploy.models import LLAMA2_7B  # noqa: E402
from deploy.plan import make_plan  # noqa: E402
from deploy.profile import load_profile  # noqa: E402
from deploy.runner import run_program, tokens_per_second  # noqa: E402
from deploy.stream import predict_streaming, stream_plan  # noqa: E402
from deploy.synth import SHAPES, synthetic_tokenizer, write_large_model  # noqa: E402
from deploy.tokenizer import write_tokenizer  # noqa: E402

BENCH = ROOT / "build" / "bench"
# Llama 2 7B's weights; a 256-token context keeps its KV cache (256 MB) inside the 1 GB budget with two layer buffers
SHAPE_7B = dataclasses.replace(LLAMA2_7B, seq_len=256)
LLAMA32_1B = Config(2048, 8192, 16, 32, 8, 128256, 256)  # Llama 3.2 1B (tied embeddings), a short context


def drop_page_cache():
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def sectors_read(path):
    """Sectors read so far by the block device holding `path` (/sys/dev/block/M:m/stat, field 3)."""
    device = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat").read_text().split()
    return int(stat[2])


def dd_mb_s(path):
    drop_page_cache()
    # 64 MB reads, as large as the program's (a layer's tensors are read whole)
    done = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=64M"], capture_output=True, text=True, check=True)
    match = re.search(r"copied, ([0-9.]+) s", done.stderr)
    return Path(path).stat().st_size / float(match.group(1)) / 1e6


def ensure_tokenizer():
    BENCH.mkdir(parents=True, exist_ok=True)
    tokenizer = BENCH / "tok32k.bin"
    if not tokenizer.exists():
        write_tokenizer(synthetic_tokenizer(SHAPE_7B.vocab_size), tokenizer)
    return tokenizer


def ensure_7b():
    model = BENCH / "llama2-7b-int8.bin"
    if not model.exists():
        print(f"writing {model} (about 7 GB) ...", flush=True)
        write_large_model(model, SHAPE_7B, version=2)
    return model


def pentium2(tokenizer, steps):
    """stories42M- and stories110M-shaped fp32 checkpoints (167 and 438 MB) on the Pentium II port under qemu-i386
    -cpu pentium2, streamed within its 92 MB (the exact build): they print and write what the host's exact in-memory
    build does."""
    host = make_plan(load_profile("host"), exact=True)
    p2 = make_plan(load_profile("p2-linux"), exact=True, stream=True)
    build(host)
    build(p2)
    for name in ("stories42M", "stories110M"):
        model = BENCH / f"{name}-fp32.bin"
        if not model.exists():
            write_large_model(model, SHAPES[name], version=0)
        outputs = []
        for plan in (host, p2):
            logits = BENCH / f"{name}-{plan.target}.f32"
            done = run_program(plan, [model, "-z", tokenizer, "-n", steps, "-t", 0, "-i", "the", "-l", logits],
                               capture=True, timeout=3600)
            if done.returncode != 0:
                raise SystemExit(f"{plan.target}: {done.stderr.decode(errors='replace').strip()}")
            outputs.append((done.stdout, logits.read_bytes(), tokens_per_second(done.stderr)))
        same = outputs[0][:2] == outputs[1][:2]
        print(f"{name} fp32 ({model.stat().st_size / 1e6:.0f} MB) on p2-linux (qemu-i386 -cpu pentium2, streamed "
              f"under its default -b {p2.port['stream_budget_mb']}): {outputs[1][2]:.3f} tok/s emulated; "
              f"{'prints and writes what the host prints' if same else 'DIFFERS from the host'}", flush=True)


def whole_pentium2(tokenizer, steps):
    """The same checkpoints on the whole emulated Pentium II (p2-vm: qemu-system-i386, 128 MB, FAT32 IDE disk): staged,
    fetched by the machine's FTP client, run from its disk by the streaming build (exact), compared with the host."""
    from deploy import vm
    from deploy.inventory import load_inventory
    from deploy.stage import stage_files

    host = make_plan(load_profile("host"), exact=True)
    p2 = make_plan(load_profile("p2-linux"), exact=True, stream=True)
    build(host)
    build(p2)
    machine, folder = load_inventory().hosts["p2-vm"], BENCH / "p2vm"
    for name in ("stories42M", "stories110M"):
        model = BENCH / f"{name}-fp32.bin"
        if not model.exists():
            write_large_model(model, SHAPES[name], version=0)
        args = ["-n", str(steps), "-t", "0", "-i", "the"]
        here = run_program(host, [model, "-z", tokenizer, *args], capture=True, timeout=3600)
        stage = stage_files(machine.name, {"run": p2.program, "model.bin": model, "tokenizer.bin": tokenizer},
                            folder / "stage")
        start = time.monotonic()
        vm.deliver(machine, p2.profile, stage, folder / "machine", lambda what: None)
        delivered = time.monotonic() - start
        done = vm.run(machine, p2.profile, folder / "machine", ["./run", "model.bin", "-z", "tokenizer.bin", *args],
                      timeout=7200)
        if done.returncode != 0:
            raise SystemExit(f"p2-vm: {done.stderr.strip()}")
        same = done.stdout.replace("\r\n", "\n") == here.stdout.decode()
        real = predict_streaming(p2.profile, read_header(model))
        print(f"{name} fp32 ({model.stat().st_size / 1e6:.0f} MB) on p2-vm (delivered in {delivered:.0f} s, run "
              f"from its FAT32 disk, default -b {p2.port['stream_budget_mb']}): {tokens_per_second(done.stderr):.3f} "
              f"tok/s emulated; {'prints what the host prints' if same else 'DIFFERS from the host'}: "
              f"{done.stdout.strip()!r}; predicted on the real Pentium II: {real.tok_s:.3f} tok/s "
              f"({real.describe()})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--budget", type=int, default=1024, help="the program's -b, MB")
    parser.add_argument("--p2", action="store_true", help="only the Pentium II port under qemu-i386 (stories42M, "
                                                          "stories110M)")
    parser.add_argument("--p2vm", action="store_true", help="only the whole emulated Pentium II (p2-vm)")
    args = parser.parse_args()
    tokenizer = ensure_tokenizer()
    if args.p2:
        return pentium2(tokenizer, args.steps)
    if args.p2vm:
        return whole_pentium2(tokenizer, args.steps)
    model = ensure_7b()
    plan = make_plan(load_profile("host"), stream=True)
    build(plan)
    header = read_header(model)
    layout = stream_plan(header, args.budget << 20, plan.port["readahead"])
    per_token = layout.bytes_per_token
    print(f"{model.name}: {model.stat().st_size / 1e9:.2f} GB; under -b {args.budget}: "
          f"{per_token / 1e9:.3f} GB read per token (classifier {'kept' if layout.classifier_resident else 'read'})")
    ratios = []
    for run in range(args.runs):
        before_dd = dd_mb_s(model)
        drop_page_cache()
        before, start = sectors_read(model), time.monotonic()
        done = subprocess.run([str(plan.program), str(model), "-z", str(tokenizer), "-b", str(args.budget),
                               "-n", str(args.steps), "-t", "0", "-i", "the"], capture_output=True, check=True)
        seconds, read = time.monotonic() - start, (sectors_read(model) - before) * 512
        disk = (before_dd + dd_mb_s(model)) / 2  # the disk (a VM's, shared) varies: dd before and after the run
        tok_s, limit = tokens_per_second(done.stderr), disk * 1e6 / per_token
        ratios.append(tok_s / limit)
        print(f"run {run + 1}: dd {disk:,.0f} MB/s (mean of before and after) -> limit {limit:.3f} tok/s; achieved {tok_s:.3f} tok/s "
              f"= {tok_s / limit:.2f} of the limit; disk read {read / 1e9:.1f} GB in {seconds:.1f} s "
              f"({args.steps} steps)", flush=True)
    print(f"achieved / limit: median {sorted(ratios)[len(ratios) // 2]:.2f}")
    p2 = load_profile("win98-p2")
    for version, group in ((2, 64), (0, 0)):
        projected = predict_streaming(p2, Header(version, "little", LLAMA32_1B, group))
        print(f"EXO's 128 MB Pentium II, Llama 3.2 1B {'int8' if version == 2 else 'fp32'}: "
              f"{projected.tok_s:.4f} tok/s ({projected.describe()}); EXO estimated 0.0093")


if __name__ == "__main__":
    main()
