"""SSH and SFTP to the targets (paramiko): strict host keys, keys only by reference, resumable uploads checked against
the stage manifest before the rename.

Old sshds (Mac OS X 10.4/10.5) need SHA-1 key exchange, ssh-rsa host keys and CBC ciphers; those are allowed only
for a connection made with legacy=True.
"""

import contextlib
import logging
import os
import re
import select
import shlex
import socket
import time
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.ssh_exception import AuthenticationException, BadAuthenticationType, IncompatiblePeer, SSHException

from deploy import known_hosts
from deploy.errors import DeployError
from deploy.verify import Expected, Hasher, check, proves_prefix, sidecar_text

DEFAULT_KNOWN_HOSTS = known_hosts.DEFAULT_PATH
# paramiko logs handshake failures with a traceback from its own thread; the DeployError we raise says it in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

OLD_ALGORITHMS = {
    "kex": ["diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group-exchange-sha1"],
    "keys": ["ssh-rsa", "ssh-dss"],
    "ciphers": ["aes128-cbc", "aes192-cbc", "aes256-cbc", "3des-cbc"],
    "macs": ["hmac-sha1", "hmac-sha1-96", "hmac-md5", "hmac-md5-96"],
    "pubkeys": ["ssh-rsa", "ssh-dss"],
}
# An old sshd sends no server-sig-algs, and paramiko would then sign with RSA/SHA-2, which it does not know.
LEGACY_DISABLED = {"pubkeys": ["rsa-sha2-512", "rsa-sha2-256"]}

# Remote sha256 commands: GNU coreutils, and Perl's shasum (Mac OS X from 10.5 on). A host with neither (Mac OS X
# 10.4 has only md5) has the file read back over SFTP and hashed here.
HASH_TOOLS = (
    ("sha256sum", "sha256sum {path}"),
    ("shasum -a 256", "shasum -a 256 {path}"),
)
READ_BACK = "reading it back"
CHUNK = 1 << 20

RunResult = namedtuple("RunResult", "exit_status stdout stderr")


@dataclass
class Upload:
    remote_path: str
    size: int
    bytes_sent: int
    resumed_from: int
    verified_by: str  # the remote tool that hashed it, or READ_BACK
    seconds: float


def disabled_algorithms(legacy):
    return dict(LEGACY_DISABLED) if legacy else {kind: list(names) for kind, names in OLD_ALGORITHMS.items()}


class _Transport(paramiko.Transport):
    """Remembers which key exchange was agreed (paramiko drops its kex engine once done), for `Session.algorithms`."""

    kex_name = None

    def _parse_kex_init(self, m):
        super()._parse_kex_init(m)
        engine = type(self.kex_engine)
        self.kex_name = next((name for name in self.preferred_kex if self._kex_info.get(name) is engine), None)


def _reason(error):
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _handshake_error(where, error, legacy):
    if isinstance(error, IncompatiblePeer):
        what = re.sub(r"^.*\((?:no acceptable )?(.*)\)$", r"\1", str(error))
        if legacy:
            return DeployError(where, f"no {what} in common with the server, even with legacy algorithms allowed")
        return DeployError(where, f"no {what} in common with the server: it looks like an old sshd (Mac OS X "
                                  f"10.4/10.5 and the like); allow its old algorithms with legacy=True "
                                  f"(`legacy: true` for this host)")
    return DeployError(where, f"SSH handshake failed: {_reason(error)}")


def _open_transport(where, host, port, legacy, timeout, prefer=()):
    """A started (key-exchanged, not authenticated) transport; `prefer` host key types are asked for first."""
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as error:
        raise DeployError(where, f"cannot connect to {host}:{port}: {_reason(error)}") from None
    transport = _Transport(sock, disabled_algorithms=disabled_algorithms(legacy))
    transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
    if prefer:
        # As ssh does: ask for the key type on record, so a host with several keys isn't mistaken for a changed one.
        options = transport.get_security_options()
        wanted = [name for name in options.key_types if any(_algorithm_of(name, kind) for kind in prefer)]
        options.key_types = wanted + [name for name in options.key_types if name not in wanted]
    try:
        transport.start_client(timeout=timeout)
    except (SSHException, EOFError, OSError) as error:
        transport.close()
        raise _handshake_error(where, error, legacy) from None
    return transport


def _algorithm_of(algorithm, key_type):
    return algorithm == key_type or (key_type == "ssh-rsa" and algorithm.startswith("rsa-sha2-"))


def fetch_host_key(host, port, legacy=False, timeout=15):
    """(key type, SHA256 fingerprint, key) of the host key the server presents, for `invoke hosts.trust`."""
    transport = _open_transport(f"{host}:{port}", host, port, legacy, timeout)
    try:
        key = transport.get_remote_server_key()
    finally:
        transport.close()
    return key.get_name(), known_hosts.fingerprint(key), key


