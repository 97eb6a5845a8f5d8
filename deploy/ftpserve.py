"""The built-in FTP server of the ftp-serve transport: the old machine pulls the staged files from us.

Windows 98's ftp.exe logs in, types `binary`, then `get`s each file in active mode (PORT). We serve only the staged
names, and FETCH.TXT and GET.BAT written for the address and port we listen on; read-only, never through a symbolic
link, refusing ASCII downloads (they turn every LF into CRLF), a few connections per client address at most; and stop
once every file went out completely.
"""

import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from deploy.atomic import write_atomic
from deploy.errors import DeployError

SCRIPT = "FETCH.TXT"
BATCH = "GET.BAT"
ANONYMOUS_PASSWORD = "guest"
READ_ONLY = "elr"
MAX_CONNECTIONS = 256           # in all
MAX_CONNECTIONS_PER_ADDRESS = 8  # ftp.exe needs one; a few more for a client that reconnects before the old one ends
WAIT_STEP = 0.2                  # waits are cut into steps this long, so that Ctrl-C is seen at once


# --- what to type on the old machine

def _host_port(our_address):
    if isinstance(our_address, str):
        return our_address, 21
    host, port = our_address
    return host, int(port or 21)


def _check_names(names):
    for name in names:
        if not name or any(c.isspace() for c in name) or "/" in name or "\\" in name:
            raise DeployError(name or "(empty name)", "cannot be fetched by ftp.exe: use a plain 8.3 name")


def fetch_commands(our_address, names, user=None):
    """The ftp commands after `ftp -n`, the same whether typed by hand or run from FETCH.TXT."""
    host, port = _host_port(our_address)
    # ftp.exe takes no port on its command line, so another port than 21 needs an `open` line.
    opening = [] if port == 21 else [f"open {host} {port}"]
    # A named user's password is never written down: ftp.exe asks for it.
    login = f"user {user}" if user else f"user anonymous {ANONYMOUS_PASSWORD}"
    return [*opening, login, "binary", *(f"get {name}" for name in names), "bye"]


def client_command(our_address):
    """The one command that runs FETCH.TXT on the old machine (GET.BAT holds the same line)."""
    host, port = _host_port(our_address)
    return f"ftp -n -s:{SCRIPT} {host}" if port == 21 else f"ftp -n -s:{SCRIPT}"


def typed_session(our_address, names, user=None):
    """Lines to type by hand the first time; they fetch FETCH.TXT and GET.BAT first (the StageServer serves them),
    so next time `GET` is enough."""
    host, port = _host_port(our_address)
    return [f"ftp -n {host}" if port == 21 else "ftp -n", *fetch_commands(our_address, [SCRIPT, BATCH, *names], user)]


def write_fetch_scripts(stage_dir, names, our_address, user=None):
    """Write FETCH.TXT (for `ftp -n -s:FETCH.TXT`) and GET.BAT into `stage_dir`, CRLF line ends; return their paths."""
    _check_names(names)
    stage_dir = Path(stage_dir)
    script = stage_dir / SCRIPT
    batch = stage_dir / BATCH
    write_atomic(script, "".join(f"{line}\r\n" for line in fetch_commands(our_address, names, user)).encode("ascii"))
    write_atomic(batch, f"@ECHO OFF\r\n{client_command(our_address)}\r\n".encode("ascii"))
    return [script, batch]


# --- the address the old machine talks to

def _guess_interface():
    """The first physical network interface (one with a device behind it), preferring one that is up."""
    net = Path("/sys/class/net")
    physical = sorted(p for p in net.glob("*") if (p / "device").exists()) if net.is_dir() else []
    for path in physical:
        if (path / "operstate").read_text().strip() == "up":
            return path.name
    return physical[0].name if physical else "IFACE"


