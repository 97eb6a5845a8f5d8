"""FTP push: upload files to an old machine that runs an FTP server, never leaving half a file or a wrong one under
its final name.

Each file goes up in binary mode under a temporary name, its size and sha256 are checked against the stage manifest
(by the server's HASH command where it offers one, else by reading the file back and hashing it here), then it is
renamed. The temporary name is `~` + the first 7 characters of the stem + the extension (MODEL.BIN -> ~MODEL.BIN,
TOKENIZR.BIN -> ~TOKENIZ.BIN), so it stays a valid 8.3 name on a FAT server and keeps the extension; names that are
not 8.3 just get a `~` prefix. Beside it, a sidecar (~MODEL.~BI) holds the sha256 and size of the file being sent:
after a dropped connection the upload continues (APPE) only onto a temporary file whose sidecar names the same file.
"""

import ftplib
import io
import re
import socket
import time
from dataclasses import dataclass

from deploy.errors import DeployError
from deploy.verify import Expected, Hasher, check, proves_prefix, sidecar_text

BLOCK = 64 << 10
_DOS_83 = re.compile(r"^[^.\s]{1,8}(\.[^.\s]{1,3})?$")


def temp_name(name):
    if not _DOS_83.match(name):
        return "~" + name
    stem, dot, ext = name.partition(".")
    return "~" + stem[:7] + dot + ext


def sidecar_name(name):
    """Where the sha256 and size of the file being sent under temp_name(name) are kept: ~MODEL.BIN -> ~MODEL.~BI."""
    if not _DOS_83.match(name):
        return temp_name(name) + ".src"
    stem, _, ext = temp_name(name).partition(".")
    return f"{stem}.~{ext[:2]}"


@dataclass
class Pushed:
    file: str
    bytes: int            # bytes sent in this call
    seconds: float
    resumed_from: int = 0
    skipped: bool = False
    verified_by: str = ""  # how the sha256 on the server was obtained


def _list_size(ftp, name):
    """A file's size from LIST, for servers without SIZE: Unix `ls -l` or DOS/IIS `MM-DD-YY HH:MMAM SIZE NAME`."""
    lines = []
    try:
        ftp.retrlines(f"LIST {name}", lines.append)
    except (ftplib.error_perm, ftplib.error_temp) as error:
        if str(error).startswith("421"):  # the server is closing the connection
            raise
        return None  # 450/550: no such file
    for line in lines:
        fields = line.split()
        if not fields or fields[-1] != name:
            continue
        if line[0] == "-" and len(fields) >= 9 and fields[4].isdigit():
            return int(fields[4])
        if re.match(r"\d\d-\d\d-\d\d", fields[0]) and len(fields) >= 4 and fields[2].isdigit():
            return int(fields[2])
    return None


_HEX64 = re.compile(r"\b([0-9a-fA-F]{64})\b")


class _Session:
    def __init__(self, host, port, user, password, remote_dir, timeout):
        self.where = f"{host}:{port}"
        self.ftp = ftplib.FTP(timeout=timeout)
        try:
            self.ftp.connect(host, port)
        except ConnectionRefusedError:
            raise DeployError(self.where, "connection refused: is the FTP server running on the old machine?") from None
        except (socket.timeout, TimeoutError):
            raise DeployError(self.where, f"no answer within {timeout} s") from None
        except OSError as error:
            raise DeployError(self.where, f"cannot connect: {error.strerror or error}") from None
        try:
            self.ftp.login(user, password or "")  # ftplib sends "anonymous@" for anonymous
        except (ftplib.Error, OSError, EOFError) as error:
            self.close()
            raise DeployError(self.where, f"login as {user} failed: {error}") from None
        self.command("TYPE I")
        if remote_dir:
            try:
                self.ftp.cwd(remote_dir)
            except ftplib.error_perm as error:
                self.close()
                raise DeployError(f"{self.where}/{remote_dir}", f"cannot change to it: {error}") from None
        self.has_size = True
        self.has_hash = None  # whether the server offers HASH with SHA-256 (asked once, with FEAT)

    def command(self, line):
        try:
            return self.ftp.sendcmd(line)
        except ftplib.error_perm as error:
            raise DeployError(self.where, f"{line.split()[0]} refused: {error}") from None

    def size(self, name):
        """The remote file's size, or None when it does not exist."""
        if self.has_size:
            try:
                return self.ftp.size(name)
            except (ftplib.error_perm, ftplib.error_temp) as error:
                if str(error).startswith("421"):
                    raise
                if not str(error).startswith(("500", "502", "504")):
                    return None  # 450/550: no such file
                self.has_size = False
        return _list_size(self.ftp, name)

    def read(self, name):
        """A small file's bytes, or None when it cannot be read."""
        data = io.BytesIO()
        try:
            self.ftp.retrbinary(f"RETR {name}", data.write)
        except ftplib.error_perm:
            return None
        return data.getvalue()

    def write(self, name, data):
        try:
            self.ftp.storbinary(f"STOR {name}", io.BytesIO(data))
        except ftplib.error_perm as error:
            raise DeployError(f"{self.where}/{name}", f"upload refused: {error}") from None

    def remove(self, name):
        """Delete `name`, or at least empty it where DELE is refused; nothing when it is not there."""
        try:
            self.ftp.delete(name)
        except ftplib.error_perm:
            if self.size(name):
                self.write(name, b"")

    def sha256(self, name):
        """(sha256, size, how) of a file on the server: by HASH where offered, else read back and hashed here."""
        if self.has_hash is None:
            self.has_hash = self._offers_sha256_hash()
        if self.has_hash:
            try:
                found = _HEX64.search(self.ftp.sendcmd(f"HASH {name}"))
            except ftplib.error_perm:
                found = None
            if found:
                return found.group(1).lower(), self.size(name), "the server's HASH SHA-256"
            self.has_hash = False
        hasher = Hasher()
        try:
            self.ftp.retrbinary(f"RETR {name}", hasher, BLOCK)
        except ftplib.error_perm as error:
            raise DeployError(f"{self.where}/{name}", f"cannot read it back to check it: {error}") from None
        return hasher.hexdigest(), hasher.size, "reading it back"

    def _offers_sha256_hash(self):
        try:
            features = self.ftp.sendcmd("FEAT").splitlines()
        except ftplib.error_perm:
            return False
        offered = next((line.split(None, 1)[1] for line in features[1:-1]
                        if line.split()[:1] == ["HASH"] and len(line.split()) > 1), "")
        algorithms = [name.rstrip("*") for name in offered.split(";")]
        if "SHA-256" not in algorithms:
            return False
        try:
            self.ftp.sendcmd("OPTS HASH SHA-256")
        except ftplib.error_perm:
            return False
        return True

    def close(self):
        try:
            self.ftp.quit()
        except (ftplib.Error, OSError, EOFError):
            self.ftp.close()


