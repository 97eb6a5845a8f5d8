"""The ftp-serve server and FTP push, against real clients and servers on 127.0.0.1 only."""

import ftplib
import hashlib
import io
import os
import random
import shutil
import socket
import subprocess
import threading

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from deploy.errors import DeployError
from deploy.ftppush import push_files, sidecar_name, temp_name
from deploy.ftpserve import (BATCH, SCRIPT, StageServer, check_link_address, client_command, typed_session,
                             write_fetch_scripts)

LOCAL = "127.0.0.1"
NAMES = ["RUN.EXE", "MODEL.BIN", "TOK.BIN"]
# A command-line client from Debian: inetutils-ftp (the classic BSD client, active by default like Windows 98's
# ftp.exe) or tnftp; both are run with -A (active mode), -n (no auto-login) and -v, reading commands on stdin.
FTP_CLIENT = next(filter(None, map(shutil.which, ("inetutils-ftp", "tnftp", "ftp"))), None)
needs_client = pytest.mark.skipif(FTP_CLIENT is None,
                                  reason="no command-line FTP client: apt-get install inetutils-ftp (or tnftp)")


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lf_rich(size, seed):
    """Random bytes with one LF in every 16 or so: an ASCII-mode transfer would change them."""
    data = bytearray(random.Random(seed).randbytes(size))
    data[::16] = b"\n" * len(data[::16])
    return bytes(data)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage")
    (folder / "RUN.EXE").write_bytes(lf_rich(300_000, 1))
    (folder / "MODEL.BIN").write_bytes(lf_rich(8 << 20, 2))  # larger than a loopback socket's send buffer (4 MiB)
    (folder / "TOK.BIN").write_bytes(lf_rich(70_000, 3))
    (folder / "SECRET.TXT").write_text("not staged\n")
    (folder / "SUB").mkdir()
    (folder / "SUB" / "INNER.TXT").write_text("not staged either\n")
    return folder


@pytest.fixture
def server(stage):
    with StageServer(stage, NAMES, bind=(LOCAL, 0)) as running:
        yield running


class ActiveFTP(ftplib.FTP):
    """ftplib in active mode (PORT), listening on loopback only, optionally with a small receive buffer."""

    rcvbuf = None

    def makeport(self):
        listener = socket.socket()
        if self.rcvbuf:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        listener.bind((LOCAL, 0))
        listener.listen(1)
        self.sendport(*listener.getsockname())
        listener.settimeout(self.timeout)
        return listener


def connect(address, cls=ftplib.FTP, user="anonymous", password="guest"):
    ftp = cls(timeout=10)
    try:
        ftp.connect(*address)
        ftp.login(user, password)
    except ftplib.Error:
        ftp.close()
        raise
    if cls is ActiveFTP:
        ftp.set_pasv(False)
    return ftp


def fetch(ftp, name, target, rest=None):
    with open(target, "ab" if rest else "wb") as handle:
        ftp.retrbinary(f"RETR {name}", handle.write, rest=rest)


def run_client(script_lines, cwd):
    """The command-line client in active mode, reading the commands on stdin as ftp.exe reads FETCH.TXT."""
    stdin = "".join(f"{line}\n" for line in script_lines).encode()
    result = subprocess.run([FTP_CLIENT, "-A", "-n", "-v"], input=stdin, cwd=cwd, capture_output=True, timeout=30)
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


# --- the scripts for the old machine

def test_fetch_scripts_are_crlf_and_hold_no_password(tmp_path):
    script, batch = write_fetch_scripts(tmp_path, NAMES, "192.168.1.1")
    assert script.read_bytes() == (b"user anonymous guest\r\nbinary\r\nget RUN.EXE\r\nget MODEL.BIN\r\n"
                                   b"get TOK.BIN\r\nbye\r\n")
    assert batch.read_bytes() == b"@ECHO OFF\r\nftp -n -s:FETCH.TXT 192.168.1.1\r\n"
    assert client_command("192.168.1.1") == "ftp -n -s:FETCH.TXT 192.168.1.1"

    script, batch = write_fetch_scripts(tmp_path, NAMES, ("192.168.1.1", 2121), user="deploy")
    lines = script.read_bytes().split(b"\r\n")
    assert lines[:3] == [b"open 192.168.1.1 2121", b"user deploy", b"binary"]
    assert b"ftp -n -s:FETCH.TXT\r\n" in batch.read_bytes()
    assert not list(tmp_path.glob(".*.part"))
    # The first time the scripts come first, so the session ends with the files the server waits for.
    assert typed_session(("192.168.1.1", 2121), NAMES) == [
        "ftp -n", "open 192.168.1.1 2121", "user anonymous guest", "binary", f"get {SCRIPT}", f"get {BATCH}",
        *(f"get {name}" for name in NAMES), "bye"]

    with pytest.raises(DeployError, match="8.3"):
        write_fetch_scripts(tmp_path, ["MY MODEL.BIN"], "192.168.1.1")


