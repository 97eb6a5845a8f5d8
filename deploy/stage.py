"""Stage a host's files under stage/<host>/ with the target's names, and a manifest of sizes and hashes that every
transport verifies against."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

from deploy.atomic import partial_name, write_atomic
from deploy.manifest import sha256_file
from deploy.profile import ROOT

STAGE_DIR = ROOT / "stage"
MANIFEST = "manifest.json"


@dataclasses.dataclass
class StagedFile:
    name: str
    path: Path
    size: int
    sha256: str


@dataclasses.dataclass
class Stage:
    host: str
    directory: Path
    files: list  # StagedFile, in delivery order: program, tokenizer, model
    reused: bool  # every file was already staged with the same content

    def names(self):
        return [f.name for f in self.files]


def _same(path, size, digest):
    return path.exists() and path.stat().st_size == size and sha256_file(path) == digest


def _place(source, dest):
    """Hard-link when possible (a model can be gigabytes), else copy under a temporary name and rename."""
    tmp = partial_name(dest)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def stage_files(host, sources, stage_root=None, extra=None):
    """Stage `sources` ({name on the target: local path}) for `host`; returns the Stage. Unchanged files stay."""
    directory = Path(stage_root or STAGE_DIR) / host
    directory.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(directory)
    staged, reused = [], True
    for name, source in sources.items():
        source = Path(source)
        size, digest = source.stat().st_size, sha256_file(source)
        dest = directory / name
        known = previous.get(name)
        if not (known and known["sha256"] == digest and _same(dest, size, digest)):
            _place(source, dest)
            reused = False
        staged.append(StagedFile(name, dest, size, digest))
    for stale in set(previous) - set(sources):
        (directory / stale).unlink(missing_ok=True)
    manifest = {"host": host, **(extra or {}),
                "files": {f.name: {"size": f.size, "sha256": f.sha256} for f in staged}}
    write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return Stage(host, directory, staged, reused)


def _read_manifest(directory):
    try:
        return json.loads((directory / MANIFEST).read_text())["files"]
    except (FileNotFoundError, KeyError, ValueError):
        return {}


def load_stage(host, stage_root=None):
    """The stage an earlier deploy left for `host` (for `invoke serve`)."""
    from deploy.errors import DeployError

    directory = Path(stage_root or STAGE_DIR) / host
    files = _read_manifest(directory)
    if not files:
        raise DeployError(directory, f"nothing staged for {host}; run `invoke deploy --host {host}` first")
    staged = [StagedFile(name, directory / name, entry["size"], entry["sha256"]) for name, entry in files.items()]
    for item in staged:
        if not item.path.exists() or item.path.stat().st_size != item.size:
            raise DeployError(item.path, "staged file is missing or changed; deploy again")
    return Stage(host, directory, staged, reused=True)
