"""Profile -> build plan: which template branches, which toolchain, which flags, where the output goes."""

import dataclasses
import shutil
from pathlib import Path

from deploy.errors import DeployError
from deploy.profile import ROOT

BUILD_DIR = ROOT / "build"
# Flags every C build gets: no fused multiply-add, so products round to float exactly as in the scalar reference.
COMMON_FLAGS = ["-ffp-contract=off"]


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    profile: object
    exact: bool
    toolchain: dict
    port: dict  # the template's branch choices
    out_dir: Path

    @property
    def target(self):
        return self.profile.name

    @property
    def program(self):
        return self.out_dir / self.profile["files"]["program"]

    @property
    def source(self):
        return self.out_dir / "run.c"

    @property
    def cflags(self):
        tc = self.toolchain
        flags = [*tc.get("flags", []), f"-std={self.port['dialect']}", *COMMON_FLAGS]
        if self.port["threads"] == "openmp":
            flags.append("-fopenmp")
        if self.exact:
            flags += tc.get("exact_flags", [])
        return flags

    def compile_command(self):
        tc = self.toolchain
        return [tc["cc"], *self.cflags, "-o", str(self.program), str(self.source), *tc.get("libs", [])]

    def template_context(self):
        files = self.profile["files"]
        return {"target": self.target, **self.port, "tokenizer_name": files["tokenizer"]}


def make_plan(profile, exact=False, toolchain=None, build_dir=None):
    """The build plan for `profile`; exact mode swaps in the scalar kernel and single-threaded code."""
    toolchain_entry = choose_toolchain(profile, toolchain)
    port = dict(profile.port)
    port.setdefault("read_chunk", 65536)
    if exact:
        port.update(kernel="scalar", threads="none")
    out_dir = Path(build_dir or BUILD_DIR) / (profile.name + ("-exact" if exact else ""))
    return BuildPlan(profile, exact, toolchain_entry, port, out_dir)


def choose_toolchain(profile, wanted=None):
    """The first toolchain of the profile's preference list that is installed (or the one named `wanted`)."""
    entries = profile.toolchains
    if wanted:
        entries = [tc for tc in entries if tc["name"] == wanted]
        if not entries:
            names = ", ".join(tc["name"] for tc in profile.toolchains)
            raise DeployError(profile.path, f"has no toolchain '{wanted}' (has: {names})")
    for entry in entries:
        if entry.get("kind") in ("bundle", "remote") or shutil.which(entry["cc"]):
            return entry
    missing = entries[0]
    raise DeployError(f"{profile.name}: compiler {missing['cc']} not found; install it with: "
                      f"{missing.get('install') or 'apt-get install ' + ' '.join(missing.get('packages', [missing['cc']]))}")
