#!/usr/bin/env python3
"""Host threads, idle and under load (a benchmark, not a timed test): tok/s of the host build with 1 and 2 threads,
on idle cores and while a busy loop (`python3 -c 'while 1: pass'`) pinned to the last core holds it, median of --runs
runs, interleaved.

The model is random and stories15M-shaped (fp32, and int8 with --int8). Extra programs to compare (e.g. an older
build) can be given with --program; each runs the same way. Figures: docs/benchmarks.md ("Threads").

Usage: .venv/bin/python scripts/bench_threads.py [--runs 5] [--steps 256] [--int8] [--program PATH ...]
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.build import build  # noqa: E402
from deploy.plan import make_plan  # noqa: E402
from deploy.profile import ROOT, load_profile  # noqa: E402
from deploy.runner import tokens_per_second  # noqa: E402
from deploy.synth import SHAPES, synthetic_tokenizer, write_random_model  # noqa: E402
from deploy.tokenizer import write_tokenizer  # noqa: E402

WORK = ROOT / "build" / "bench-threads"
BUSY_LOOP = [sys.executable, "-c", "while 1: pass"]


def pin_to_last_core():
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def inputs(int8):
    WORK.mkdir(parents=True, exist_ok=True)
    model, tokenizer = WORK / ("s15-q.bin" if int8 else "s15.bin"), WORK / "tok32000.bin"
    if not model.exists():
        write_random_model(model, SHAPES["stories15M"], version=2 if int8 else 0)
    if not tokenizer.exists():
        write_tokenizer(synthetic_tokenizer(32000), tokenizer)
    return model, tokenizer


def tok_s(program, model, tokenizer, steps, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([str(program), str(model), "-z", str(tokenizer), "-n", str(steps), "-t", "0"],
                          capture_output=True, text=True, env=env, check=True)
    return tokens_per_second(done.stderr)


def measure(programs, model, tokenizer, steps, runs):
    samples = {}
    for _ in range(runs):
        for loaded in (False, True):
            competitor = subprocess.Popen(BUSY_LOOP, preexec_fn=pin_to_last_core) if loaded else None
            try:
                for name, program in programs.items():
                    for threads in (1, 2):
                        samples.setdefault((name, loaded, threads), []).append(
                            tok_s(program, model, tokenizer, steps, threads))
            finally:
                if competitor:
                    competitor.kill()
                    competitor.wait()
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--program", action="append", default=[], help="another build to compare")
    args = parser.parse_args()
    plan = make_plan(load_profile("host"))
    build(plan)
    programs = {"host": plan.program, **{path: Path(path) for path in args.program}}
    model, tokenizer = inputs(args.int8)
    samples = measure(programs, model, tokenizer, args.steps, args.runs)
    print(f"stories15M-shaped {'int8' if args.int8 else 'fp32'}, -n {args.steps}, median of {args.runs} "
          f"(min to max), tok/s; loaded = a busy loop holds one of {os.cpu_count()} cores")
    print(f"{'program':<40} {'cores':<7} {'1 thread':>22} {'2 threads':>22} {'2 / 1':>6}")
    for name in programs:
        for loaded in (False, True):
            cells = []
            for threads in (1, 2):
                values = samples[(name, loaded, threads)]
                cells.append((statistics.median(values), min(values), max(values)))
            text = [f"{m:7.0f} ({lo:.0f} to {hi:.0f})" for m, lo, hi in cells]
            print(f"{str(name):<40} {'loaded' if loaded else 'idle':<7} {text[0]:>22} {text[1]:>22} "
                  f"{cells[1][0] / cells[0][0]:6.2f}")


if __name__ == "__main__":
    main()