@needs_client
def test_command_line_client_follows_fetch_txt_in_active_mode(stage, tmp_path):
    seen = {}
    # The scripts may be listed with the files to fetch: they are served, but never waited for.
    with StageServer(stage, [*NAMES, SCRIPT, BATCH],
                     on_progress=lambda name, sent, size: seen.__setitem__(name, (sent, size))) as running:
        assert running.fetch_script.read_bytes().startswith(f"open {LOCAL} {running.address[1]}\r\n".encode())
        # inetutils-ftp takes CR as part of a command, ftp.exe does not: give it the same lines with LF ends.
        output = run_client(running.fetch_script.read_text().splitlines(), tmp_path)
        summary = running.wait_complete(10)
    assert "Active data connection" in output  # PORT, not PASV
    for name in NAMES:
        assert sha256(tmp_path / name) == sha256(stage / name), name
        assert seen[name] == ((stage / name).stat().st_size,) * 2
    assert {t.file for t in summary} == set(NAMES)
    assert set(seen) == set(NAMES)


@needs_client
def test_command_line_client_in_ascii_mode_is_refused(server, stage, tmp_path):
    host, port = server.address
    # inetutils-ftp switches to binary by itself on a UNIX server; `ascii` puts it where ftp.exe starts.
    output = run_client([f"open {host} {port}", "user anonymous guest", "ascii", "get MODEL.BIN", "bye"], tmp_path)
    assert "550 Refused in ASCII mode" in output and "type binary" in output
    # The client creates no local file when the server refuses: nothing corrupted is left behind.
    assert not (tmp_path / "MODEL.BIN").exists()
    assert server.summary() == [] and not server.is_complete()


def test_ascii_retr_refused_and_binary_passive_works(server, stage, tmp_path):
    ftp = connect(server.address)
    with pytest.raises(ftplib.error_perm, match="550.*binary"):
        ftp.retrlines("RETR TOK.BIN", lambda line: None)
    fetch(ftp, "TOK.BIN", tmp_path / "TOK.BIN")  # retrbinary sends TYPE I; ftplib is in passive mode
    ftp.quit()
    assert sha256(tmp_path / "TOK.BIN") == sha256(stage / "TOK.BIN")


def test_read_only_and_nothing_outside_the_stage(server, stage):
    before = sorted(p.name for p in stage.iterdir())
    ftp = connect(server.address, ActiveFTP)
    assert sorted(ftp.nlst()) == sorted([*NAMES, SCRIPT, BATCH])
    refused = [lambda: ftp.storbinary("STOR NEW.BIN", io.BytesIO(b"data")),
               lambda: ftp.storbinary("APPE TOK.BIN", io.BytesIO(b"data")),
               lambda: ftp.storbinary("STOU", io.BytesIO(b"data")),
               lambda: ftp.delete("TOK.BIN"), lambda: ftp.mkd("NEWDIR"), lambda: ftp.rmd("SUB"),
               lambda: ftp.rename("TOK.BIN", "X.BIN"), lambda: ftp.sendcmd("SITE CHMOD 777 TOK.BIN"),
               lambda: ftp.cwd(".."), lambda: ftp.cwd("SUB"), lambda: ftp.cwd("/tmp"), lambda: ftp.sendcmd("CDUP"),
               lambda: ftp.size("../MODEL.BIN"), lambda: ftp.size("SECRET.TXT"),
               lambda: ftp.retrbinary("RETR SECRET.TXT", lambda b: None),
               lambda: ftp.retrbinary("RETR SUB/INNER.TXT", lambda b: None)]
    for attempt in refused:
        ftp.voidcmd("TYPE I")
        with pytest.raises(ftplib.error_perm, match="^5"):
            attempt()
    with pytest.raises(ftplib.error_perm, match="550 This server is read-only"):
        ftp.storbinary("STOR TOK.BIN", io.BytesIO(b"data"))
    assert ftp.size("model.bin") == (stage / "MODEL.BIN").stat().st_size  # names match without regard to case
    ftp.quit()
    assert sorted(p.name for p in stage.iterdir()) == before
    assert (stage / "TOK.BIN").read_bytes() == lf_rich(70_000, 3)


