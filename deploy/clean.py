"""`invoke clean`: delete what the tasks made under the project (builds, stages, and on request the results)."""

import shutil

from deploy.profile import ROOT

MADE = ["build", "stage"]


def _size(path):
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file() and not item.is_symlink())


def clean(results=False, root=None):
    """Remove build/ and stage/ (and results/); yields (path, bytes freed) for each folder removed."""
    root = root or ROOT
    for name in MADE + (["results"] if results else []):
        path = root / name
        if path.is_dir():
            size = _size(path)
            shutil.rmtree(path)
            yield path, size
