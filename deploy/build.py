"""Build a plan: render its sources and run its compiler, skipping the work when nothing changed."""

import dataclasses
import hashlib
import json
import subprocess
import time

from deploy.errors import DeployError
from deploy.render import write_sources


@dataclasses.dataclass
class BuildResult:
    plan: object
    command: list
    seconds: float
    warnings: list
    skipped: bool

    @property
    def binary(self):
        return self.plan.program


def _fingerprint(plan, sources):
    digest = hashlib.sha256(json.dumps(plan.compile_command()).encode())
    for path in sources:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build(plan, force=False):
    sources = write_sources(plan)
    command = plan.compile_command()
    stamp = plan.out_dir / ".build-stamp"
    fingerprint = _fingerprint(plan, sources)
    if not force and plan.program.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return BuildResult(plan, command, 0.0, [], skipped=True)
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:300])
        raise DeployError(plan.source, f"{command[0]} failed: {first}")
    stamp.write_text(fingerprint)
    warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
    return BuildResult(plan, command, seconds, warnings, skipped=False)