def trust_host(name_or_host, host, port, key, known_hosts_path=DEFAULT_KNOWN_HOSTS, expected_fingerprint=None,
               show=True):
    """Record `key` for host:port in the known_hosts file (replacing the old key), and show what was recorded.

    With `expected_fingerprint` (SHA256:... or MD5:aa:bb:...) the key is recorded only if it matches."""
    sha256, md5 = known_hosts.fingerprint(key), known_hosts.md5_fingerprint(key)
    if expected_fingerprint and expected_fingerprint not in (sha256, md5):
        raise DeployError(name_or_host, f"the server presents {key.get_name()} {sha256} ({md5}), not the "
                                        f"expected {expected_fingerprint}; nothing recorded")
    trusted = known_hosts.trust(known_hosts_path, name_or_host, host, port, key)
    if show:
        from deploy.console import console

        say = dict(markup=False, emoji=False, soft_wrap=True)
        for old in trusted.replaced:
            console.print(f"{trusted.name}: replacing {old}", style="yellow", **say)
        console.print(f"{trusted.name} ({trusted.entry}): {trusted.key_type} {sha256}", **say)
        console.print(f"  also known as {md5}; recorded in {known_hosts_path}", style="dim", **say)
    return trusted


def trust_inventory_host(host, fingerprint=None, known_hosts_path=DEFAULT_KNOWN_HOSTS, show=True):
    """`invoke hosts.trust`: fetch the key an inventory host presents and record it (only if it matches
    `fingerprint`, when given). A host without SSH is a one-line DeployError."""
    if host.connection != "sftp":
        how = {"adb": "adb", "ftp-serve": "FTP (it fetches from us)", "ftp-push": "FTP",
               "emulator": "nothing: it is emulated on this machine", "manual": "nothing: files go by hand"}
        raise DeployError(host.name, f"host {host.name} connects by {how.get(host.connection, host.connection)}; "
                                     f"it has no SSH, so there is no host key to trust")
    if not host.get("address"):
        raise DeployError(host.name, "has no address to connect to: set `address:` in the inventory")
    port, legacy = host.get("port", 22), bool((host.get("ssh") or {}).get("legacy"))
    key = fetch_host_key(host["address"], port, legacy=legacy)[2]
    return trust_host(host.name, host["address"], port, key, known_hosts_path, expected_fingerprint=fingerprint,
                      show=show)


def _load_key(key_file):
    where = str(key_file)
    try:
        return paramiko.PKey.from_path(str(Path(key_file).expanduser()))
    except FileNotFoundError:
        raise DeployError(where, "key file not found") from None
    except TypeError as error:  # from cryptography: a passphrase-protected key and no passphrase
        if "encrypted" in str(error) or "password" in str(error).lower():
            raise DeployError(where, f"the key is protected by a passphrase: load it into ssh-agent "
                                     f"(ssh-add {key_file}) and connect with the agent instead") from None
        raise DeployError(where, f"cannot read the key: {error}") from None
    except (ValueError, SSHException, OSError) as error:
        raise DeployError(where, f"not a private key that paramiko can read ({_reason(error)})") from None


def _credentials(where, key_file, use_agent):
    """The keys to try in order (the key file's first), and the agent to close afterwards. Raises if none."""
    keys = [_load_key(key_file)] if key_file else []
    agent = None
    if use_agent:
        agent = paramiko.Agent()
        keys += list(agent.get_keys())
    if keys:
        return keys, agent
    if agent:
        agent.close()
    if not use_agent:
        raise DeployError(where, "no credentials: give a key file, or allow the ssh-agent")
    socket_path = os.environ.get("SSH_AUTH_SOCK")
    if not socket_path:
        raise DeployError(where, "no credentials: no key file given and no ssh-agent (SSH_AUTH_SOCK is not set)")
    raise DeployError(where, f"no credentials: no key file given and the ssh-agent at {socket_path} has no keys "
                             f"or is not running (ssh-add -l)")


def _authenticate(where, transport, user, keys, key_file):
    for key in keys:
        try:
            more = transport.auth_publickey(user, key)
            if more:
                raise DeployError(where, f"the server wants more than a key for user {user} ({', '.join(more)})")
            return
        except BadAuthenticationType as error:
            raise DeployError(where, f"the server does not accept keys for user {user} "
                                     f"(it allows: {', '.join(error.allowed_types) or 'nothing'})") from None
        except AuthenticationException:
            continue
        except (SSHException, EOFError, OSError) as error:
            raise DeployError(where, f"authentication for user {user} broke off: {_reason(error)}") from None
    agent_keys = len(keys) - (1 if key_file else 0)
    tried = " and ".join(part for part in (key_file and f"key {key_file}",
                                           agent_keys and f"the {agent_keys} ssh-agent key(s)") if part)
    raise DeployError(where, f"authentication failed for user {user} with {tried}")


