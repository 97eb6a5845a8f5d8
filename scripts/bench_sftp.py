#!/usr/bin/env python3
"""SFTP upload throughput: deploy.sftp's Session.upload against OpenSSH's own `sftp` client, to the same throwaway
sshd on 127.0.0.1 (tests/sshd.py), with the same user key and known_hosts file. Median of N runs each, interleaved.

Session.upload is timed twice: as used (transfer, sha256sum on the host, rename) and as on a host without a sha256
tool (hash_tools emptied: the file is read back over SFTP and hashed here). `sftp` runs with its default cipher and with paramiko's (aes128-ctr, hmac-sha2-256).
Connection setup is inside every timing.

Usage: python3 scripts/bench_sftp.py [--mib 256] [--runs 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deploy.sftp import READ_BACK, connect, fetch_host_key, trust_host  # noqa: E402
from tests.sshd import keygen, modern, sshd_available  # noqa: E402

console = Console()


def ours(server, key, known, local, remote, hashed):
    started = time.monotonic()
    with connect(server.host, server.port, server.user, key_file=key, use_agent=False,
                 known_hosts_path=known) as session:
        if not hashed:
            session.hash_tools = ()
        record = session.upload(local, str(remote))
    assert record.verified_by == ("sha256sum" if hashed else READ_BACK), record
    return time.monotonic() - started


def openssh(server, key, known, local, remote, options):
    batch = local.parent / "batch"
    batch.write_text(f'put "{local}" "{remote}"\n')
    command = ["sftp", "-q", "-b", str(batch), "-i", str(key), "-P", str(server.port),
               "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
               "-o", "BatchMode=yes", *options, f"{server.user}@{server.host}"]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not sshd_available():
        sys.exit("needs /usr/sbin/sshd (Debian package openssh-server)")
    with tempfile.TemporaryDirectory() as folder, modern(Path(folder) / "sshd") as server:
        work = Path(folder)
        key = keygen(work / "user", "ed25519")
        server.authorize(key)
        known = work / "known_hosts"
        trust_host("bench", server.host, server.port, fetch_host_key(server.host, server.port)[2], known, show=False)
        local = work / "payload.bin"
        with console.status(f"writing {args.mib} MiB of random bytes"), open(local, "wb") as handle:
            for _ in range(args.mib):
                handle.write(os.urandom(1 << 20))
        contenders = {
            "Session.upload (with sha256 check)": lambda remote: ours(server, key, known, local, remote, True),
            "Session.upload (read back, no sha256 tool there)": lambda remote: ours(server, key, known, local, remote,
                                                                                     False),
            "OpenSSH sftp -b (default cipher)": lambda remote: openssh(server, key, known, local, remote, []),
            "OpenSSH sftp -b (aes128-ctr, hmac-sha2-256)": lambda remote: openssh(
                server, key, known, local, remote, ["-c", "aes128-ctr", "-o", "MACs=hmac-sha2-256"]),
        }
        times = {name: [] for name in contenders}
        for run in range(args.runs):
            for name, upload in contenders.items():
                console.print(f"run {run + 1}/{args.runs}: {name}", end="\r")
                remote = work / "remote.bin"
                remote.unlink(missing_ok=True)
                times[name].append(upload(remote))
                assert remote.stat().st_size == local.stat().st_size
        console.print(" " * 70, end="\r")
    reference = statistics.median(times["OpenSSH sftp -b (default cipher)"])
    table = Table(title=f"SFTP upload of {args.mib} MiB to 127.0.0.1, median of {args.runs}")
    for column in ("client", "seconds", "MiB/s", "time vs sftp (default)"):
        table.add_column(column, justify="left" if column == "client" else "right")
    for name, samples in times.items():
        seconds = statistics.median(samples)
        table.add_row(name, f"{seconds:.2f}", f"{args.mib / seconds:.0f}", f"{seconds / reference:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
