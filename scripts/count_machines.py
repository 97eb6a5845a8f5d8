#!/usr/bin/env python3
"""Count per-token costs for the machine model and write deploy/data/counts.json (committed; plan and report read it).

For each machine: the published ports, built the way they were built (llama98.c at -O0 for EXO's Borland build,
ullm scalar and AltiVec at -O2 for Rossignol, upstream run.c -O3 without AltiVec for Borys's G3), and the project's
own build of each target in fp32 and int8, on synthetic models of the public models' shapes (deploy.counting).
Takes about 10-20 minutes on this 2-core machine. Re-run it when plan or report says a count is stale.

Usage: .venv/bin/python scripts/count_machines.py [--machine pentium2 ...] [--only-published] [--force] [--out FILE]
(entries whose program is unchanged are kept unless --force)
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy import counting  # noqa: E402
from deploy.atomic import partial_name  # noqa: E402
from deploy.errors import DeployError  # noqa: E402
from deploy.machine_model import (COUNTS, MACHINES, OUR_MODELS, PUBLISHED, TARGET_MACHINE, entry_key,  # noqa: E402
                                  load_counts)


def jobs(machines, only_published, versions=(0, 2, 3)):
    for figure in PUBLISHED:
        if figure.machine in machines:
            yield figure.machine, ("peer", figure.program), figure.model, 0
    if only_published:
        return
    for target, machine in TARGET_MACHINE.items():
        if machine in machines and target != "win98-p2":
            for model in OUR_MODELS[machine]:
                for version in versions:
                    yield machine, ("ours", target), model, version


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", action="append", choices=sorted(MACHINES))
    parser.add_argument("--only-published", action="store_true")
    parser.add_argument("--version", action="append", type=int, choices=(0, 2, 3),
                        help="checkpoint versions of our builds to count (default: 0, 2 and 3)")
    parser.add_argument("--out", default=str(COUNTS))
    parser.add_argument("--force", action="store_true", help="recount entries whose program has not changed")
    args = parser.parse_args()
    out = Path(args.out)
    data = load_counts(out)
    entries = {e["key"]: e for e in data["entries"]}
    with counting.scratch() as work:
        programs = {}
        versions = args.version or (0, 2, 3)
        for machine_key, (kind, name), model, version in jobs(args.machine or list(MACHINES), args.only_published,
                                                              versions):
            machine = MACHINES[machine_key]
            missing = counting.tools_present(machine)
            if missing:
                print(f"skip {machine_key}: missing {', '.join(missing)}")
                continue
            if (kind, name) not in programs:
                programs[(kind, name)] = counting.ours(name, work) if kind == "ours" else counting.peer(name, work)
            program = programs[(kind, name)]
            key = entry_key(machine_key, program.name, model, version)
            if not args.force and entries.get(key, {}).get("fingerprint") == program.fingerprint:
                continue
            started = time.monotonic()
            try:
                result = counting.count(machine, program, model, version, work)
            except DeployError as error:
                print(f"{key}: not counted: {error}", flush=True)
                continue
            entries[key] = {"key": key, "machine": machine_key, "program": program.name, "model": model,
                            "version": version, "target": name if kind == "ours" else "",
                            "fingerprint": program.fingerprint, "command": program.command,
                            "method": machine.method + (" " + " ".join(machine.emulator) if machine.emulator else ""),
                            "date": time.strftime("%Y-%m-%d"), **result}
            result["per_token"] = {name: float(value) for name, value in result["per_token"].items()}
            print(f"{key}: {result['per_token']} ({time.monotonic() - started:.0f} s)", flush=True)
            data["entries"] = sorted(entries.values(), key=lambda e: e["key"])
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = partial_name(out)
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            tmp.replace(out)


if __name__ == "__main__":
    main()