def _upload(session, path, name, offset, on_progress):
    """Send `path` from `offset` to its temporary name; return the bytes sent."""
    size = path.stat().st_size
    sent = offset
    if offset == size:
        return 0

    def progress(block):
        nonlocal sent
        sent += len(block)
        if on_progress is not None:
            on_progress(name, sent, size)

    with open(path, "rb") as handle:
        handle.seek(offset)
        try:
            session.ftp.storbinary(f"{'APPE' if offset else 'STOR'} {temp_name(name)}", handle, BLOCK, progress)
        except ftplib.error_perm as error:
            if offset and str(error).startswith(("500", "502", "504")):
                return _upload(session, path, name, 0, on_progress)  # no APPE here: send the whole file again
            raise DeployError(f"{session.where}/{temp_name(name)}", f"upload refused: {error}") from None
    return sent - offset


def _resume_offset(session, expected):
    """Where to continue: the temporary file's size when its sidecar names this very file, else 0 (and then no
    temporary file is left, and the sidecar names this file)."""
    temporary, sidecar = temp_name(expected.name), sidecar_name(expected.name)
    partial = session.size(temporary)
    if partial is not None:
        text = session.read(sidecar)
        if proves_prefix(text and text.decode("ascii", "replace"), partial, expected):
            return partial
        session.remove(temporary)  # gone before the sidecar names another file
    session.write(sidecar, sidecar_text(expected).encode("ascii"))
    return 0


def _push_one(session, expected, skip_existing, on_progress):
    name = expected.name
    started = time.monotonic()
    final = session.size(name)
    if skip_existing and final == expected.size and session.sha256(name)[0] == expected.sha256:
        return Pushed(name, 0, 0.0, skipped=True)
    offset = _resume_offset(session, expected)
    sent = _upload(session, expected.path, name, offset, on_progress)
    digest, arrived, how = session.sha256(temp_name(name))
    try:
        check(f"{session.where}/{temp_name(name)}", expected, arrived, digest, how)
    except DeployError:
        session.remove(temp_name(name))
        session.remove(sidecar_name(name))
        raise
    try:
        session.ftp.rename(temp_name(name), name)
    except ftplib.error_perm:
        # Some servers (Windows, DOS) will not rename over an existing file.
        if final is None:
            raise
        session.command(f"DELE {name}")
        session.ftp.rename(temp_name(name), name)
    session.remove(sidecar_name(name))
    return Pushed(name, sent, time.monotonic() - started, resumed_from=offset, verified_by=how)


def push_files(host, port, files, remote_dir=None, user="anonymous", password=None, on_progress=None, timeout=30,
               skip_existing=False, retries=3):
    """Upload `files` (StagedFiles, checked against their manifest entry, or paths, hashed first) to the FTP server
    at host:port; return one Pushed record per file.

    on_progress(name, bytes_so_far, size) follows each block. A dropped connection is retried `retries` times, each
    time resuming from what reached the server. skip_existing: leave a file whose final name already has its sha256."""
    files = [Expected.of(f) for f in files]
    temps = [temp(f.name) for f in files for temp in (temp_name, sidecar_name)]
    if len(set(temps)) != len(temps):
        raise DeployError(", ".join(f.name for f in files), "two files share a temporary name: rename one")
    results = []
    session = None
    try:
        for expected in files:
            for attempt in range(retries + 1):
                session = session or _Session(host, port, user, password, remote_dir, timeout)
                try:
                    results.append(_push_one(session, expected, skip_existing, on_progress))
                    break
                except ftplib.error_perm as error:
                    raise DeployError(f"{session.where}/{expected.name}", str(error)) from None
                except (OSError, EOFError, ftplib.error_temp, ftplib.error_reply) as error:
                    session.ftp.close()
                    session = None
                    if attempt == retries:
                        raise DeployError(f"{host}:{port}/{expected.name}",
                                          f"connection lost ({error}); tried {retries + 1} times") from None
    finally:
        if session is not None:
            session.close()
    return results