def check_link_address(address, netmask=None, interface=None):
    """Raise DeployError unless this machine has `address` on an interface (binding to it is the test)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise DeployError(address, "not an IP address") from None
    if ip.is_loopback:
        return
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as error:
            if error.errno != errno.EADDRNOTAVAIL:
                raise DeployError(address, f"cannot listen there: {error.strerror}") from None
            default = 24 if ip.version == 4 else 64
            prefix = ipaddress.ip_network(f"{address}/{netmask or default}", strict=False).prefixlen
            raise DeployError(address, "this machine has no interface with this address; add it with: "
                              f"sudo ip addr add {address}/{prefix} dev {interface or _guess_interface()}") from None


# --- the server

@dataclass
class Transfer:
    file: str
    bytes: int
    seconds: float
    client: str
    offset: int = 0
    complete: bool = True


def _covers(ranges, size):
    """True when the [start, end) ranges together cover [0, size)."""
    reached = 0
    for start, end in sorted(ranges):
        if start > reached:
            return False
        reached = max(reached, end)
    return reached >= size


class _StageFS(AbstractedFS):
    """The stage directory showing only the served names, matched without regard to case as DOS users type them."""

    served = {}  # upper-case name -> real name, set per server

    def ftp2fs(self, ftppath):
        path = super().ftp2fs(ftppath)
        if os.path.dirname(path) == self.root:
            path = os.path.join(self.root, self.served.get(os.path.basename(path).upper(), os.path.basename(path)))
        return path

    def validpath(self, path):
        path = os.path.normpath(path)
        if path == os.path.normpath(self.root):
            return True
        # The real path as well: a served name that is (or became) a symbolic link is not followed, wherever it leads.
        return (os.path.dirname(path) == self.root and os.path.basename(path) in self.served.values()
                and os.path.realpath(path) == path)

    def listdir(self, path):
        if not self.validpath(path):
            return []
        return [name for name in super().listdir(path) if self.validpath(os.path.join(path, name))]

    listdirinfo = listdir


class _ProgressDTP(DTPHandler):
    """Reports each chunk handed to the network, with or without sendfile()."""

    def initiate_send(self):
        super().initiate_send()
        self.cmd_channel.report_progress(self)

    def initiate_sendfile(self):
        super().initiate_sendfile()
        self.cmd_channel.report_progress(self)


_WRITES = {"STOR", "STOU", "APPE", "DELE", "RNFR", "RNTO", "MKD", "XMKD", "RMD", "XRMD", "SITE", "MFMT"}
_READS = {"RETR", "SIZE", "MDTM", "LIST", "NLST", "MLST", "MLSD", "STAT", "CWD", "XCWD"}


class _StageHandler(FTPHandler):
    stage = None  # the StageServer, set per server
    dtp_handler = _ProgressDTP
    abstracted_fs = _StageFS
    permit_foreign_addresses = False
    auth_failed_timeout = 1
    banner = "llama2.c deploy: type binary, then get the files."
    _retr_offset = 0

    def pre_process_command(self, line, cmd, arg):
        # pyftpdlib refuses all of these too (perm "elr", a root with only the staged names); these answers say why.
        if cmd in _WRITES:
            self.respond("550 This server is read-only.")
        elif cmd in ("CDUP", "XCUP") or (cmd not in ("USER", "PASS") and ".." in arg.replace("\\", "/").split("/")):
            self.respond("550 '..' paths are not allowed here.")
        elif (self.authenticated and cmd in _READS and arg and not arg.startswith("-")
              and not self.fs.validpath(self.fs.ftp2fs(arg))):
            self.respond(f"550 No such file: {arg}. Served here: {', '.join(sorted(self.fs.served.values()))}.")
        else:
            super().pre_process_command(line, cmd, arg)

    def ftp_RETR(self, file):
        if self._current_type == "a":
            self.respond(f"550 Refused in ASCII mode, which would corrupt {os.path.basename(file)}: "
                         "type binary, then get it again.")
            return None
        self._retr_offset = self._restart_position
        return super().ftp_RETR(file)

    def on_connect(self):
        self.stage._sessions += 1

    def on_disconnect(self):
        self.stage._sessions -= 1

    def report_progress(self, dtp):
        if dtp.file_obj is not None and not dtp.receive:
            self.stage._progress(os.path.basename(dtp.file_obj.name), self._retr_offset + dtp.tot_bytes_sent)

    def log_transfer(self, cmd, filename, receive, completed, elapsed, bytes):
        super().log_transfer(cmd, filename, receive, completed, elapsed, bytes)
        if cmd == "RETR" and not receive:
            self.stage._record(Transfer(os.path.basename(filename), bytes, elapsed, self.remote_ip,
                                        self._retr_offset, completed))


class StageServer:
    """Serve `names` from `stage_dir` read-only over FTP; know when each went out completely at least once.

    It writes FETCH.TXT and GET.BAT into the stage for the address and port it listens on (`fetch_script`,
    `batch`), and serves them with `extras`, but never waits for them nor reports them. on_progress(name, bytes_sent,
    size) is called from the server thread."""

    def __init__(self, stage_dir, names, bind=("127.0.0.1", 0), user=None, password_env=None, stay=False,
                 on_progress=None, extras=()):
        self.stage_dir = Path(stage_dir).resolve()
        self.names = [name for name in names if name not in (SCRIPT, BATCH)]
        self.stay = stay
        self.on_progress = on_progress
        served = [name for name in dict.fromkeys([*self.names, *extras]) if name not in (SCRIPT, BATCH)]
        _check_names(served)
        self.sizes = {name: self._staged_size(name) for name in served}
        self._lock = threading.Lock()
        self._ranges = {name: [] for name in self.names}
        self._done = set()
        self._complete = threading.Event()
        if not self.names:
            self._complete.set()
        self._stopping = threading.Event()
        self._thread = None
        self._sessions = 0  # connected clients, counted in the server thread
        self.transfers = []

        authorizer = DummyAuthorizer()
        if user or password_env:
            if not (user and password_env):
                raise DeployError("ftp-serve", "a user needs password_env (the variable holding the password), "
                                  "and password_env needs a user")
            password = os.environ.get(password_env)
            if not password:
                raise DeployError(f"${password_env}", "is not set: it must hold the FTP password for " + user)
            authorizer.add_user(user, password, str(self.stage_dir), perm=READ_ONLY)
        else:
            authorizer.add_anonymous(str(self.stage_dir), perm=READ_ONLY)
        served += [SCRIPT, BATCH]
        fs = type("StageFS", (_StageFS,), {"served": {name.upper(): name for name in served}})
        handler = type("StageHandler", (_StageHandler,), {"stage": self, "authorizer": authorizer,
                                                          "abstracted_fs": fs})
        # pyftpdlib logs to stderr unless logging is configured: keep it quiet unless the caller configured it.
        if not logging.getLogger("pyftpdlib").handlers:
            logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())
        # Bind here rather than in pyftpdlib, whose error loses the errno that tells what went wrong.
        listener = socket.socket(socket.AF_INET6 if ":" in bind[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(tuple(bind))
        except OSError as error:
            listener.close()
            raise self._bind_error(bind, error) from None
        self._ioloop = IOLoop()
        self._server = FTPServer(listener, handler, ioloop=self._ioloop)
        self._server.max_cons, self._server.max_cons_per_ip = MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS
        self.fetch_script, self.batch = write_fetch_scripts(self.stage_dir, self.names, self.address, user)
        for name in (SCRIPT, BATCH):
            self.sizes[name] = self._staged_size(name)

    def _staged_size(self, name):
        path = self.stage_dir / name
        if not path.is_file():
            raise DeployError(path, "is not in the stage")
        if os.path.realpath(path) != str(path):
            raise DeployError(path, f"is a symbolic link (to {os.path.realpath(path)}); only files in the stage are "
                                    "served: stage a copy")
        return path.stat().st_size

    @staticmethod
    def _bind_error(bind, error):
        host, port = bind
        where = f"{host}:{port}"
        if error.errno == errno.EADDRNOTAVAIL:
            try:
                check_link_address(host)
            except DeployError as missing:
                return missing
        if error.errno == errno.EACCES and int(port) < 1024:
            return DeployError(where, "ports below 1024 need root: run with sudo, or pick a port above 1023 "
                               "(FETCH.TXT then opens it with `open ADDRESS PORT`)")
        if error.errno == errno.EADDRINUSE:
            return DeployError(where, "already in use: is another FTP server running?")
        return DeployError(where, f"cannot listen: {error.strerror}")

    @property
    def address(self):
        return self._server.address

    # called from the server thread
    def _progress(self, name, sent):
        if self.on_progress is not None and name in self._ranges:
            self.on_progress(name, sent, self.sizes[name])

    def _record(self, transfer):
        if transfer.file not in self._ranges:
            return
        with self._lock:
            self.transfers.append(transfer)
            ranges = self._ranges[transfer.file]
            ranges.append((transfer.offset, transfer.offset + transfer.bytes))
            ends_at_eof = transfer.offset + transfer.bytes >= self.sizes[transfer.file]
            # An aborted transfer still delivered its bytes (a resume continues from what arrived); the file counts
            # once a transfer reached the end and, with the earlier ones, covered every byte.
            if transfer.complete and ends_at_eof and _covers(ranges, self.sizes[transfer.file]):
                self._done.add(transfer.file)
            if self._done.issuperset(self.names):
                self._complete.set()

    def _run(self):
        try:
            while not self._stopping.is_set():
                self._ioloop.loop(timeout=0.05, blocking=False)
        finally:
            self._server.close_all()

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ftp-serve", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        else:
            self._server.close_all()

    def missing(self):
        with self._lock:
            return [name for name in self.names if name not in self._done]

    def is_complete(self):
        return self._complete.is_set()

    def wait_complete(self, timeout=None):
        """Wait until every name was sent completely at least once and return the summary; DeployError after
        `timeout` seconds. The server keeps running: stop() it. Ctrl-C interrupts the wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._complete.wait(WAIT_STEP if deadline is None else
                                      max(0.0, min(WAIT_STEP, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                host, port = self.address
                raise DeployError(f"ftp://{host}:{port}", f"timed out after {timeout:.0f} s; "
                                  f"not fetched completely: {', '.join(self.missing())}")
        return self.summary()

    def summary(self):
        """One Transfer per download so far, cut-off ones included."""
        with self._lock:
            return list(self.transfers)

    def serve_until_complete(self, timeout=None, linger=30):
        """Serve until every file went out completely (DeployError after `timeout` s), give the client up to `linger`
        s to say bye, then stop and return the summary. With `stay`, serve on until stop() or Ctrl-C. Ctrl-C stops
        the server and goes on as KeyboardInterrupt."""
        self.start()
        try:
            summary = self.wait_complete(timeout)
            if self.stay:
                while not self._stopping.wait(WAIT_STEP):
                    pass
                return self.summary()
            # So that ftp.exe ends with "221 Goodbye", not a dropped connection.
            deadline = time.monotonic() + linger
            while self._sessions and time.monotonic() < deadline:
                time.sleep(0.05)
            return summary
        finally:
            self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class RichProgress:
    """An on_progress callback drawing one rich progress bar per file; use as a context manager around serving."""

    def __init__(self, sizes, console=None):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), console=console)
        self.tasks = {name: self.progress.add_task(name, total=size) for name, size in sizes.items()}

    def __call__(self, name, sent, size):
        self.progress.update(self.tasks[name], completed=sent)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
