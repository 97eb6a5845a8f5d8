"""Profile -> build plan: which template branches, which toolchain, which flags, where the output goes."""

import dataclasses
import importlib.util
import shlex
import shutil
import sys
from pathlib import Path

from deploy.errors import DeployError
from deploy.profile import ROOT
from deploy.stream import stream_port

BUILD_DIR = ROOT / "build"
# exact: the oracle (scalar kernel, portable math, the same bits on every target); upstream: what upstream llama2.c's
# run.c/runq.c print (scalar kernel, this machine's libm); fast: the profile's kernel and threads, sums reordered.
MODES = ("fast", "exact", "upstream")
# Flags the exact and upstream builds get: no fused multiply-add, so products round to float as in the reference.
ORACLE_FLAGS = ["-ffp-contract=off"]


def compiler_argv(toolchain):
    """The compiler as a command: `python -m module ...` runs in this interpreter (zig comes from PyPI)."""
    argv = shlex.split(toolchain["cc"])
    return [sys.executable, *argv[1:]] if argv[0] == "python" else argv


def toolchain_present(toolchain):
    argv = compiler_argv(toolchain)
    if argv[0] == sys.executable and len(argv) > 2 and argv[1] == "-m":
        return importlib.util.find_spec(argv[2]) is not None
    return shutil.which(argv[0]) is not None


def install_hint(toolchain):
    if toolchain.get("pip"):
        return f"pip install {' '.join(toolchain['pip'])}"
    return f"apt-get install {' '.join(toolchain.get('packages', []))}"


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    profile: object
    mode: str
    toolchain: dict
    port: dict  # the template's branch choices
    out_dir: Path

    @property
    def exact(self):
        return self.mode == "exact"

    @property
    def target(self):
        return self.profile.name

    @property
    def is_bundle(self):
        return self.toolchain.get("kind") == "bundle"

    @property
    def program(self):
        return self.out_dir / self.profile["files"]["program"]

    @property
    def source(self):
        return self.out_dir / ("RUN.C" if self.profile.get("disk", {}).get("names") == "8.3" else "run.c")

    @property
    def cflags(self):
        tc = self.toolchain
        flags = [*tc.get("flags", []), f"-std={self.port['dialect']}"]
        if self.mode != "fast":
            flags += ORACLE_FLAGS
        if self.port["threads"] == "pthreads" or self.port["readahead"]:
            flags.append("-pthread")
        if self.exact:
            flags += tc.get("exact_flags", [])
        return flags

    def compile_command(self):
        """The command that builds here (a cross or native compiler), or the bundle's command for the target."""
        tc = self.toolchain
        if self.is_bundle:
            return list(tc["command"])
        return [*compiler_argv(tc), *self.cflags, "-o", str(self.program), "-x", "c", str(self.source),
                *tc.get("libs", [])]

    def template_context(self):
        files = self.profile["files"]
        return {"target": self.target, "mode": self.mode, **self.port, "tokenizer_name": files["tokenizer"]}


def make_plan(profile, exact=False, toolchain=None, build_dir=None, variant=None, mode=None, stream=False):
    """The build plan for `profile` in `mode` (fast unless `exact` says exact). Exact mode swaps in the scalar
    kernel, one thread and the portable math functions, so that every target's exact build prints the same bytes as
    every other's; upstream mode the scalar kernel and one thread with this machine's libm. `variant` overrides port
    branches (a benchmark's plain scalar build, say) and names its own output folder. `stream`: a build that streams
    the weights from disk under a memory budget (deploy/stream.py, output folder `-stream`)."""
    mode = mode or ("exact" if exact else "fast")
    if mode not in MODES:
        raise DeployError(f"unknown build mode '{mode}' (known: {', '.join(MODES)})")
    entry = choose_toolchain(profile, toolchain)
    port = {"read_chunk": 65536, "math": "libm", **profile.port, "memory_cap_mb": profile.memory_cap_mb or 0,
            **entry.get("port", {})}
    if mode != "fast":
        port.update(kernel="scalar", threads="none", math="portable" if mode == "exact" else "libm")
    port.update(stream_port(profile, stream))
    port.update(variant or {})
    suffix = ("-" + entry["name"] if entry.get("kind") == "bundle" else "") + ("" if mode == "fast" else "-" + mode)
    suffix += "-stream" if stream else ""
    suffix += "".join(f"-{key}-{value}" for key, value in sorted((variant or {}).items()))
    out_dir = Path(build_dir or BUILD_DIR) / (profile.name + suffix)
    return BuildPlan(profile, mode, entry, port, out_dir)


def choose_toolchain(profile, wanted=None):
    """The first installed toolchain of the profile's preference list (a bundle always counts), or `wanted`."""
    entries = profile.toolchains
    if wanted:
        entries = [tc for tc in entries if tc["name"] == wanted]
        if not entries:
            names = ", ".join(tc["name"] for tc in profile.toolchains)
            raise DeployError(profile.path, f"has no toolchain '{wanted}' (has: {names})")
    for entry in entries:
        if entry.get("kind") == "bundle" or toolchain_present(entry):
            return entry
    first = entries[0]
    raise DeployError(f"{profile.name}: compiler {first['cc']} not found; install it with: {install_hint(first)}")