def test_cut_transfer_resumes_with_rest_and_counts_complete(stage, tmp_path):
    size = (stage / "MODEL.BIN").stat().st_size
    with StageServer(stage, ["MODEL.BIN"]) as running:
        ftp = connect(running.address, ActiveFTP)
        ftp.rcvbuf = 64 << 10  # with a 4 MiB send buffer at most, the server cannot have sent all 8 MiB
        received = bytearray()

        class Cut(Exception):
            pass

        def keep(block):
            received.extend(block)
            if len(received) >= 1 << 20:
                raise Cut

        with pytest.raises(Cut):
            ftp.retrbinary("RETR MODEL.BIN", keep)
        ftp.close()
        (tmp_path / "MODEL.BIN").write_bytes(received)
        with pytest.raises(DeployError, match="timed out after 0 s; not fetched completely: MODEL.BIN"):
            running.wait_complete(0.2)

        ftp = connect(running.address, ActiveFTP)
        fetch(ftp, "MODEL.BIN", tmp_path / "MODEL.BIN", rest=len(received))
        ftp.quit()
        assert running.wait_complete(10)
    assert sha256(tmp_path / "MODEL.BIN") == sha256(stage / "MODEL.BIN")
    [cut] = [t for t in running.summary() if not t.complete]
    [resumed] = [t for t in running.summary() if t.complete]
    assert len(received) <= cut.bytes < size
    assert resumed.offset == len(received) and resumed.bytes == size - len(received)


def test_stops_by_itself_after_every_file_went_out_once(stage, tmp_path):
    running = StageServer(stage, NAMES)
    summary = []
    serving = threading.Thread(target=lambda: summary.extend(running.serve_until_complete(timeout=30)))
    serving.start()
    ftp = connect(running.address, ActiveFTP)
    for name in NAMES:
        fetch(ftp, name, tmp_path / name)
    ftp.quit()
    serving.join(15)
    assert not serving.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(running.address, timeout=2).close()
    assert [(t.file, t.bytes, t.client) for t in summary] == [
        (name, (stage / name).stat().st_size, LOCAL) for name in NAMES]
    assert all(t.seconds >= 0 and t.complete for t in summary)


def test_gives_up_after_timeout_naming_the_missing_files(stage):
    running = StageServer(stage, NAMES)
    with pytest.raises(DeployError, match="not fetched completely: RUN.EXE, MODEL.BIN, TOK.BIN"):
        running.serve_until_complete(timeout=0.2)


def test_password_from_environment(stage, monkeypatch):
    monkeypatch.delenv("TEST_FTP_PASSWORD", raising=False)
    with pytest.raises(DeployError, match=r"\$TEST_FTP_PASSWORD: is not set"):
        StageServer(stage, NAMES, user="deploy", password_env="TEST_FTP_PASSWORD")
    monkeypatch.setenv("TEST_FTP_PASSWORD", "s3cret")
    with StageServer(stage, NAMES, user="deploy", password_env="TEST_FTP_PASSWORD") as running:
        connect(running.address, user="deploy", password="s3cret").quit()
        for user, password in (("deploy", "wrong"), ("anonymous", "guest")):
            with pytest.raises(ftplib.error_perm, match="530"):
                connect(running.address, user=user, password=password)


def test_link_address():
    check_link_address(LOCAL)
    check_link_address("127.8.9.10")
    with pytest.raises(DeployError, match=r"192\.0\.2\.55: .*ip addr add 192\.0\.2\.55/24 dev eth9"):
        check_link_address("192.0.2.55", interface="eth9")
    with pytest.raises(DeployError, match=r"ip addr add 192\.0\.2\.55/16 dev"):
        check_link_address("192.0.2.55", netmask="255.255.0.0")
    with pytest.raises(DeployError, match="ip addr add"):
        StageServer(".", [], bind=("192.0.2.55", 0))


