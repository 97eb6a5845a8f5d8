"""How fast a build runs on a real machine, from per-token counts (deploy/data/counts.json) and a machine model.

- Pentium II 350 (win98-p2, p2-linux): callgrind with its caches, costed by deploy.p6_model. No fitted constant.
- PowerPC G4 (powerbook-g4) and G3: qemu-ppc block counts costed by deploy.guest_model with the core's documented
  widths and latencies, plus the weights streamed from memory once per token at a sustained bandwidth. The one fitted
  constant of the PowerPC machines is the fraction of the bus's peak bandwidth a stream achieves; it is fitted on
  Rossignol's scalar figure (0.77 tok/s) and checked on his AltiVec figure (0.88) and Borys's G3 (2.70).
- ARM (rpi-zero, rpi4, pixel6): the same counting and costing with the profile's memory bandwidth; no published
  figure, so these predictions are unvalidated.

The counts are slow to make (scripts/count_machines.py); plan and report only read them and say when a count is stale
(the project's template, kernels or flags changed since it was made).
"""

import dataclasses
import json
from pathlib import Path

from deploy import p6_model
from deploy.errors import DeployError
from deploy.profile import ROOT

COUNTS = ROOT / "deploy" / "data" / "counts.json"


@dataclasses.dataclass(frozen=True)
class Machine:
    name: str
    method: str  # "callgrind" or "qemu"
    core: str = ""  # guest_model.CORES key
    emulator: tuple = ()
    byteorder: str = "little"
    clock_mhz: float = 0
    peak_mb_s: float = 0  # the memory bus's peak; the profile's memory.bandwidth_mb_s where there is a profile
    cache_kb: int = 0  # last-level cache: a model that fits is not streamed from memory
    fitted: bool = False  # the bandwidth fraction is fitted (PowerPC) rather than taken as 1


MACHINES = {
    "pentium2": Machine("Pentium II 350", "callgrind", clock_mhz=350),
    "g4": Machine("PowerPC 7447A 1.5 GHz (PowerBook G4)", "qemu", "mpc7447a", ("qemu-ppc", "-cpu", "g4"), "big",
                  1500, 1333, 512, True),
    # Borys's Blue & White PowerMac G3 400: 100 MHz 60x bus, 64 bits wide (800 MB/s peak), 1 MB backside L2
    "g3": Machine("PowerPC 750 400 MHz (PowerMac G3)", "qemu", "ppc750", ("qemu-ppc", "-cpu", "750"), "big", 400,
                  800, 1024, True),
    "arm1176": Machine("ARM1176JZF-S 1 GHz (Raspberry Pi Zero)", "qemu", "arm1176", ("qemu-arm", "-cpu", "arm1176"),
                       cache_kb=16),
    "cortex-a72": Machine("Cortex-A72 1.5 GHz (Raspberry Pi 4)", "qemu", "cortex-a72",
                          ("qemu-aarch64", "-cpu", "cortex-a72"), cache_kb=1024),
    "cortex-x1": Machine("Cortex-X1 2.8 GHz (Pixel 6)", "qemu", "cortex-x1", ("qemu-aarch64", "-cpu", "max"),
                         cache_kb=4096),
}
TARGET_MACHINE = {"win98-p2": "pentium2", "p2-linux": "pentium2", "powerbook-g4": "g4", "rpi-zero": "arm1176",
                  "rpi4": "cortex-a72", "pixel6": "cortex-x1"}
# the target whose build stands for each target's own port when it is counted (win98-p2's mingw build has the same
# kernels and flags as p2-linux's, but runs only under Wine)
COUNTED_AS = {"win98-p2": "p2-linux"}


@dataclasses.dataclass(frozen=True)
class Published:
    """A published figure and the port that made it, as the model builds that port."""
    target: str
    machine: str
    model: str
    tok_s: float
    program: str  # deploy.counting.peer name
    who: str
    fit: bool = False  # the figure the machine's one constant is fitted on


