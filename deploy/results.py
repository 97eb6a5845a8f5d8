"""Benchmark results as JSON lines (results/bench.jsonl): one line per run, never rewritten, only appended."""

import dataclasses
import json
import platform
import time
from pathlib import Path

from deploy.profile import ROOT

RESULTS = ROOT / "results" / "bench.jsonl"


@dataclasses.dataclass
class Result:
    time: str
    host: str
    target: str
    machine: str  # what ran it: this machine's description, or the device
    how: str  # "device", "emulator" or "native"
    toolchain: str
    flags: str
    model: str
    model_sha256: str
    tok_s: float
    exact: bool = False


def this_machine():
    return f"{platform.node()} {platform.machine()} {platform.system()} {platform.release()}"


def record(result, path=None):
    path = Path(path or RESULTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as out:  # one short line per append: no partial records survive a crash
        out.write(json.dumps(dataclasses.asdict(result)) + "\n")
    return path


def load(path=None):
    path = Path(path or RESULTS)
    if not path.exists():
        return []
    results = []
    for line in path.read_text().splitlines():
        try:
            results.append(Result(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a damaged line costs only itself
    return results


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