# --- push: a writable pyftpdlib server in a temporary folder is the old machine

class Target:
    """A writable FTP server on loopback that can drop the connection once a transfer has received `cut_after` bytes."""

    def __init__(self, root, perm="elradfmw", size_command=True, offer_hash=False):
        self.root = root
        self.cuts = 0
        self.cut_after = None
        self.offer_hash = offer_hash  # the HASH command of draft-bryan-ftpext-hash, SHA-256 only
        self.hashed = []      # names hashed by HASH
        self.read_back = []   # names downloaded (RETR)
        self.stored = []      # names written by STOR/APPE
        self.renamed = []     # (from, to, size of the file when renamed)
        target = self

        class CuttingDTP(DTPHandler):
            def handle_read(self):
                super().handle_read()
                if target.cut_after is not None and self.tot_bytes_received >= target.cut_after and target.cuts:
                    target.cuts -= 1
                    self.cmd_channel.close()  # the line dropped: no reply, both connections gone

            handle_read_event = handle_read  # pyftpdlib calls this alias, bound to its own handle_read

        class Handler(FTPHandler):
            dtp_handler = CuttingDTP
            auth_failed_timeout = 0

            proto_cmds = {**FTPHandler.proto_cmds,
                          "HASH": dict(perm="r", auth=True, arg=True, help="Syntax: HASH <SP> file-name")}

            def log_transfer(self, cmd, filename, receive, completed, elapsed, bytes):
                (target.stored if receive else target.read_back).append(os.path.basename(filename))

            def ftp_FEAT(self, line):
                self._extra_feats = ["HASH SHA-256*"] if target.offer_hash else []
                return super().ftp_FEAT(line)

            def ftp_OPTS(self, line):
                if target.offer_hash and line.upper() == "HASH SHA-256":
                    return self.respond("200 SHA-256")
                return super().ftp_OPTS(line)

            def ftp_HASH(self, path):
                if not target.offer_hash:
                    return self.respond("502 Command not implemented.")
                target.hashed.append(os.path.basename(path))
                size = os.path.getsize(path)
                self.respond(f"213 SHA-256 0-{size} {hashlib.sha256(open(path, 'rb').read()).hexdigest()} "
                             f"{os.path.basename(path)}")

            def ftp_RNTO(self, path):
                target.renamed.append((os.path.basename(self._rnfr), os.path.basename(path),
                                       os.path.getsize(self._rnfr)))
                return super().ftp_RNTO(path)

            def ftp_SIZE(self, path):
                if not size_command:
                    return self.respond("502 Command not implemented.")
                return super().ftp_SIZE(path)

        authorizer = DummyAuthorizer()
        authorizer.add_user("old", "machine", str(root), perm=perm)
        Handler.authorizer = authorizer
        self.ioloop = IOLoop()
        self.server = FTPServer((LOCAL, 0), Handler, ioloop=self.ioloop)
        self.address = self.server.address
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            self.ioloop.loop(timeout=0.05, blocking=False)
        self.server.close_all()

    def stop(self):
        self.stopping.set()
        self.thread.join(10)


@pytest.fixture
def target(tmp_path):
    root = tmp_path / "remote"
    root.mkdir()
    running = Target(root)
    yield running
    running.stop()


def push(target, files, **options):
    return push_files(*target.address, files, user="old", password="machine", timeout=10, **options)


def test_temp_names_are_8_3():
    names = ("MODEL.BIN", "TOKENIZR.BIN", "RUN.EXE", "README", "model.q8.bin")
    assert [temp_name(n) for n in names] == ["~MODEL.BIN", "~TOKENIZ.BIN", "~RUN.EXE", "~README", "~model.q8.bin"]
    assert [sidecar_name(n) for n in names] == ["~MODEL.~BI", "~TOKENIZ.~BI", "~RUN.~EX", "~README.~",
                                                "~model.q8.bin.src"]


