"""Per-token counts for the machine model: build a program, run it on synthetic models of a public model's shape
under callgrind (Pentium II) or qemu-user with the project's block-count plugin (PowerPC, ARM), and reduce the runs
to per-token figures. Slow (minutes); `scripts/count_machines.py` writes the results to deploy/data/counts.json,
which `invoke plan` and `invoke report` read.

Per token: a run of n steps from BOS processes positions 0..n-1, so its count is K + a*n + b*n(n-1)/2 (b: the
attention's growth per position). Three step counts give K, a, b; the figure kept is a + b*W/2, the average over a
generation of W = min(256, seq_len) tokens (positions 1..W-1, as run.c times it). A big shape (stories110M) is
counted with 1 and 2 layers instead of 12: counts are linear in the layer count (K, a and b each have a part per
layer), so five runs give the full model's per-token figure. Counts do not depend on the weights; the synthetic
model's embedding row of BOS is zero so that greedy sampling never stops early.
"""

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deploy import guest_model, p6_model
from deploy.checkpoint import default_group_size, write_model
from deploy.errors import DeployError
from deploy.profile import ROOT
from deploy.synth import SHAPES, random_model, synthetic_tokenizer
from deploy.tokenizer import write_tokenizer

PEERS = ROOT.parent / "shared" / "peers"
PLUGIN_SOURCE = ROOT / "ports" / "tools" / "count_blocks.c"
ULLM_MAIN = ROOT / "ports" / "tools" / "ullm_main.c"
WINDOW = 256
# Runs long enough that no two loops of one function run nearly as often (the P6 model costs such loops as one group):
# from 2, 4 and 8 steps the attention's growth came out twice what longer runs show (docs/machine-model.md, "Per
# token"). A model small enough to sit in the caches is run for the whole window instead: its key and value cache
# spills out of them as it grows, so the growth is not linear, and its runs are cheap.
FULL_STEPS = (2, 16, 32)
LAYERED_RUNS = ((1, 2), (1, 16), (1, 32), (2, 2), (2, 16))  # (layers, steps)
BIG_SHAPES = {"stories42M", "stories110M"}
WHOLE_WINDOW_SHAPES = {"stories260K"}


@dataclasses.dataclass
class Program:
    """A built program and how to run it: argv(model, tokenizer, steps) -> list."""
    name: str
    path: Path
    argv: object
    fingerprint: str
    command: str


def build_dir():
    return ROOT / "build" / "counts"


def plugin(out_dir=None):
    """The block-count plugin, built from ports/tools/count_blocks.c when missing or older than its source."""
    out = Path(out_dir or build_dir()) / "count_blocks.so"
    if not out.exists() or out.stat().st_mtime < PLUGIN_SOURCE.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        _run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(PLUGIN_SOURCE)], "building the plugin")
    return out


def _run(command, what, **kwargs):
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if done.returncode and not (what.startswith("llama98") and done.returncode < 0):
        raise DeployError(what, f"{Path(str(command[0])).name} failed ({done.returncode}): "
                                f"{(done.stderr or done.stdout).strip()[-300:]}")
    return done


def _hash(*parts):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return digest.hexdigest()[:16]


def ours_fingerprint(plan):
    """What a count of the project's build depends on: the rendered source, every file under ports/ but the tools,
    and the compile command. A changed template or kernel makes the count stale."""
    from deploy.render import render_run_c

    files = sorted(p for p in (ROOT / "ports").rglob("*") if p.is_file() and "tools" not in p.parts)
    flags = [plan.toolchain.get("cc", ""), *plan.cflags, *plan.toolchain.get("libs", [])]
    return _hash(render_run_c(plan), *(p.read_bytes() for p in files), " ".join(flags))


def ours(target, work):
    from deploy.build import build
    from deploy.plan import make_plan
    from deploy.profile import load_profile

    plan = make_plan(load_profile(target), build_dir=Path(work) / "build")
    build(plan)
    return Program(f"ours ({target})", plan.program, lambda m, t, n: [m, "-z", t, "-n", n, "-t", "0"],
                   ours_fingerprint(plan), " ".join(plan.compile_command()).replace(str(work) + "/", "").replace(
                       sys.executable, "python"))


