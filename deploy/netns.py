"""A private link for an emulated machine: a network namespace of our own with one tap device in it, this side's
address on the tap and no route anywhere else. Nothing sent on the link can leave the namespace, so the lab's
addresses (192.168.1.x) are never configured on, or routed from, this machine's own network stack.
"""

import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from deploy import processes
from deploy.errors import DeployError

TAP = "tap0"


class Link:
    """`with Link("192.168.1.1/24") as link:` makes a namespace with `link.tap` up at that address, and removes it
    (after stopping what still runs inside) however the block ends. `link.command(argv)` runs argv inside it."""

    def __init__(self, address, prefix="retro"):
        self.interface = ipaddress.ip_interface(address)
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.tap = TAP

    @property
    def address(self):
        return str(self.interface.ip)

    def command(self, argv):
        return ["ip", "netns", "exec", self.name, *argv]

    def __enter__(self):
        if not Path("/dev/net/tun").exists():
            raise DeployError("/dev/net/tun", "missing: the emulated machine's link needs the tun device "
                                              "(mknod /dev/net/tun c 10 200, or run the container with it)")
        self._registration = processes.cleanup(self.remove)
        self._registration.__enter__()
        try:
            _ip(["netns", "add", self.name], "make the link's network namespace (this needs root)")
            _ip(["netns", "exec", self.name, "ip", "link", "set", "lo", "up"], "bring up the namespace's loopback")
            _ip(["netns", "exec", self.name, "ip", "tuntap", "add", "dev", self.tap, "mode", "tap"], "add the tap")
            _ip(["netns", "exec", self.name, "ip", "addr", "add", str(self.interface), "dev", self.tap],
                "address the tap")
            _ip(["netns", "exec", self.name, "ip", "link", "set", self.tap, "up"], "bring up the tap")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.remove()
        finally:
            self._registration.__exit__(None, None, None)

    def pids(self):
        done = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30)
        return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []

    def remove(self):
        """Stop whatever still runs in the namespace (only what we started can be there), then delete it."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 2
            while pids and self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        # plain subprocess: this also runs while Ctrl-C is stopping the task (processes.cleanup), when
        # processes.run refuses to start anything
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "del", self.tap], capture_output=True,
                       timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


def _ip(args, what):
    done = processes.run(["ip", *args], text=True, timeout=30)
    if done.returncode != 0:
        raise DeployError("ip " + " ".join(args), f"cannot {what}: {done.stderr.strip()[:200]}")