def test_push_renames_complete_files_and_skips_same_size(target, stage):
    files = [stage / name for name in NAMES]
    progress = {}
    results = push(target, files, on_progress=lambda name, done, size: progress.__setitem__(name, (done, size)))
    for name in NAMES:
        assert sha256(target.root / name) == sha256(stage / name)
        assert progress[name] == ((stage / name).stat().st_size,) * 2
    assert sorted(p.name for p in target.root.iterdir()) == sorted(NAMES)
    # Each file went up under its temporary name after its sidecar, and was read back before the rename.
    assert target.stored == [n for name in NAMES for n in (sidecar_name(name), temp_name(name))]
    assert target.read_back == [temp_name(n) for n in NAMES]
    assert [(r.skipped, r.verified_by) for r in results] == [(False, "reading it back")] * 3

    again = push(target, files, skip_existing=True)
    assert [(r.skipped, r.bytes) for r in again] == [(True, 0)] * 3
    (target.root / "TOK.BIN").write_bytes(b"x" * (stage / "TOK.BIN").stat().st_size)  # same size, other bytes
    assert [r.skipped for r in push(target, files, skip_existing=True)] == [True, True, False]
    assert sha256(target.root / "TOK.BIN") == sha256(stage / "TOK.BIN")
    replaced = push(target, files[:1])  # an existing final name is replaced
    assert replaced[0].bytes == (stage / "RUN.EXE").stat().st_size


def test_push_cut_midway_leaves_only_the_temporary_name_then_resumes(target, stage):
    model = stage / "MODEL.BIN"
    size = model.stat().st_size
    target.cut_after, target.cuts = 1 << 20, 1
    with pytest.raises(DeployError, match=rf"127\.0\.0\.1:{target.address[1]}/MODEL.BIN: connection lost"):
        push(target, [model], retries=0)
    partial = target.root / "~MODEL.BIN"
    assert not (target.root / "MODEL.BIN").exists()
    assert 1 << 20 <= partial.stat().st_size < size
    assert partial.read_bytes() == model.read_bytes()[:partial.stat().st_size]
    assert (target.root / "~MODEL.~BI").read_text().split() == [sha256(model), str(size)]

    kept = partial.stat().st_size
    [result] = push(target, [model])
    assert result.resumed_from == kept
    assert result.bytes == size - result.resumed_from
    assert sha256(target.root / "MODEL.BIN") == sha256(model)
    assert sorted(p.name for p in target.root.iterdir()) == ["MODEL.BIN"]  # no temporary file nor sidecar left
    assert target.renamed == [("~MODEL.BIN", "MODEL.BIN", size)]
    assert "MODEL.BIN" not in target.stored


def test_push_retries_by_itself_after_a_drop(target, stage):
    model = stage / "MODEL.BIN"
    target.cut_after, target.cuts = 3 << 20, 1
    [result] = push(target, [model])
    assert result.resumed_from >= 3 << 20
    assert sha256(target.root / "MODEL.BIN") == sha256(model)
    assert target.cuts == 0


def test_push_without_size_command_checks_with_list(tmp_path, stage):
    root = tmp_path / "nosize"
    root.mkdir()
    running = Target(root, size_command=False)
    try:
        push(running, [stage / "TOK.BIN"])
        running.cut_after, running.cuts = 1 << 20, 1
        with pytest.raises(DeployError):
            push(running, [stage / "MODEL.BIN"], retries=0)
        [result] = push(running, [stage / "MODEL.BIN"])
    finally:
        running.stop()
    assert result.resumed_from >= 1 << 20
    assert sha256(root / "TOK.BIN") == sha256(stage / "TOK.BIN")
    assert sha256(root / "MODEL.BIN") == sha256(stage / "MODEL.BIN")


def test_push_errors_are_one_line(tmp_path, stage):
    with socket.socket() as free:
        free.bind((LOCAL, 0))
        port = free.getsockname()[1]
    with pytest.raises(DeployError, match=rf"^127\.0\.0\.1:{port}: connection refused"):
        push_files(LOCAL, port, [stage / "TOK.BIN"], timeout=5)

    root = tmp_path / "readonly"
    root.mkdir()
    running = Target(root, perm="elr")
    try:
        with pytest.raises(DeployError, match=rf"^127\.0\.0\.1:{running.address[1]}: login as old failed: 530"):
            push_files(*running.address, [stage / "TOK.BIN"], user="old", password="wrong", timeout=5)
        with pytest.raises(DeployError, match=r"~TOK\.~BI: upload refused: 550") as refused:
            push(running, [stage / "TOK.BIN"])
        assert "\n" not in str(refused.value)
    finally:
        running.stop()
    assert list(root.iterdir()) == []