PUBLISHED = [
    Published("win98-p2", "pentium2", "stories260K", 39.31, "llama98 -O0",
              "EXO Labs, llama98.c, Borland C++ 5.02 (stand-in: gcc -O0)"),
    Published("win98-p2", "pentium2", "stories15M", 1.03, "llama98 -O0",
              "EXO Labs, llama98.c, Borland C++ 5.02 (stand-in: gcc -O0)"),
    Published("powerbook-g4", "g4", "stories110M", 0.77, "ullm scalar", "Rossignol, ullm scalar (-O2)", fit=True),
    Published("powerbook-g4", "g4", "stories110M", 0.88, "ullm altivec", "Rossignol, ullm AltiVec (-O2)"),
    Published("powermac-g3", "g3", "stories15M", 2.70, "upstream run.c G3",
              "Borys, upstream run.c, gcc -O3, no AltiVec"),
]
# models the project's own builds are counted on, per machine
OUR_MODELS = {"pentium2": ["stories260K", "stories15M"],  # stories110M exceeds the port's 96 MB cap
              "g4": ["stories15M", "stories110M"],
              "arm1176": ["stories15M", "stories110M"], "cortex-a72": ["stories15M", "stories110M"],
              "cortex-x1": ["stories15M", "stories110M"]}


def load_counts(path=None):
    path = Path(path or COUNTS)
    if not path.exists():
        return {"entries": []}
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise DeployError(path, f"not valid JSON ({error}); regenerate it with scripts/count_machines.py") from None


def entry_key(machine, program, model, version):
    return f"{machine}|{program}|{model}|v{version}"


def find(counts, machine, program, model, version=0):
    key = entry_key(machine, program, model, version)
    return next((e for e in counts["entries"] if e["key"] == key), None)


def weight_bytes(config, version):
    if version == 3:  # ternary: packed codes, fp32 norms and embeddings; the file less its header
        from deploy.checkpoint import V1_HEADER_BYTES, Header, expected_size
        return expected_size(Header(3, "little", config)) - V1_HEADER_BYTES
    params = config.parameter_count()
    if version == 2:
        from deploy.checkpoint import default_group_size
        return params * (1 + 4 / default_group_size(config))
    return 4 * params


def streamed_bytes(machine, config, version, window):
    """Bytes read from memory per token: the weights and the KV cache read, unless they fit in the last cache."""
    kv = 2 * 4 * config.n_layers * config.kv_dim * window / 2
    total = weight_bytes(config, version) + kv
    return total if total > machine.cache_kb * 1024 else 0.0


def bandwidth_fraction(counts, profiles):
    """The PowerPC machines' one fitted constant: the fraction of peak bus bandwidth a stream achieves, from the
    published figure marked fit=True (None when its count is missing)."""
    figure = next(p for p in PUBLISHED if p.fit)
    entry = find(counts, figure.machine, figure.program, figure.model, 0)
    if entry is None:
        return None
    machine = MACHINES[figure.machine]
    from deploy.models import CATALOG

    config = CATALOG[figure.model].shape
    memory_seconds = 1 / figure.tok_s - entry["per_token"]["cycles"] / (machine.clock_mhz * 1e6)
    if memory_seconds <= 0:
        return None
    peak = _peak(machine, profiles.get(figure.target))
    return streamed_bytes(machine, config, 0, entry["window"]) / memory_seconds / (peak * 1e6)


def _peak(machine, profile):
    memory = (profile.get("memory") or {}) if profile else {}
    return memory.get("bandwidth_mb_s") or machine.peak_mb_s


def threads(profile):
    """Threads a build runs with: the profile's cores when it has threads (a pthread pool). The counts are of one thread; the
    compute is divided evenly (matmul dominates; the serial rest and unequal cores are not modelled), while
    every thread shares the one memory stream."""
    if not profile or profile.port.get("threads") != "pthreads":
        return 1
    return (profile.get("cpu") or {}).get("cores", 1)


def predict_tok_s(entry, machine_key, config, version, profile=None, fraction=None):
    """tok/s of a counted build: compute cycles at the clock plus the stream at the sustained bandwidth."""
    machine = MACHINES[machine_key]
    per = entry["per_token"]
    if machine.method == "callgrind":
        return p6_model.CLOCK_HZ / p6_model.cycles(per["core_cycles"], per["l2_hits"], per["l2_misses"])
    clock = ((profile or {}).get("cpu") or {}).get("clock_mhz") or machine.clock_mhz
    seconds = per["cycles"] / (clock * 1e6) / threads(profile)
    if machine.fitted and fraction is None:
        return None
    sustained = _peak(machine, profile) * (fraction if machine.fitted else 1.0)
    if not sustained:
        return None
    seconds += streamed_bytes(machine, config, version, entry["window"]) / (sustained * 1e6)
    return 1 / seconds


