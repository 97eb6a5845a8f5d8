#!/usr/bin/env python3
"""Benchmarks for the foundation, each a ratio measured in one run (not a timed test):

1. tok/s of the host build against a plain scalar build of the same template (same compiler, same -O3), on a
   random-weights model of stories15M's shape; median of N runs each, interleaved.
2. the byte-order converter's throughput on a ~1 GiB checkpoint against `cp` of the same file, and its peak memory
   on a small and a large file (it should stay flat).

Usage: .venv/bin/python scripts/bench_foundation.py [--runs 5] [--steps 256] [--gib 1.0]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deploy.build import build  # noqa: E402
from deploy.checkpoint import Config, Header, expected_size, pack_header  # noqa: E402
from deploy.plan import make_plan  # noqa: E402
from deploy.profile import load_profile  # noqa: E402
from deploy.runner import tokens_per_second  # noqa: E402
from deploy.synth import SHAPES, synthetic_tokenizer, write_random_model  # noqa: E402
from deploy.tokenizer import write_tokenizer  # noqa: E402

console = Console()


def measure(binary, model, tokenizer, steps):
    done = subprocess.run([str(binary), str(model), "-z", str(tokenizer), "-n", str(steps), "-t", "0"],
                          capture_output=True, check=True)
    return tokens_per_second(done.stderr)


def bench_host(work, runs, steps):
    model, tokenizer = work / "stories15M-random.bin", work / "tok32000.bin"
    with console.status("writing a random stories15M-shaped model"):
        write_random_model(model, SHAPES["stories15M"], seed=1)
        write_tokenizer(synthetic_tokenizer(32000), tokenizer)
    profile = load_profile("host")
    fast = make_plan(profile, build_dir=work / "build")
    scalar = make_plan(profile, exact=True, build_dir=work / "build")
    for plan in (fast, scalar):
        build(plan, force=True)
    outputs = {subprocess.run([str(p.program), str(model), "-z", str(tokenizer), "-n", "64", "-t", "0"],
                              capture_output=True).stdout for p in (fast, scalar)}
    samples = {"host": [], "scalar": []}
    for run in range(runs):
        console.print(f"run {run + 1}/{runs}", end="\r")
        samples["host"].append(measure(fast.program, model, tokenizer, steps))
        samples["scalar"].append(measure(scalar.program, model, tokenizer, steps))
    host, plain = statistics.median(samples["host"]), statistics.median(samples["scalar"])
    table = Table(title=f"host build vs plain scalar build, stories15M shape, {steps} steps, median of {runs}")
    for column in ("build", "kernel", "flags", "median tok/s", "runs"):
        table.add_column(column)
    for name, plan in (("host", fast), ("scalar", scalar)):
        table.add_row(name, plan.port["kernel"], " ".join(plan.cflags), f"{statistics.median(samples[name]):.1f}",
                      " ".join(f"{v:.0f}" for v in samples[name]))
    console.print(table)
    console.print(f"same text from both builds: {len(outputs) == 1}")
    console.print(f"[bold]ratio host / scalar: {host / plain:.2f}[/]")
    return host / plain


def big_checkpoint(path, gib):
    """A v0 header of a shape near `gib` GiB and a body of random bytes (the converter does not read values)."""
    dim, hidden, vocab = 1024, 2816, 4096
    layers = max(1, round((gib * (1 << 30) - 4 * vocab * dim) / (4 * (4 * dim * dim + 3 * dim * hidden))))
    header = Header(0, "little", Config(dim, hidden, layers, 16, 16, vocab, 1024))
    size = expected_size(header)
    block = os.urandom(8 << 20)
    with open(path, "wb") as out:
        out.write(pack_header(header))
        remaining = size - header.size
        while remaining:
            out.write(block[:min(remaining, len(block))])
            remaining -= min(remaining, len(block))
    return size


def timed_child(command):
    """Seconds and peak resident memory (MiB) of one child process."""
    start = time.monotonic()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"{command[0]} failed")
    return time.monotonic() - start, usage.ru_maxrss / 1024


def convert_command(src, dest):
    code = ("import sys; from deploy.byteorder import convert_checkpoint_byteorder as c; "
            "c(sys.argv[1], sys.argv[2], 'big')")
    return [sys.executable, "-c", code, str(src), str(dest)]


def bench_converter(work, gib, runs):
    small, large = work / "small.bin", work / "large.bin"
    with console.status("writing the test checkpoints"):
        small_size = big_checkpoint(small, 1 / 16)
        large_size = big_checkpoint(large, gib)
    env_root = str(Path(__file__).resolve().parent.parent)
    os.chdir(env_root)
    timed_child(["cp", str(large), str(work / "warm.bin")])
    cp_times, conv_times = [], []
    for _ in range(runs):
        cp_times.append(timed_child(["cp", str(large), str(work / "copy.bin")])[0])
        conv_times.append(timed_child(convert_command(large, work / "large-be.bin"))[0])
    _, small_peak = timed_child(convert_command(small, work / "small-be.bin"))
    _, large_peak = timed_child(convert_command(large, work / "large-be.bin"))
    cp_s, conv_s = statistics.median(cp_times), statistics.median(conv_times)
    table = Table(title=f"byte-order conversion vs cp, median of {runs}")
    for column in ("what", "file", "seconds", "MB/s", "peak RSS MiB"):
        table.add_column(column)
    table.add_row("cp", f"{large_size / 2**20:.0f} MiB", f"{cp_s:.2f}", f"{large_size / cp_s / 1e6:.0f}", "")
    table.add_row("convert (incl. sha256)", f"{large_size / 2**20:.0f} MiB", f"{conv_s:.2f}",
                  f"{large_size / conv_s / 1e6:.0f}", f"{large_peak:.0f}")
    table.add_row("convert (incl. sha256)", f"{small_size / 2**20:.0f} MiB", "", "", f"{small_peak:.0f}")
    console.print(table)
    console.print(f"[bold]throughput ratio convert / cp: {cp_s / conv_s:.2f}; peak memory {small_peak:.0f} MiB at "
                  f"{small_size / 2**20:.0f} MiB vs {large_peak:.0f} MiB at {large_size / 2**20:.0f} MiB[/]")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--skip-converter", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        bench_host(work, args.runs, args.steps)
        if not args.skip_converter:
            bench_converter(work, args.gib, max(3, args.runs // 2))


if __name__ == "__main__":
    main()
