"""A throwaway OpenSSH server on 127.0.0.1 for tests and benchmarks, run as the current user.

`modern` uses an ed25519 host key and OpenSSH's default algorithms; `legacy` offers only what a Mac OS X 10.4 sshd
has in common with us (ssh-rsa host key, SHA-1 key exchange, aes128-cbc, hmac-sha1, ssh-rsa user keys) and, like
its sftp-server, no posix-rename.
"""

import contextlib
import getpass
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")

LEGACY = {
    "HostKeyAlgorithms": "ssh-rsa",
    "KexAlgorithms": "diffie-hellman-group14-sha1,diffie-hellman-group1-sha1",
    "Ciphers": "aes128-cbc",
    "MACs": "hmac-sha1",
    "PubkeyAcceptedAlgorithms": "ssh-rsa",
    "Subsystem": "sftp internal-sftp -P posix-rename",
}


def keygen(path, kind="ed25519"):
    """A new key pair at `path` (private) and `path`.pub; returns the private key's path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bits = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True, timeout=60)
    return path


def public_line(private_path):
    return Path(f"{private_path}.pub").read_text().strip()


def sshd_version():
    done = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, timeout=10)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stdout + done.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    host: str
    port: int
    user: str
    folder: Path
    host_key_path: Path
    log: Path

    def authorize(self, private_path):
        with open(self.folder / "authorized_keys", "a") as handle:
            handle.write(public_line(private_path) + "\n")


def _config(folder, port, host_keys, options):
    settings = {
        "Port": port, "ListenAddress": "127.0.0.1", "HostKey": [str(key) for key in host_keys],
        "AuthorizedKeysFile": folder / "authorized_keys", "PidFile": folder / "sshd.pid",
        "UsePAM": "no", "StrictModes": "no", "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no",
        "PermitRootLogin": "prohibit-password", "UseDNS": "no", "LogLevel": "VERBOSE",
        "Subsystem": "sftp internal-sftp",
    }
    if sshd_version() >= (9, 8):
        settings["PerSourcePenalties"] = "no"  # the tests fail logins on purpose; don't get locked out for it
    settings.update(options)
    text = "".join(f"{key} {value}\n" for key, values in settings.items()
                   for value in (values if isinstance(values, list) else [values]))
    (folder / "sshd_config").write_text(text)
    return folder / "sshd_config"


def _wait_for_banner(process, port, log, deadline):
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-2.0"):
                    return True
        time.sleep(0.05)
    raise RuntimeError(f"sshd on port {port} did not answer within the time limit: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def sshd(folder, host_key, options=None, start_timeout=15):
    """Run sshd with `host_key` (a private key path, or a list of them) and extra sshd_config `options`."""
    host_keys = host_key if isinstance(host_key, list) else [host_key]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "authorized_keys").touch()
    with contextlib.suppress(PermissionError):  # not root: sshd's log will say what is missing
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    log = folder / "sshd.log"
    deadline = time.monotonic() + start_timeout
    for _attempt in range(3):  # the free port may be taken between asking and binding
        port = free_port()
        config = _config(folder, port, host_keys, options or {})
        with open(log, "w") as handle:
            process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=handle,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if _wait_for_banner(process, port, log, deadline):
            break
    else:
        raise RuntimeError(f"sshd did not start: {log.read_text()[-2000:]}")
    try:
        yield Server("127.0.0.1", port, getpass.getuser(), folder, Path(host_keys[0]), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def modern(folder, host_key=None):
    folder = Path(folder)
    return sshd(folder, host_key or keygen(folder / "host_ed25519", "ed25519"))


def legacy(folder, host_key=None):
    folder = Path(folder)
    return sshd(folder, host_key or keygen(folder / "host_rsa", "rsa"), LEGACY)


def sshd_available():
    return SSHD.exists() and os.access(SSHD, os.X_OK)
