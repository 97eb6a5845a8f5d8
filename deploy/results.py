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
    how: str  # NATIVE, EMULATED, DEVICE or BY_HAND
    toolchain: str
    flags: str
    model: str
    model_sha256: str
    tok_s: float
    exact: bool = False
    output: str = ""  # BY_HAND: the program's own line, as read off the machine's screen
    note: str = ""


# How a figure was obtained. Emulated figures measure this PC's emulator, not the machine: they are never set beside
# a published hardware figure as if comparable.
NATIVE, EMULATED, DEVICE, BY_HAND = "native", "emulated", "device", "by hand"
HOW_LABELS = {NATIVE: "native, this PC", EMULATED: "emulated on this PC", DEVICE: "on the device",
              BY_HAND: "measured on the machine"}
_OLD_NAMES = {"emulator": EMULATED}


def emulator_of(host, profile):
    """The emulator a run on an inventory host goes through: the profile's, or for a whole emulated machine (`vm`)
    its machine's; empty for a real device."""
    if host.connection == "vm":
        return profile["machine"]["command"]
    return profile.emulator if host.connection == "emulator" else []


def how_measured(host, profile):
    """NATIVE, EMULATED or DEVICE for a run on an inventory host."""
    if host.connection in ("emulator", "vm"):
        return EMULATED if emulator_of(host, profile) else NATIVE
    return DEVICE


def how_label(how, emulator=()):
    label = HOW_LABELS.get(how, how)
    return f"emulated: {emulator[0]} on this PC" if how == EMULATED and emulator else label


def on_hardware(how):
    return how in (DEVICE, BY_HAND)


def record_by_hand(target, model, output="", tok_s=None, note="", host=None, path=None):
    """Record a figure read off a real machine's screen: `output` is the program's own line (its tok/s is taken from
    it), or `tok_s` the figure itself."""
    from deploy.errors import DeployError
    from deploy.runner import tokens_per_second

    from_output = tokens_per_second(output) if output else None
    if from_output is None and tok_s is None:
        raise DeployError("--output", f"'{output}' holds no 'achieved tok/s: N'; give the figure with --tok-s"
                          if output else "give the program's line (--output) or the figure (--tok-s)")
    if from_output is not None and tok_s is not None and abs(from_output - tok_s) > 1e-6 * max(1.0, tok_s):
        raise DeployError("--tok-s", f"{tok_s:g} differs from the {from_output:g} in --output; give one of them")
    result = Result(now(), host or "", target, host or "", BY_HAND, "", "", model, "",
                    from_output if from_output is not None else tok_s, output=output.strip(), note=note)
    record(result, path)
    return result


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
            result = Result(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a damaged line costs only itself
        result.how = _OLD_NAMES.get(result.how, result.how)
        results.append(result)
    return results


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