def is_stale(entry):
    """True when the project's build the entry counted has changed since (template, kernels, flags)."""
    if not entry.get("target"):
        return False
    try:
        from deploy.counting import ours_fingerprint
        from deploy.plan import make_plan
        from deploy.profile import load_profile

        return ours_fingerprint(make_plan(load_profile(entry["target"]))) != entry["fingerprint"]
    except DeployError:  # no toolchain here to render the plan with: cannot tell
        return False


@dataclasses.dataclass
class Row:
    target: str
    model: str
    published_tok_s: float = None
    published_port: str = ""
    predicted_published_port_tok_s: float = None
    predicted_tok_s: float = None  # ours, fp32
    predicted_int8_tok_s: float = None
    predicted_ternary_tok_s: float = None  # ours, v3
    error: float = None  # predicted / published - 1, for the published port
    validated: bool = False
    fitted_here: bool = False
    stale: bool = False
    note: str = ""

    def as_json(self, version):
        data = dataclasses.asdict(self)
        data["version"] = version
        return data


def rows(targets=None, counts=None):
    """One Row per (target, model): each published figure with the model's prediction for its port and for ours, and
    our builds' predictions on the models counted for that machine."""
    from deploy.models import CATALOG
    from deploy.profile import known_targets, load_profile

    counts = counts if counts is not None else load_counts()
    names = [t for t in (targets or known_targets()) if t in TARGET_MACHINE]
    profiles = {t: load_profile(t) for t in {*names, "powerbook-g4"}}
    fraction = bandwidth_fraction(counts, profiles)
    stale_cache = {}

    def ours(target, model, version):
        machine = TARGET_MACHINE[target]
        counted = COUNTED_AS.get(target, target)
        entry = find(counts, machine, f"ours ({counted})", model, version)
        if entry is None:
            return None, False
        if counted not in stale_cache:
            stale_cache[counted] = is_stale(entry)
        return predict_tok_s(entry, machine, CATALOG[model].shape, version, profiles.get(target),
                             fraction), stale_cache[counted]

    found = []
    for figure in PUBLISHED:
        if targets and figure.target not in targets:
            continue
        entry = find(counts, figure.machine, figure.program, figure.model, 0)
        config = CATALOG[figure.model].shape
        predicted = predict_tok_s(entry, figure.machine, config, 0, profiles.get(figure.target),
                                  fraction) if entry else None
        row = Row(figure.target, figure.model, figure.tok_s, figure.who, predicted,
                  validated=True, fitted_here=figure.fit)
        if predicted:
            row.error = predicted / figure.tok_s - 1
        if figure.target in profiles:
            (row.predicted_tok_s, stale32), (row.predicted_int8_tok_s, stale8) = (ours(figure.target, figure.model, 0),
                                                                                 ours(figure.target, figure.model, 2))
            row.predicted_ternary_tok_s, stale3 = ours(figure.target, figure.model, 3)
            row.stale = stale32 or stale8 or stale3
        if entry is None:
            row.note = "not counted yet: scripts/count_machines.py"
        found.append(row)
    for target in names:
        machine = TARGET_MACHINE[target]
        for model in OUR_MODELS.get(machine, []):
            if any(r.target == target and r.model == model for r in found):
                continue
            (fp32, stale32), (int8, stale8) = ours(target, model, 0), ours(target, model, 2)
            ternary, stale3 = ours(target, model, 3)
            found.append(Row(target, model, predicted_tok_s=fp32, predicted_int8_tok_s=int8,
                             predicted_ternary_tok_s=ternary, stale=stale32 or stale8 or stale3,
                             note=_note(machine, profiles[target])))
    return found, fraction


def counted_model(config):
    """The public model name counts are kept under for a shape (tiny260k is stories260K's shape), or None."""
    from deploy.synth import SHAPES

    return next((name for name, shape in SHAPES.items() if shape == config), None)


def _note(machine, profile):
    notes = [] if machine in ("pentium2", "g4") else ["unvalidated: no published figure on this machine"]
    if threads(profile) > 1:
        notes.append(f"{threads(profile)} threads")
    return "; ".join(notes)


def prediction_for(target, model_name, version, counts=None):
    """The machine model's tok/s for the project's build of `target` on a catalog model, or None."""
    if target not in TARGET_MACHINE:
        return None
    for row in rows([target], counts)[0]:
        if row.model == model_name:
            return {2: row.predicted_int8_tok_s, 3: row.predicted_ternary_tok_s}.get(version, row.predicted_tok_s)
    return None
