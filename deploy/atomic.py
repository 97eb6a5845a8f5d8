"""Write files under a temporary name and rename them when complete, so nothing half-written sits under a final name."""

import contextlib
import errno
import os
from pathlib import Path

from deploy.errors import DeployError

# Errors that only writing causes (a full disk, say), reported as one line wherever in the block they happen.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def partial_name(path):
    path = Path(path)
    return path.with_name(f".{path.name}.part")


@contextlib.contextmanager
def atomic_writer(path, mode="wb"):
    """Yield a file open on a temporary name beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    tmp = partial_name(path)
    handle = _open(path, tmp, mode)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
            raise DeployError(path, f"cannot be written: {error.strerror}") from None
        raise


def check_parents(path, doing="written"):
    """One line unless the nearest existing folder above `path` is a folder (not a file)."""
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise DeployError(path, f"cannot be {doing}: {parent} is a file, not a folder")
            return


def _open(path, tmp, mode):
    """The temporary file, in a folder made for it, or one line saying why `path` cannot be written."""
    if path.is_dir():
        raise DeployError(path, "is a folder; name a file to write instead")
    check_parents(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DeployError(path.parent, f"cannot make this folder: {error.strerror or error}") from None
    try:
        return open(tmp, mode)
    except OSError as error:
        raise DeployError(path, f"cannot be written: {error.strerror or error}") from None


def write_atomic(path, data):
    with atomic_writer(path, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
