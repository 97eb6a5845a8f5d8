"""Write files under a temporary name and rename them when complete, so nothing half-written sits under a final name."""

import contextlib
import os
from pathlib import Path


def partial_name(path):
    path = Path(path)
    return path.with_name(f".{path.name}.part")


@contextlib.contextmanager
def atomic_writer(path, mode="wb"):
    """Yield a file open on a temporary name beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_atomic(path, data):
    with atomic_writer(path, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
