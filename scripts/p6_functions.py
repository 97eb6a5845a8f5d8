#!/usr/bin/env python3
"""Where a Pentium II build's cycles go: per-token P6-model cycles by function (deploy.p6_model.by_function), from
callgrind runs of 2, 16 and 32 steps on a synthetic model (the method of scripts/count_machines.py, FACTS section 8).

Usage: .venv/bin/python scripts/p6_functions.py [--target p2-linux] [--mode fast] [--model stories260K]
       [--version 0|2] [--peer "llama98 -O0"] [--top 15]
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy import counting, p6_model  # noqa: E402
from deploy.synth import SHAPES  # noqa: E402


def program(args, work):
    if args.peer:
        return counting.peer(args.peer, work)
    from deploy.build import build
    from deploy.plan import make_plan
    from deploy.profile import load_profile

    plan = make_plan(load_profile(args.target), build_dir=Path(work) / "build", mode=args.mode)
    build(plan)
    return counting.Program(plan.target, plan.program, lambda m, t, n: [m, "-z", t, "-n", n, "-t", "0"], "", "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="p2-linux")
    parser.add_argument("--mode", default="fast", choices=["fast", "exact", "upstream"])
    parser.add_argument("--peer", help="a published port instead (deploy.counting.peer name)")
    parser.add_argument("--model", default="stories260K", choices=sorted(SHAPES))
    parser.add_argument("--version", type=int, default=0, choices=[0, 2])
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    shape = SHAPES[args.model]
    with counting.scratch() as work:
        built = program(args, work)
        model, tokenizer = counting.synthetic_files(work, args.model, shape.n_layers, args.version, "little")
        runs = {}
        for steps in counting.FULL_STEPS:
            out = Path(work) / f"p6-{steps}.out"
            argv = [built.path, *map(str, built.argv(model, tokenizer, steps))]
            counting._run(p6_model.callgrind_command(out, argv), "callgrind",
                          env={**os.environ, "GLIBC_TUNABLES": p6_model.NO_SSE}, cwd=work)
            parts = p6_model.by_function(p6_model.read_callgrind(out), counting._disassembly(built.path))
            runs[(shape.n_layers, steps)] = {name: part.cycles for name, part in parts.items()}
        names = set().union(*runs.values())
        for key in runs:
            runs[key] = {name: runs[key].get(name, 0.0) for name in names}
        per_token = counting.per_token(runs, shape.n_layers, min(counting.WINDOW, shape.seq_len))
    total = sum(per_token.values())
    print(f"{built.name} {args.model} v{args.version}: {total / 1e6:.3f} Mcycles/token = "
          f"{p6_model.CLOCK_HZ / total:.2f} tok/s at 350 MHz")
    for name, cycles in sorted(per_token.items(), key=lambda item: -item[1])[:args.top]:
        print(f"{cycles / 1e6:10.3f} M {100 * cycles / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