def connect(host, port, user, key_file=None, use_agent=True, legacy=False, known_hosts_path=DEFAULT_KNOWN_HOSTS,
            timeout=15, name=None):
    """An authenticated Session, or a one-line DeployError naming the host (`name`, else host:port)."""
    where = name or f"{host}:{port}"
    keys, agent = _credentials(where, key_file, use_agent)
    try:
        prefer = {key.get_name() for key in known_hosts.known_keys(known_hosts_path, host, port)}
        transport = _open_transport(where, host, port, legacy, timeout, prefer)
        try:
            known_hosts.check(where, where, known_hosts_path, host, port, transport.get_remote_server_key())
            _authenticate(where, transport, user, keys, key_file)
        except BaseException:
            transport.close()
            raise
    finally:
        if agent:
            agent.close()
    transport.set_keepalive(30)
    return Session(transport, where, user, timeout)


def parse_digest(output):
    """The sha256 hex digest in a tool's output: `HEX  file` (sha256sum, shasum) or `SHA256 (file) = HEX` (BSD)."""
    found = None
    for line in output.splitlines():
        match = re.match(r"\\?([0-9a-fA-F]{64})(?:\s|$)", line) or re.search(r"= ([0-9a-fA-F]{64})\s*$", line)
        if match:
            found = match.group(1).lower()
    return found


def sidecar_path(part):
    """Beside `X.part`, the sha256 and size of the file being sent there (deploy.verify)."""
    return part + ".src"


def _text(parts):
    return b"".join(parts).decode("utf-8", errors="replace")


def _quote(path):
    return shlex.quote("./" + path if path.startswith("-") else path)


