#!/usr/bin/env python3
"""The project against its peers in one run: one table of ratios (a benchmark, not a timed test).

Builds the peers from ../shared/peers (never copied into the project) into build/peers/ with their own build lines
(peers/README.md), and compares on random stories15M-shaped models:
- host, native: our fp32 build vs upstream run.c built as `make run` (-O3), `make runfast` (-Ofast) and `make runomp`
  (-Ofast -fopenmp -march=native, all cores); our int8 build vs runq.c -O3. Ratio = their time / ours per token
  (above 1: ours is faster). Median of --runs runs, interleaved.
- Pentium II (p2-linux stand-in): callgrind instructions per token and the P6 cost model's tok/s (deploy.p6_model)
  of our build vs upstream run.c (-O3 -march=pentium2) and llama98.c (-O0, EXO's Borland stand-in).
- G4 (powerbook-g4): guest instructions per token under qemu-ppc -cpu g4 and the machine model's tok/s of our build
  vs upstream run.c (-O3 -mcpu=7450 -maltivec) and ullm (-O2, AltiVec).
Counts come from deploy/data/counts.json where it has them, otherwise they are made here (a few minutes).

Usage: .venv/bin/python scripts/bench_peers.py [--runs 3] [--steps 128] [--skip-host] [--skip-counts]
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deploy import counting, machine_model  # noqa: E402
from deploy.build import build  # noqa: E402
from deploy.checkpoint import default_group_size  # noqa: E402
from deploy.models import CATALOG  # noqa: E402
from deploy.plan import make_plan  # noqa: E402
from deploy.profile import ROOT, load_profile  # noqa: E402
from deploy.runner import tokens_per_second  # noqa: E402
from deploy.synth import SHAPES, synthetic_tokenizer, write_random_model  # noqa: E402
from deploy.tokenizer import write_tokenizer  # noqa: E402

console = Console()
PEERS_BUILD = ROOT / "build" / "peers"
UPSTREAM = counting.PEERS / "llama2.c"
HOST_PEERS = {  # name: (source, flags), as upstream's Makefile builds them
    "run": ("run.c", ["-O3"]), "runfast": ("run.c", ["-Ofast"]),
    "runomp": ("run.c", ["-Ofast", "-fopenmp", "-march=native"]), "runq": ("runq.c", ["-O3"]),
}


def build_host_peers():
    PEERS_BUILD.mkdir(parents=True, exist_ok=True)
    programs = {}
    for name, (source, flags) in HOST_PEERS.items():
        out = PEERS_BUILD / name
        subprocess.run(["gcc", *flags, "-o", out, UPSTREAM / source, "-lm"], check=True, capture_output=True)
        programs[name] = out
    return programs


def tok_s(program, model, tokenizer, steps, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([program, model, "-z", tokenizer, "-n", str(steps), "-t", "0"], capture_output=True,
                          text=True, env=env, check=True)
    return tokens_per_second(done.stderr)


def bench_host(runs, steps, rows):
    work = PEERS_BUILD / "models"
    work.mkdir(parents=True, exist_ok=True)
    shape = SHAPES["stories15M"]
    fp32, int8, tokenizer = work / "s15.bin", work / "s15-q.bin", work / "tok32000.bin"
    if not fp32.exists():
        write_random_model(fp32, shape, seed=1)
        write_random_model(int8, shape, version=2, seed=1, group_size=default_group_size(shape))
        write_tokenizer(synthetic_tokenizer(32000), tokenizer)
    peers = build_host_peers()
    plan = make_plan(load_profile("host"))
    build(plan)
    cores = os.cpu_count() or 1
    pairs = [("host fp32", "run", fp32, 1), ("host fp32", "runfast", fp32, 1), ("host fp32", "runomp", fp32, cores),
             ("host int8", "runq", int8, 1)]
    samples = {}
    for _ in range(runs):
        for what, name, model, threads in pairs:
            samples.setdefault(("ours", model), []).append(tok_s(plan.program, model, tokenizer, steps, 1))
            samples.setdefault((name, model), []).append(tok_s(peers[name], model, tokenizer, steps, threads))
    for what, name, model, threads in pairs:
        ours, theirs = (statistics.median(samples[key]) for key in (("ours", model), (name, model)))
        rows.append((what, f"upstream {name}" + (f" ({threads} threads)" if threads > 1 else ""),
                     "tok/s, native", f"{ours:.1f}", f"{theirs:.1f}", f"{ours / theirs:.2f}"))


def counted(machine_key, program, model, version, counts, work):
    key = machine_model.entry_key(machine_key, program.name, model, version)
    entry = next((e for e in counts["entries"] if e["key"] == key and e["fingerprint"] == program.fingerprint),
                 None)
    if entry is None:
        with console.status(f"counting {program.name} on {model}"):
            entry = {"window": min(counting.WINDOW, SHAPES[model].seq_len),
                     **counting.count(machine_model.MACHINES[machine_key], program, model, version, work)}
    return entry


def bench_counts(rows):
    counts = machine_model.load_counts()
    profiles = {"powerbook-g4": load_profile("powerbook-g4")}
    fraction = machine_model.bandwidth_fraction(counts, profiles)
    config = CATALOG["stories15M"].shape
    with counting.scratch() as work:
        for machine_key, target, peers in (("pentium2", "p2-linux", ["upstream run.c P2", "llama98 -O0"]),
                                           ("g4", "powerbook-g4", ["upstream run.c G4", "ullm altivec"])):
            ours_program = counting.ours(target, work)
            ours = counted(machine_key, ours_program, "stories15M", 0, counts, work)
            ours_tok_s = machine_model.predict_tok_s(ours, machine_key, config, 0, profiles.get(target), fraction)
            how = "callgrind" if machine_key == "pentium2" else "qemu-ppc guest"
            for name in peers:
                theirs = counted(machine_key, counting.peer(name, work), "stories15M", 0, counts, work)
                theirs_tok_s = machine_model.predict_tok_s(theirs, machine_key, config, 0, profiles.get(target),
                                                           fraction)
                ratio = theirs["per_token"]["instructions"] / ours["per_token"]["instructions"]
                rows.append((f"{target} fp32", name, f"{how} instructions/token",
                             f"{ours['per_token']['instructions'] / 1e6:.1f} M",
                             f"{theirs['per_token']['instructions'] / 1e6:.1f} M", f"{ratio:.2f}"))
                rows.append((f"{target} fp32", name, "machine model tok/s", f"{ours_tok_s:.3g}",
                             f"{theirs_tok_s:.3g}", f"{ours_tok_s / theirs_tok_s:.2f}"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--skip-host", action="store_true")
    parser.add_argument("--skip-counts", action="store_true")
    args = parser.parse_args()
    rows = []
    if not args.skip_host:
        bench_host(args.runs, args.steps, rows)
    if not args.skip_counts:
        bench_counts(rows)
    table = Table(title="the project vs its peers, stories15M shape (ratio above 1: the project is faster)")
    for column in ("ours", "peer", "measure", "ours", "peer", "ratio"):
        table.add_column(column, justify="right" if column in ("ratio",) else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    print("\n| ours | peer | measure | ours | peer | ratio (above 1: ours faster) |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
