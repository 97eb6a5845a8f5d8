"""Build a plan: render its sources and run its compiler (or, for a bundle built on the target, check its source
with a compiler here), skipping the work when nothing changed."""

import dataclasses
import hashlib
import json
import shutil
import signal
import time

from deploy import processes
from deploy.errors import DeployError
from deploy.render import write_sources


@dataclasses.dataclass
class BuildResult:
    plan: object
    command: list
    seconds: float
    warnings: list
    skipped: bool
    ran: bool = True  # False for a bundle whose compiler exists only on the target

    @property
    def binary(self):
        return self.plan.program if self.ran else None

    @property
    def output(self):
        return self.plan.program if self.ran else self.plan.out_dir


def _fingerprint(plan, sources):
    digest = hashlib.sha256(json.dumps(plan.compile_command()).encode())
    for path in sources:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _compile(command, plan, cwd=None):
    start = time.monotonic()
    try:
        done = processes.run(command, text=True, cwd=cwd, env=_compiler_env(plan))
    except FileNotFoundError:
        raise DeployError(f"{plan.target}: {command[0]} not found; run `invoke doctor`") from None
    if done.returncode < 0:
        raise DeployError(plan.source, f"{command[0]} was killed by signal {-done.returncode} "
                                       f"({signal.Signals(-done.returncode).name}); out of memory?")
    if done.returncode != 0:
        lines = done.stderr.splitlines()
        first = next((line for line in lines if "error" in line), lines[0] if lines else "no output")
        raise DeployError(plan.source, f"{command[0]} failed: {first}")
    warnings = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    return time.monotonic() - start, warnings


def _compiler_env(plan):
    import os

    # zig keeps the C library it builds for a CPU in its cache: keep that cache with the builds
    return dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(plan.out_dir.parent / ".zig-cache"))


def build(plan, force=False):
    sources = write_sources(plan)
    command = plan.compile_command()
    stamp = plan.out_dir / ".build-stamp"
    fingerprint = _fingerprint(plan, sources)
    runs_here = not plan.is_bundle or (plan.toolchain.get("runs_here") and shutil.which(command[0]))
    done_before = plan.program.exists() or not runs_here
    if not force and done_before and stamp.exists() and stamp.read_text() == fingerprint:
        return BuildResult(plan, command, 0.0, [], skipped=True, ran=bool(runs_here))
    if runs_here:
        seconds, warnings = _compile(command, plan, cwd=plan.out_dir if plan.is_bundle else None)
    else:
        seconds, warnings = _check_bundle(plan)
    stamp.write_text(fingerprint)
    return BuildResult(plan, command, seconds, warnings, skipped=False, ran=bool(runs_here))


def _check_bundle(plan):
    """Compile a bundle's source here with the profile's check command, when that compiler is installed."""
    check = plan.toolchain.get("check")
    if not check or not shutil.which(check[0]):
        return 0.0, []
    return _compile([*check, "-x", "c", str(plan.source)], plan)