class Session:
    """One authenticated SSH connection: remote commands and SFTP uploads."""

    def __init__(self, transport, where, user, timeout=15):
        self.transport = transport
        self.where = where
        self.user = user
        self.timeout = timeout
        self.hash_tools = HASH_TOOLS
        self._sftp = None

    @property
    def algorithms(self):
        """What was negotiated: kex, host_key, cipher, mac."""
        t = self.transport
        return {"kex": t.kex_name, "host_key": t.host_key_type, "cipher": t.local_cipher, "mac": t.local_mac}

    @property
    def sftp(self):
        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self.transport)
            except (SSHException, EOFError, OSError) as error:
                raise DeployError(self.where, f"the SFTP subsystem is not available: {_reason(error)}") from None
        return self._sftp

    def run(self, command, timeout=None, echo=None):
        """Run `command` in the remote login shell; (exit status, stdout, stderr) as text. -1: no status was sent.
        `echo(data, is_stderr)` sees the output as it comes."""
        try:
            channel = self.transport.open_session(timeout=self.timeout)
            channel.exec_command(command)
            channel.shutdown_write()
        except (SSHException, EOFError, OSError) as error:
            raise DeployError(self.where, f"cannot run `{command}`: {_reason(error)}") from None
        out, err = [], []
        deadline = None if timeout is None else time.monotonic() + timeout
        with channel:
            # Drain both streams as they come: a command that fills one stream's window would otherwise stall.
            while True:
                busy = False
                if channel.recv_ready():
                    out.append(channel.recv(CHUNK))
                    busy = echo is None or echo(out[-1], False) or True
                if channel.recv_stderr_ready():
                    err.append(channel.recv_stderr(CHUNK))
                    busy = echo is None or echo(err[-1], True) or True
                if busy:
                    continue
                if channel.closed or (channel.eof_received and channel.exit_status_ready()):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise DeployError(self.where, f"`{command}` still running after {timeout:g} s; gave up on it")
                select.select([channel], [], [], 0.05)
            status = channel.recv_exit_status()
        return RunResult(status, _text(out), _text(err))

    def upload(self, local_path, remote_path, on_progress=None, expected=None):
        """Send a file to `remote_path` via `remote_path.part`, check its size and sha256 there against `expected`
        (a StagedFile of the manifest; by default the local file's, hashed first), then rename it into place.

        A `.part` left by an interrupted upload is continued when its sidecar (`.part.src`) names the same file.
        on_progress(bytes_so_far, total) counts the whole file, so a resumed upload starts part way."""
        local_path, remote_path = Path(local_path), str(remote_path)
        expected = Expected.of(expected or local_path)
        part = remote_path + ".part"
        started = time.monotonic()
        offset = self._resume_offset(part, expected)
        sent = self._send(local_path, part, offset, expected.size, on_progress)
        verified_by = self._verify(part, expected)
        self._rename(part, remote_path)
        self._discard(sidecar_path(part))
        return Upload(remote_path, expected.size, sent, offset, verified_by, time.monotonic() - started)

    def _sftp_error(self, doing, error):
        return DeployError(self.where, f"{doing}: {_reason(error)}")

    def _resume_offset(self, part, expected):
        """The .part's size when its sidecar names this very file; else 0, with no .part left and a sidecar that
        names this file."""
        try:
            have = self.sftp.stat(part).st_size
        except FileNotFoundError:
            have = None
        except (IOError, SSHException, EOFError) as error:
            raise self._sftp_error(f"cannot look at {part}", error) from None
        try:
            if have is not None:
                try:
                    with self.sftp.open(sidecar_path(part), "rb") as sidecar:
                        text = sidecar.read(200).decode("ascii", "replace")
                except FileNotFoundError:
                    text = None
                if proves_prefix(text, have, expected):
                    return have
                self.sftp.remove(part)  # gone before the sidecar names another file
            with self.sftp.open(sidecar_path(part), "wb") as sidecar:
                sidecar.write(sidecar_text(expected).encode("ascii"))
        except (IOError, SSHException, EOFError) as error:
            raise self._sftp_error(f"cannot prepare {part}", error) from None
        return 0

    def _send(self, local_path, part, offset, size, on_progress):
        done = offset
        try:
            with self.sftp.open(part, "r+b" if offset else "wb") as remote, open(local_path, "rb") as local:
                remote.set_pipelined(True)  # don't wait for each write's acknowledgement
                remote.seek(offset)
                local.seek(offset)
                if on_progress:
                    on_progress(done, size)
                while block := local.read(CHUNK):
                    remote.write(block)
                    done += len(block)
                    if on_progress:
                        on_progress(done, size)
        except (IOError, SSHException, EOFError) as error:
            raise self._sftp_error(f"uploading {local_path} to {part} stopped after {done} of {size} bytes "
                                   f"(run again to resume)", error) from None
        return done - offset

    def _verify(self, part, expected):
        """Check the .part's size and sha256 against `expected`; return how the sha256 was obtained."""
        try:
            have = self.sftp.stat(part).st_size
        except (IOError, SSHException, EOFError) as error:
            raise self._sftp_error(f"cannot look at {part}", error) from None
        digest, how = None, READ_BACK
        if have == expected.size:
            digest, how = self._remote_sha256(part, have)
        try:
            check(f"{self.where}: {part}", expected, have, digest, how)
        except DeployError as error:
            self._discard(part)
            self._discard(sidecar_path(part))
            raise DeployError(f"{error}; removed it, so the next run sends it afresh") from None
        return how

    def _remote_sha256(self, part, size):
        # Hashing can take a while on an old machine: allow for 1 MiB/s.
        timeout = 120 + size / (1 << 20)
        for label, template in self.hash_tools:
            status, out, _ = self.run(template.format(path=_quote(part)), timeout=timeout)
            digest = parse_digest(out) if status == 0 else None
            if digest is not None:
                # Ask the tool that worked first next time.
                self.hash_tools = ((label, template),) + tuple(t for t in self.hash_tools if t[0] != label)
                return digest, label
        hasher = Hasher()
        try:
            with self.sftp.open(part, "rb") as remote:
                remote.prefetch(size)
                while block := remote.read(CHUNK):
                    hasher(block)
        except (IOError, SSHException, EOFError) as error:
            raise self._sftp_error(f"cannot read {part} back to check it", error) from None
        return hasher.hexdigest(), READ_BACK

    def _discard(self, part):
        with contextlib.suppress(IOError, SSHException, EOFError):
            self.sftp.remove(part)

    def _rename(self, part, final):
        try:
            self.sftp.posix_rename(part, final)
            return
        except IOError:
            pass  # sftp-server before OpenSSH 4.8 (Mac OS X 10.4) lacks posix-rename; plain rename won't replace
        with contextlib.suppress(DeployError):  # mv renames atomically too, where the host lets us run it
            if self.run(f"mv -f {_quote(part)} {_quote(final)}", timeout=self.timeout * 4).exit_status == 0:
                return
        try:
            with contextlib.suppress(FileNotFoundError):
                self.sftp.remove(final)
            self.sftp.rename(part, final)
        except (IOError, SSHException, EOFError) as error:
            raise self._sftp_error(f"cannot rename {part} to {final}", error) from None

    def close(self):
        if self._sftp is not None:
            self._sftp.close()
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def progress_bar(description):
    """A rich progress bar; yields an on_progress callback for Session.upload."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    from deploy.console import console

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)
