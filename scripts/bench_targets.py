#!/usr/bin/env python3
"""Benchmarks for the ports, each a ratio measured in one run (not a timed test):

1. Every target under its emulator (qemu-user, Wine): the default (SIMD) build against the exact build, tok/s on a
   random stories260K-shaped model. Emulation is not hardware: qemu runs vector instructions through helpers, so these
   ratios say that the builds run, not how fast a real Pentium II, G4 or Pi would be.
2. The Pentium II stand-in (p2-linux: the win98-p2 port built for i686 Linux, -march=pentium2, x87), run natively
   here on a random stories15M-shaped model: the port's kernel against a plain scalar build of the same template
   compiled identically, as a tok/s ratio (median of N) and as instruction counts (valgrind callgrind).

Usage: .venv/bin/python scripts/bench_targets.py [--runs 5] [--skip-emulated] [--skip-callgrind]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deploy.build import build  # noqa: E402
from deploy.convert import model_for_target  # noqa: E402
from deploy.plan import make_plan, toolchain_present  # noqa: E402
from deploy.profile import load_profile  # noqa: E402
from deploy.runner import prepare_emulator, run_command, run_env, tokens_per_second  # noqa: E402
from deploy.synth import SHAPES, synthetic_tokenizer, write_random_model  # noqa: E402
from deploy.tokenizer import write_tokenizer  # noqa: E402

console = Console()
EMULATED = ["win98-p2", "p2-linux", "powerbook-g4", "rpi4", "rpi-zero", "pixel6"]


def tok_s(plan, model, tokenizer, steps, native=False):
    args = [model, "-z", tokenizer, "-n", steps, "-t", 0]
    command = [str(plan.program), *map(str, args)] if native else run_command(plan, args)
    done = subprocess.run(command, capture_output=True, env=run_env(plan), check=True)
    return tokens_per_second(done.stderr)


def median_tok_s(plans, model, tokenizer, steps, runs, work, native=False):
    """Median tok/s of each plan, the plans' runs interleaved so drift hits all alike."""
    files = []
    for plan in plans:
        prepare_emulator(plan)
        files.append(model_for_target(plan.profile, model, tokenizer, work / plan.out_dir.name))
    samples = [[] for _ in plans]
    for _ in range(runs):
        for index, plan in enumerate(plans):
            samples[index].append(tok_s(plan, *files[index], steps, native))
    return [statistics.median(values) for values in samples]


def bench_emulated(work, runs):
    model, tokenizer = work / "s260.bin", work / "tok512.bin"
    write_random_model(model, SHAPES["stories260K"], seed=1)
    write_tokenizer(synthetic_tokenizer(512), tokenizer)
    table = Table(title=f"under emulation (not hardware): default vs exact build, stories260K shape, median of {runs}")
    for column in ("target", "emulator", "kernel", "default tok/s", "exact tok/s", "ratio"):
        table.add_column(column)
    for target in EMULATED:
        profile = load_profile(target)
        if not toolchain_present(profile.toolchains[0]) or not shutil.which(profile.emulator[0]):
            table.add_row(target, " ".join(profile.emulator), "-", "not installed", "", "")
            continue
        plans = [make_plan(profile, build_dir=work / "build"), make_plan(profile, exact=True, build_dir=work / "build")]
        with console.status(f"{target}: building and running"):
            for plan in plans:
                build(plan)
            speeds = median_tok_s(plans, model, tokenizer, 256, runs, work)
        fast, exact = speeds
        table.add_row(target, " ".join(profile.emulator), plans[0].port["kernel"], f"{fast:.1f}", f"{exact:.1f}",
                      f"{fast / exact:.2f}")
    console.print(table)


def instructions(plan, model, tokenizer, steps, work):
    out = work / f"callgrind.{plan.out_dir.name}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(plan.program), str(model),
                    "-z", str(tokenizer), "-n", str(steps), "-t", "0"], capture_output=True, check=True)
    summary = next(line for line in out.read_text().splitlines() if line.startswith(("summary:", "totals:")))
    return int(summary.split()[1])


def bench_pentium2(work, runs, callgrind):
    model, tokenizer = work / "s15.bin", work / "tok32000.bin"
    with console.status("writing a random stories15M-shaped model"):
        write_random_model(model, SHAPES["stories15M"], seed=1)
        write_tokenizer(synthetic_tokenizer(32000), tokenizer)
    profile = load_profile("p2-linux")
    port = make_plan(profile, build_dir=work / "build")
    plain = make_plan(profile, build_dir=work / "build", variant={"kernel": "scalar"})
    for plan in (port, plain):
        build(plan)
    with console.status("timing the Pentium II stand-in natively"):
        speeds = median_tok_s([port, plain], model, tokenizer, 128, runs, work, native=True)
    counts = []
    table = Table(title=f"Pentium II stand-in, native i686 x87, stories15M shape, median of {runs}")
    for column in ("build", "kernel", "flags", "tok/s", "instructions (32 tokens)"):
        table.add_column(column)
    for index, plan in enumerate((port, plain)):
        if callgrind and shutil.which("valgrind"):
            with console.status(f"callgrind: {plan.out_dir.name}"):
                counts.append(instructions(plan, model, tokenizer, 32, work))
        table.add_row(plan.out_dir.name, plan.port["kernel"], " ".join(plan.cflags), f"{speeds[index]:.1f}",
                      f"{counts[index]:,}" if counts else "-")
    console.print(table)
    console.print(f"[bold]tok/s ratio port / plain scalar: {speeds[0] / speeds[1]:.2f}[/]")
    if counts:
        console.print(f"[bold]instruction ratio plain / port: {counts[1] / counts[0]:.2f}[/]")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-emulated", action="store_true")
    parser.add_argument("--skip-callgrind", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        if not args.skip_emulated:
            bench_emulated(work, args.runs)
        bench_pentium2(work, args.runs, not args.skip_callgrind)


if __name__ == "__main__":
    main()
