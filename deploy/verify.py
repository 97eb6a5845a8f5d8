"""Transfers that cannot lie: every transport checks the file that arrived against the stage manifest (size and
sha256) before the final rename, and continues a partial file only when a sidecar written before its first byte
names the same source (sha256 and size).

The sidecar is written after any older partial file is gone and before the new one is started, so a partial file
that has one is a prefix of the file the sidecar names.
"""

import hashlib
from pathlib import Path

from deploy.errors import DeployError
from deploy.manifest import sha256_file


class Expected:
    """What a delivered file must be: its name on the host, its local path, size and sha256 (from the manifest)."""

    def __init__(self, name, path, size, sha256):
        self.name, self.path, self.size, self.sha256 = name, Path(path), size, sha256

    @classmethod
    def of(cls, item):
        """From a StagedFile (name, path, size, sha256 of the manifest), or a plain path, hashed now."""
        if hasattr(item, "sha256"):
            return cls(item.name, item.path, item.size, item.sha256)
        path = Path(item)
        try:
            return cls(path.name, path, path.stat().st_size, sha256_file(path))
        except OSError as error:
            raise DeployError(path, error.strerror or str(error)) from None


class Hasher:
    """Counts and hashes bytes fed to it, e.g. a file read back from the host block by block."""

    def __init__(self):
        self.digest, self.size = hashlib.sha256(), 0

    def __call__(self, block):
        self.digest.update(block)
        self.size += len(block)

    def hexdigest(self):
        return self.digest.hexdigest()


def check(where, expected, size, sha256, how):
    """Raise a one-line DeployError unless (size, sha256) are the manifest's; `how` says how they were obtained."""
    if size != expected.size:
        raise DeployError(where, f"arrived as {size} bytes, the stage manifest says {expected.size} "
                                 f"(checked by {how}); not renamed, run again")
    if sha256 != expected.sha256:
        raise DeployError(where, f"arrived corrupted: sha256 {sha256} (by {how}), the stage manifest says "
                                 f"{expected.sha256}; not renamed, run again")


def check_file(where, path, expected):
    """The same check for a file on this machine."""
    check(where, expected, Path(path).stat().st_size, sha256_file(path), "sha256 here")


def sidecar_text(expected):
    return f"{expected.sha256} {expected.size}\r\n"


def proves_prefix(text, partial_size, expected):
    """True when the sidecar `text` names the same source and the partial file is not longer than it."""
    return text is not None and text.split() == sidecar_text(expected).split() and 0 < partial_size <= expected.size