UPSTREAM_BUILDS = {  # Borys's G3 (no AltiVec); the Pentium II and G4 stand-ins of peers/README.md
    "G3": ("powerpc-linux-gnu-gcc", ["-mcpu=750"]),
    "P2": ("i686-linux-gnu-gcc", ["-march=pentium2"]),
    "G4": ("powerpc-linux-gnu-gcc", ["-mcpu=7450", "-maltivec", "-mabi=altivec"]),
}


def peer(name, work):
    """The published ports, built the way they were built (as near as this machine allows)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    upstream_argv = (lambda m, t, n: [m, "-z", t, "-n", n, "-t", "0"])
    if name == "llama98 -O0":  # Borland C++ 5.02's naive x87 code: gcc -O0 stand-in (FACTS section 8)
        source = PEERS / "llama98.c" / "run.c"
        # its Makefile's win98 line defines _WIN32 and __BORLANDC__, which select these three (LEGACY_FP: exp and
        # sqrt in double through range-checking wrappers); _WIN32 itself would take Windows headers
        borland = ["-DNO_SIMD", "-DNO_FAST_MATH", "-DLEGACY_FP"]
        command = ["i686-linux-gnu-gcc", "-O0", "-march=pentium2", *borland, "-static", "-o", work / "llama98-O0",
                   source, "-lm"]
        sources = [source]
        argv = upstream_argv
    elif name.startswith("ullm"):  # Rossignol: -O2 (ullm's Makefile), AltiVec matmul or the scalar one
        u = PEERS / "ullm"
        vector = ["-maltivec", "-mabi=altivec"] if "altivec" in name else ["-mno-altivec"]
        sources = [ULLM_MAIN, u / "ullm/llama2.c", u / "util/log.c", u / "util/status.c", u / "sys/file.c",
                   u / "sys/memory.c", u / "sys/time.c"]
        command = ["powerpc-linux-gnu-gcc", "-std=gnu99", "-O2", "-mcpu=7450", *vector, "-static", "-I", u, "-o",
                   work / name.replace(" ", "-"), *sources, "-lm"]
        argv = (lambda m, t, n: [m, t, n])
    elif name.startswith("upstream run.c "):  # make run's -O3, for the CPU (peers/README.md build lines)
        source = PEERS / "llama2.c" / "run.c"
        compiler, flags = UPSTREAM_BUILDS[name.split()[-1]]
        command = [compiler, "-O3", *flags, "-static", "-o", work / f"run-{name.split()[-1]}", source, "-lm"]
        sources, argv = [source], upstream_argv
    else:
        raise DeployError(name, "unknown peer program")
    _run(command, f"building {name}")
    output = Path(command[command.index("-o") + 1])
    command_text = " ".join(str(c) for c in command).replace(str(output), output.name).replace(
        str(PEERS), "../shared/peers").replace(str(ROOT) + "/", "")
    return Program(name, output, argv, _hash(*(Path(s).read_bytes() for s in sources), command_text), command_text)


def synthetic_files(work, shape_name, layers, version, byteorder):
    """A synthetic model of `shape_name` with `layers` layers (BOS never sampled) and its tokenizer."""
    config = dataclasses.replace(SHAPES[shape_name], n_layers=layers)
    model_path = Path(work) / f"{shape_name}-L{layers}-v{version}-{byteorder}.bin"
    tokenizer_path = Path(work) / f"tok{config.vocab_size}-{byteorder}.bin"
    if not model_path.exists():
        model = random_model(config, seed=1)
        model.weights["tok_embeddings"][1] = 0.0
        write_model(model, model_path, version, byteorder, default_group_size(config))
    if not tokenizer_path.exists():
        write_tokenizer(synthetic_tokenizer(config.vocab_size), tokenizer_path, byteorder)
    return model_path, tokenizer_path


def measure_run(machine, program, model, tokenizer, steps, work):
    """One run's figures: {name: value} (callgrind + P6 cost, or plugin blocks + the core's cost). Runs in `work`:
    llama98.c writes a debug.log into its working directory."""
    argv = [program.path, *map(str, program.argv(model, tokenizer, steps))]
    out = Path(work) / f"counts-{os.getpid()}-{time.monotonic_ns()}.out"
    try:
        if machine.method == "callgrind":
            env = {**os.environ, "GLIBC_TUNABLES": p6_model.NO_SSE}
            _run(p6_model.callgrind_command(out, argv), f"{program.name} under callgrind", env=env, cwd=work)
            cost = p6_model.cost(p6_model.read_callgrind(out), _disassembly(program.path))
            return {**cost.as_dict(), "cycles": cost.cycles}
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        _run([*machine.emulator, "-plugin", f"{plugin(work)},out={out}", *argv], f"{program.name} under qemu",
             env=env, cwd=work)
        cycles, instructions, _ = guest_model.run_cycles(guest_model.CORES[machine.core],
                                                         guest_model.read_blocks(out))
        return {"instructions": instructions, "cycles": cycles}
    finally:
        out.unlink(missing_ok=True)


_DISASSEMBLY = {}


def _disassembly(path):
    key = (str(path), Path(path).stat().st_mtime_ns)
    if key not in _DISASSEMBLY:
        _DISASSEMBLY[key] = p6_model.disassemble(path)
    return _DISASSEMBLY[key]


def per_token(runs, n_layers, window):
    """Fit counts of runs {(layers, steps): {name: value}} and return {name: per-token value} for the full model. Two
    runs of one model (2 steps and the whole window): their difference over the steps between them."""
    keys = sorted(runs)
    layered = len({layers for layers, _ in keys}) > 1
    if len(keys) == 2 and not layered:
        (_, short), (_, long) = keys
        return {name: (runs[keys[1]][name] - runs[keys[0]][name]) / (long - short) for name in runs[keys[0]]}

    def features(layers, steps):
        tri = steps * (steps - 1) / 2
        return [1, layers, steps, steps * layers, layers * tri] if layered else [1, steps, tri]

    design = np.array([features(*key) for key in keys], dtype=float)
    result = {}
    for name in runs[keys[0]]:
        values = np.array([runs[key][name] for key in keys], dtype=float)
        coef = np.linalg.lstsq(design, values, rcond=None)[0]
        if layered:
            _, _, a0, a1, b1 = coef
            result[name] = a0 + a1 * n_layers + b1 * n_layers * window / 2
        else:
            _, a, b = coef
            result[name] = a + b * window / 2
    return result


def count(machine, program, shape_name, version, work):
    """Per-token figures of `program` on `machine` for a synthetic model of `shape_name` (v0 fp32, v2 int8, v3
    ternary)."""
    shape = SHAPES[shape_name]
    window = min(WINDOW, shape.seq_len)
    if shape_name in BIG_SHAPES:
        plan = LAYERED_RUNS
    else:
        steps = (2, window) if shape_name in WHOLE_WINDOW_SHAPES else FULL_STEPS
        plan = tuple((shape.n_layers, n) for n in steps)
    runs = {}
    for layers, steps in plan:
        model, tokenizer = synthetic_files(work, shape_name, layers, version, machine.byteorder)
        runs[(layers, steps)] = measure_run(machine, program, model, tokenizer, steps, work)
    return {"per_token": per_token(runs, shape.n_layers, window), "window": window,
            "runs": [list(key) for key in plan]}


def scratch():
    """A scratch folder for models and outputs (under build/, removed by the caller)."""
    build_dir().mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix="count-", dir=build_dir())


def tools_present(machine):
    needed = ["valgrind", "objdump"] if machine.method == "callgrind" else [machine.emulator[0], "gcc"]
    return [tool for tool in needed if not shutil.which(tool)]
