#!/usr/bin/env python3
"""FTP push throughput on loopback: push_files of one random file to a writable pyftpdlib server (the tests' Target),
checked by reading it back, and by the server's HASH command, against the manifest's sha256 (as `invoke deploy` pushes
a stage: nothing is hashed here first). Median of N runs each.

Usage: .venv/bin/python scripts/bench_ftp_push.py [--mib 128] [--runs 3]
"""

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.ftppush import push_files  # noqa: E402
from deploy.manifest import sha256_file  # noqa: E402
from deploy.stage import StagedFile  # noqa: E402
from tests.test_ftp import Target  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())
    logging.getLogger("pyftpdlib").propagate = False
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        local = folder / "MODEL.BIN"
        with open(local, "wb") as handle:
            for _ in range(args.mib):
                handle.write(os.urandom(1 << 20))
        staged = StagedFile(local.name, local, local.stat().st_size, sha256_file(local))
        for offer_hash in (False, True):
            remote = folder / f"remote-{offer_hash}"
            remote.mkdir()
            target = Target(remote, offer_hash=offer_hash)
            times, how = [], None
            try:
                for _ in range(args.runs):
                    started = time.monotonic()
                    [record] = push_files(*target.address, [staged], user="old", password="machine", timeout=60)
                    times.append(time.monotonic() - started)
                    how = record.verified_by
            finally:
                target.stop()
            seconds = statistics.median(times)
            print(f"{args.mib} MiB, checked by {how}: median {seconds:.2f} s, {args.mib / seconds:.0f} MiB/s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
