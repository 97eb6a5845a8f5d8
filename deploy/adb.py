"""Android over adb (the platform-tools `adb` binary): push to /data/local/tmp, chmod, run.

/sdcard is mounted noexec, so programs go to /data/local/tmp, which the shell user may execute from.
"""

import shutil
import subprocess

from deploy import processes
from deploy.errors import DeployError


class Adb:
    def __init__(self, serial=None, adb="adb"):
        self.adb = shutil.which(adb)
        if self.adb is None:
            raise DeployError("adb", "not found; install Android's platform-tools (Debian: apt-get install adb)")
        self.serial = serial or None

    def _command(self, *args):
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def _run(self, *args, timeout=600):
        done = subprocess.run(self._command(*args), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().splitlines()
            raise DeployError(f"adb {self.serial or 'device'}", message[-1] if message else f"{args[0]} failed")
        return done.stdout

    def shell(self, command, timeout=600):
        return self._run("shell", command, timeout=timeout)

    def run(self, command, echo=None, timeout=3600):
        """Run `command` in the device's shell: (exit status, stdout, stderr) as text (adb's shell protocol passes the
        status on). `echo(data, is_stderr)` sees the output as it comes."""
        if echo is None:
            done = processes.run(self._command("shell", command), timeout=timeout)
        else:
            done = processes.run_echoing(self._command("shell", command), echo)
        return done.returncode, *(data.decode("utf-8", "replace") for data in (done.stdout, done.stderr))

    def push(self, local, remote_dir, name, sha256, executable=False):
        """Push under a temporary name, check the sha256 on the device, then rename (and chmod a program)."""
        final, temporary = f"{remote_dir}/{name}", f"{remote_dir}/.{name}.part"
        self.shell(f"mkdir -p {remote_dir}")
        self._run("push", str(local), temporary)
        remote = self.shell(f"sha256sum {temporary} 2>/dev/null || toybox sha256sum {temporary}").split()
        if not remote or remote[0] != sha256:
            raise DeployError(final, "sha256 on the device differs from the staged file")
        self.shell(f"mv {temporary} {final}" + (f" && chmod 755 {final}" if executable else ""))
        return final