def test_push_never_resumes_onto_a_partial_of_another_file(target, tmp_path):
    """Model A cut mid-way, then model B of the same name: the old push appended B's rest to A's prefix."""
    model_a, model_b = tmp_path / "a" / "MODEL.BIN", tmp_path / "b" / "MODEL.BIN"
    for path, seed in ((model_a, 11), (model_b, 12)):
        path.parent.mkdir()
        path.write_bytes(lf_rich(8 << 20, seed))
    target.cut_after, target.cuts = 1 << 20, 1
    with pytest.raises(DeployError, match="connection lost"):
        push(target, [model_a], retries=0)
    assert (target.root / "~MODEL.BIN").stat().st_size >= 1 << 20
    [result] = push(target, [model_b])
    assert result.resumed_from == 0
    assert sha256(target.root / "MODEL.BIN") == sha256(model_b)


def test_push_without_sidecar_starts_afresh(target, stage):
    """A temporary file that is a true prefix but has no sidecar (left by an older version, or by hand) proves
    nothing: it is sent again whole."""
    model = stage / "MODEL.BIN"
    (target.root / "~MODEL.BIN").write_bytes(model.read_bytes()[:1 << 20])
    [result] = push(target, [model])
    assert (result.resumed_from, result.bytes) == (0, model.stat().st_size)
    assert sha256(target.root / "MODEL.BIN") == sha256(model)


def test_push_checks_against_the_manifest_and_never_renames_a_wrong_file(target, stage, tmp_path):
    """The staged file changed after staging (or the line corrupted it): what arrives differs from the manifest's
    sha256, so the final name keeps the old file and nothing temporary is left."""
    from deploy.stage import StagedFile

    model = stage / "MODEL.BIN"
    (target.root / "MODEL.BIN").write_bytes(b"the model that works")
    claimed = StagedFile("MODEL.BIN", model, model.stat().st_size, "0" * 64)
    with pytest.raises(DeployError) as error:
        push(target, [claimed])
    text = str(error.value)
    assert f"127.0.0.1:{target.address[1]}/~MODEL.BIN: arrived corrupted: sha256 {sha256(model)}" in text
    assert "stage manifest says " + "0" * 64 in text and "\n" not in text
    assert sorted(p.name for p in target.root.iterdir()) == ["MODEL.BIN"]
    assert (target.root / "MODEL.BIN").read_bytes() == b"the model that works"


def test_push_uses_the_servers_hash_command_when_offered(tmp_path, stage):
    root = tmp_path / "hashing"
    root.mkdir()
    running = Target(root, offer_hash=True)
    try:
        results = push(running, [stage / name for name in NAMES])
    finally:
        running.stop()
    assert [r.verified_by for r in results] == ["the server's HASH SHA-256"] * 3
    assert running.hashed == [temp_name(n) for n in NAMES] and running.read_back == []
    assert all(sha256(root / name) == sha256(stage / name) for name in NAMES)


# --- the server as a person meets it: the first-time session, --stay, Ctrl-C, links, many connections

def ftp_serve_host(name="win98"):
    from deploy.inventory import Host

    return Host(name, ("exo_lab",), {"target": "win98-p2", "address": LOCAL, "connection": "ftp-serve",
                                     "link": {"address": LOCAL}, "ftp": {"port": 21}})


@pytest.fixture
def staged(tmp_path, stage):
    """A stage as deploy leaves it, under tmp_path/stage/win98, with its manifest."""
    from deploy.stage import stage_files

    return stage_files("win98", {name: stage / name for name in NAMES}, tmp_path / "stage")


