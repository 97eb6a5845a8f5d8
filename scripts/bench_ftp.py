#!/usr/bin/env python3
"""Benchmark of the built-in FTP server on loopback, as ratios measured in one run (not a timed test):

1. throughput of a 256 MiB download from the server (binary mode, ftplib client) against a plain socket copy of the
   same file (sendfile to a reader), median of N;
2. the server's peak memory serving a 16 MiB and a 256 MiB file (it should not grow with the file).

Usage: .venv/bin/python scripts/bench_ftp.py [--mib 256] [--runs 3]
"""

import argparse
import ftplib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVE = """
import sys
from deploy.ftpserve import StageServer
server = StageServer(sys.argv[1], [sys.argv[2]], bind=("127.0.0.1", 0), stay=True)
server.start()
print(server.address[1], flush=True)
sys.stdin.read()
server.stop()
"""


def make_file(path, mib):
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(block)


def ftp_download(port, name):
    received = 0

    def count(block):
        nonlocal received
        received += len(block)

    start = time.monotonic()
    with ftplib.FTP() as client:
        client.connect("127.0.0.1", port, timeout=60)
        client.login()
        client.retrbinary(f"RETR {name}", count, blocksize=1 << 16)
    return received, time.monotonic() - start


def socket_copy(path):
    """The same bytes over a plain loopback TCP connection: sendfile on one side, recv on the other."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def send():
        connection, _ = listener.accept()
        with connection, open(path, "rb") as source:
            connection.sendfile(source)

    sender = threading.Thread(target=send)
    sender.start()
    received, start = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as client:
        while block := client.recv(1 << 16):
            received += len(block)
    seconds = time.monotonic() - start
    sender.join()
    listener.close()
    return received, seconds


def serve_and_fetch(folder, name):
    """Start the server in a child process, download once, stop it; returns (seconds, the child's peak RSS MiB)."""
    child = subprocess.Popen([sys.executable, "-c", SERVE, str(folder), name], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    port = int(child.stdout.readline())
    size, seconds = ftp_download(port, name)
    child.stdin.close()
    _, _, usage = os.wait4(child.pid, 0)
    return size, seconds, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ftp-") as tmp:
        folder = Path(tmp)
        make_file(folder / "BIG.BIN", args.mib)
        make_file(folder / "SMALL.BIN", 16)
        ftp_times, socket_times, peaks = [], [], []
        for _ in range(args.runs):
            size, seconds, peak = serve_and_fetch(folder, "BIG.BIN")
            assert size == args.mib << 20
            ftp_times.append(seconds)
            peaks.append(peak)
            size, seconds = socket_copy(folder / "BIG.BIN")
            assert size == args.mib << 20
            socket_times.append(seconds)
        _, _, small_peak = serve_and_fetch(folder, "SMALL.BIN")
        ftp_s, socket_s = statistics.median(ftp_times), statistics.median(socket_times)
        mb = args.mib * (1 << 20) / 1e6
        print(f"FTP server, {args.mib} MiB: median {ftp_s:.2f} s ({mb / ftp_s:.0f} MB/s)")
        print(f"plain socket copy:        median {socket_s:.2f} s ({mb / socket_s:.0f} MB/s)")
        print(f"throughput ratio FTP / socket: {socket_s / ftp_s:.2f}")
        print(f"server peak RSS: {small_peak:.0f} MiB serving 16 MiB, {max(peaks):.0f} MiB serving {args.mib} MiB")


if __name__ == "__main__":
    main()
