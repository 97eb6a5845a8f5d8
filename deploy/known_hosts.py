"""The project's known_hosts file: OpenSSH's format, so `ssh -o UserKnownHostsFile=known_hosts` reads it too.

Host keys are only ever added by an explicit `trust` (the `invoke hosts.trust HOST` task), never on first contact.
"""

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from paramiko.hostkeys import HostKeyEntry, HostKeys

from deploy.atomic import write_atomic
from deploy.errors import DeployError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "known_hosts"


def fingerprint(key):
    """SHA256:base64 without padding, as `ssh-keygen -l` and ssh's prompts print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def md5_fingerprint(key):
    """MD5:aa:bb:..., what old ssh-keygen (OpenSSH before 6.8, e.g. on Mac OS X 10.4) prints with -l."""
    return "MD5:" + ":".join(f"{byte:02x}" for byte in hashlib.md5(key.asbytes()).digest())


def entry_name(host, port):
    """The name OpenSSH files a host under: `host` on port 22, `[host]:port` otherwise."""
    host = host.lower()
    return host if int(port) == 22 else f"[{host}]:{port}"


def _matches(pattern, name):
    if pattern.startswith("|1|"):  # a hashed name (ssh-keygen -H)
        return HostKeys.hash_host(name, pattern) == pattern
    return pattern.lower() == name


def _parse(path, number, line):
    """(host patterns, key) of one line; None for blanks, comments, @markers and key types paramiko can't read."""
    text = line.strip()
    if not text or text.startswith(("#", "@")):
        return None
    try:
        entry = HostKeyEntry.from_line(text)
    except Exception as error:  # bad base64 or a truncated key: paramiko raises several kinds
        raise DeployError(f"{path}:{number}", f"not a known_hosts line ({type(error).__name__})") from None
    return (entry.hostnames, entry.key) if entry is not None else None


def _lines(path):
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []


def known_keys(path, host, port):
    """The keys `path` holds for host:port."""
    name = entry_name(host, port)
    keys = []
    for number, line in enumerate(_lines(path), 1):
        parsed = _parse(path, number, line)
        if parsed and any(_matches(pattern, name) for pattern in parsed[0]):
            keys.append(parsed[1])
    return keys


def same_key(a, b):
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


def check(where, trust_name, path, host, port, key):
    """Return if `key` is on record for host:port; otherwise raise: unknown keys and changed keys alike."""
    known = known_keys(path, host, port)
    if any(same_key(key, k) for k in known):
        return
    presented = f"{key.get_name()} {fingerprint(key)}"
    if not known:
        raise DeployError(where, f"unknown host key {presented} (not in {path}); check that fingerprint on the "
                                 f"machine itself (docs/ssh.md), then trust it with `invoke hosts.trust {trust_name}`")
    recorded = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in known)
    raise DeployError(where, f"HOST KEY CHANGED, refusing to connect (possible man-in-the-middle attack): the "
                             f"server presents {presented}, {path} has {recorded}; only if you know the machine was "
                             f"reinstalled, check the new fingerprint on it and run `invoke hosts.trust {trust_name}`")


@dataclass
class Trusted:
    name: str
    entry: str
    key_type: str
    fingerprint: str
    replaced: list


def trust(path, name, host, port, key):
    """Record `key` as the one key of host:port in `path` (replacing what was there), written atomically."""
    entry = entry_name(host, port)
    kept, replaced = [], []
    for number, line in enumerate(_lines(path), 1):
        parsed = _parse(path, number, line)
        if parsed and any(_matches(pattern, entry) for pattern in parsed[0]):
            if not same_key(parsed[1], key):
                replaced.append(f"{parsed[1].get_name()} {fingerprint(parsed[1])}")
            continue
        kept.append(line)
    comment = f" {name}" if name and name != entry else ""
    kept.append(f"{entry} {key.get_name()} {key.get_base64()}{comment}")
    write_atomic(path, "\n".join(kept) + "\n")
    return Trusted(name or entry, entry, key.get_name(), fingerprint(key), replaced)