@needs_client
def test_the_printed_first_time_session_typed_verbatim_fetches_everything(staged, tmp_path):
    """What `invoke serve` prints, typed line by line into a BSD-style client in active mode: the files, and
    FETCH.TXT and GET.BAT written for the port the server really listens on (bound to port 0)."""
    from rich.console import Console

    from deploy.serve import serve_stage

    printed = io.StringIO()
    summary = []
    serving = threading.Thread(target=lambda: summary.extend(serve_stage(
        ftp_serve_host(), f"{LOCAL}:0", console=Console(file=printed, width=1000), stage_root=tmp_path / "stage")))
    serving.start()
    for _ in range(100):
        if "type: " in printed.getvalue():
            break
        serving.join(0.05)
    session = printed.getvalue().split("type: ", 1)[1].splitlines()[0].split(" / ")
    assert session[0] == "ftp -n" and session[1].startswith(f"open {LOCAL} ") and session[-1] == "bye"
    port = int(session[1].split()[-1])
    machine = tmp_path / "machine"
    machine.mkdir()
    stdin = "".join(f"{line}\n" for line in session[1:]).encode()
    done = subprocess.run([FTP_CLIENT, "-A", "-v", *session[0].split()[1:]], input=stdin, cwd=machine,
                          capture_output=True, timeout=30)
    serving.join(15)
    assert not serving.is_alive()  # every file went out and the client said bye
    assert "Active data connection" in done.stdout.decode()
    for name in NAMES:
        assert sha256(machine / name) == sha256(staged.directory / name), name
    assert (machine / SCRIPT).read_bytes().startswith(f"open {LOCAL} {port}\r\nuser anonymous guest\r\n"
                                                      f"binary\r\n".encode())
    assert (machine / BATCH).read_bytes() == b"@ECHO OFF\r\nftp -n -s:FETCH.TXT\r\n"
    assert sorted(t.file for t in summary) == sorted(NAMES)


SERVE_AND_WAIT = """
import sys
from deploy.console import console, main_guard
from deploy.serve import serve_stage
from tests.test_ftp import ftp_serve_host
try:  # main_guard reports Ctrl-C itself where it knows how; otherwise say it as it would
    main_guard(serve_stage, ftp_serve_host(), "127.0.0.1:0", stay=sys.argv[2] == "stay", console=console,
               stage_root=sys.argv[1])
except KeyboardInterrupt:
    sys.exit("interrupted")
"""


