"""FTP push: upload files to an old machine that runs an FTP server, never leaving half a file under its final name.

Each file goes up in binary mode under a temporary name, its size is checked, then it is renamed. The temporary name
is `~` + the first 7 characters of the stem + the extension (MODEL.BIN -> ~MODEL.BIN, TOKENIZR.BIN -> ~TOKENIZ.BIN),
so it stays a valid 8.3 name on a FAT server and keeps the extension; names that are not 8.3 just get a `~` prefix.
After a dropped connection the upload continues (APPE) from the size of that temporary file on the server.
"""

import ftplib
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import DeployError

BLOCK = 64 << 10
_DOS_83 = re.compile(r"^[^.\s]{1,8}(\.[^.\s]{1,3})?$")


def temp_name(name):
    if not _DOS_83.match(name):
        return "~" + name
    stem, dot, ext = name.partition(".")
    return "~" + stem[:7] + dot + ext


@dataclass
class Pushed:
    file: str
    bytes: int            # bytes sent in this call
    seconds: float
    resumed_from: int = 0
    skipped: bool = False


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

    def close(self):
        try:
            self.ftp.quit()
        except (ftplib.Error, OSError, EOFError):
            self.ftp.close()


def _upload(session, path, name, offset, on_progress):
    """Send `path` from `offset` to its temporary name; return the bytes sent."""
    size = path.stat().st_size
    sent = offset

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


def _push_one(session, path, skip_existing, on_progress):
    name = path.name
    size = path.stat().st_size
    started = time.monotonic()
    final = session.size(name)
    if skip_existing and final == size:
        return Pushed(name, 0, 0.0, skipped=True)
    partial = session.size(temp_name(name))
    offset = partial if partial is not None and partial <= size else 0
    sent = _upload(session, path, name, offset, on_progress)
    arrived = session.size(temp_name(name))
    if arrived != size:
        raise DeployError(f"{session.where}/{temp_name(name)}", f"arrived as {arrived} bytes, expected {size}")
    try:
        session.ftp.rename(temp_name(name), name)
    except ftplib.error_perm:
        # Some servers (Windows, DOS) will not rename over an existing file.
        if final is None:
            raise
        session.command(f"DELE {name}")
        session.ftp.rename(temp_name(name), name)
    return Pushed(name, sent, time.monotonic() - started, resumed_from=offset)


def push_files(host, port, files, remote_dir=None, user="anonymous", password=None, on_progress=None, timeout=30,
               skip_existing=False, retries=3):
    """Upload `files` to the FTP server at host:port; return one Pushed record per file.

    on_progress(name, bytes_so_far, size) follows each block. A dropped connection is retried `retries` times, each
    time resuming from what reached the server. skip_existing: leave a file whose final name already has its size."""
    files = [Path(f) for f in files]
    temps = [temp_name(f.name) for f in files]
    if len(set(temps)) != len(temps):
        raise DeployError(", ".join(f.name for f in files), "two files share a temporary name: rename one")
    results = []
    session = None
    try:
        for path in files:
            for attempt in range(retries + 1):
                session = session or _Session(host, port, user, password, remote_dir, timeout)
                try:
                    results.append(_push_one(session, path, skip_existing, on_progress))
                    break
                except ftplib.error_perm as error:
                    raise DeployError(f"{session.where}/{path.name}", str(error)) from None
                except (OSError, EOFError, ftplib.error_temp, ftplib.error_reply) as error:
                    session.ftp.close()
                    session = None
                    if attempt == retries:
                        raise DeployError(f"{host}:{port}/{path.name}",
                                          f"connection lost ({error}); tried {retries + 1} times") from None
    finally:
        if session is not None:
            session.close()
    return results