@pytest.mark.parametrize("stay", ["stay", "once"])
def test_ctrl_c_stops_serving_within_2_s(staged, tmp_path, stay):
    """A real process serving (and, with stay, still serving after every file went out) ends within 2 s of SIGINT,
    its port closed; without stay it was still waiting for the machine."""
    import signal
    import sys
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen([sys.executable, "-u", "-c", SERVE_AND_WAIT, str(tmp_path / "stage"), stay],
                               cwd=root, env={**os.environ, "PYTHONPATH": root}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,  # SIGINT delivered even if the suite ignores it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        while not any("type: " in line for line in lines):
            lines.append(process.stdout.readline())
            assert lines[-1], "the server ended before printing the session: " + process.stderr.read()
        port = int(next(line for line in lines if "type: " in line).split(f"open {LOCAL} ")[1].split()[0])
        if stay == "stay":
            ftp = connect((LOCAL, port), ActiveFTP)
            for name in NAMES:
                fetch(ftp, name, tmp_path / name)
            ftp.quit()
            time.sleep(1)
            assert process.poll() is None  # still serving after a complete delivery
            connect((LOCAL, port)).quit()
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        process.wait(timeout=5)
        stopped_in = time.monotonic() - started
        stderr = process.stderr.read()
    finally:
        process.kill()
        process.wait()
    assert stopped_in < 2, f"took {stopped_in:.1f} s"
    assert process.returncode != 0 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    with pytest.raises(OSError):
        socket.create_connection((LOCAL, port), timeout=2).close()


def test_serve_refuses_other_connections_and_bad_binds(staged, tmp_path):
    from deploy.inventory import Host
    from deploy.serve import parse_bind, serve_stage

    rpi4 = Host("rpi4", ("pis",), {"target": "rpi4", "address": "raspberrypi4.local", "connection": "sftp"})
    with pytest.raises(DeployError, match="^rpi4: connects by sftp, not ftp-serve"):
        serve_stage(rpi4, stage_root=tmp_path / "stage")
    for bind, problem in (("127.0.0.1:notaport", "'notaport' is not a port"), (":99999", "expected ADDRESS:PORT"),
                          ("127.0.0.1:99999", "'99999' is not a port"), ("localhost:21", "not an IP address"),
                          ("0.0.0.0:21", "not a wildcard"), ("2121", "expected ADDRESS:PORT")):
        with pytest.raises(DeployError, match=f"^--bind {bind}: .*{problem}") as error:
            serve_stage(ftp_serve_host(), bind, stage_root=tmp_path / "stage")
        assert "\n" not in str(error.value)
    assert parse_bind("[::1]:2121") == ("::1", 2121) and parse_bind("127.0.0.1:0") == (LOCAL, 0)


def test_stay_serves_on_until_stopped(stage, tmp_path):
    running = StageServer(stage, NAMES, stay=True)
    summary = []
    serving = threading.Thread(target=lambda: summary.extend(running.serve_until_complete(timeout=30)))
    serving.start()
    for _ in range(2):  # a second machine, or the same one again, gets everything too
        ftp = connect(running.address, ActiveFTP)
        for name in NAMES:
            fetch(ftp, name, tmp_path / name)
        ftp.quit()
    serving.join(1)
    assert serving.is_alive() and running.is_complete()
    running.stop()
    serving.join(5)
    assert not serving.is_alive() and len(summary) == 2 * len(NAMES)


def test_a_served_name_is_never_followed_through_a_symbolic_link(tmp_path):
    folder = tmp_path / "linked"
    folder.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("a private file\n")
    (folder / "TOK.BIN").write_bytes(b"tokens")
    (folder / "MODEL.BIN").symlink_to(outside)
    with pytest.raises(DeployError, match=r"MODEL\.BIN: is a symbolic link \(to .*outside\.txt\)"):
        StageServer(folder, ["TOK.BIN", "MODEL.BIN"])
    (folder / "MODEL.BIN").unlink()
    (folder / "MODEL.BIN").write_bytes(b"weights")
    with StageServer(folder, ["TOK.BIN", "MODEL.BIN"]) as running:
        (folder / "MODEL.BIN").unlink()
        (folder / "MODEL.BIN").symlink_to(outside)  # swapped for a link while serving
        ftp = connect(running.address, ActiveFTP)
        for attempt in (lambda: ftp.size("MODEL.BIN"), lambda: fetch(ftp, "MODEL.BIN", tmp_path / "got"),
                        lambda: ftp.sendcmd("MDTM MODEL.BIN")):
            ftp.voidcmd("TYPE I")
            with pytest.raises(ftplib.error_perm, match="^550"):
                attempt()
        assert sorted(ftp.nlst()) == [SCRIPT, BATCH, "TOK.BIN"]
        fetch(ftp, "TOK.BIN", tmp_path / "TOK.BIN")
        ftp.quit()
    assert not (tmp_path / "got").exists() or (tmp_path / "got").read_bytes() == b""
    assert (tmp_path / "TOK.BIN").read_bytes() == b"tokens"


def test_idle_connections_from_one_address_cannot_lock_the_machine_out(server, stage, tmp_path):
    """Another client on 127.0.0.1 holds every connection it may; the machine (here 127.0.0.2) still gets in."""
    from deploy.ftpserve import MAX_CONNECTIONS_PER_ADDRESS

    hogs = [socket.create_connection(server.address, timeout=5) for _ in range(MAX_CONNECTIONS_PER_ADDRESS)]
    try:
        for hog in hogs:
            assert hog.recv(200).startswith(b"220")
        with socket.create_connection(server.address, timeout=5) as one_more:
            assert one_more.recv(200).startswith(b"421")
        machine = ActiveFTP(timeout=10)
        machine.connect(*server.address, source_address=("127.0.0.2", 0))
        machine.login("anonymous", "guest")
        machine.set_pasv(False)
        machine.makeport = lambda: _listener_on("127.0.0.2", machine)
        fetch(machine, "TOK.BIN", tmp_path / "TOK.BIN")
        machine.quit()
    finally:
        for hog in hogs:
            hog.close()
    assert sha256(tmp_path / "TOK.BIN") == sha256(stage / "TOK.BIN")


def _listener_on(address, ftp):
    listener = socket.socket()
    listener.bind((address, 0))
    listener.listen(1)
    ftp.sendport(*listener.getsockname())
    listener.settimeout(ftp.timeout)
    return listener
