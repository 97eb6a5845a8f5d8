"""What each target needs on this machine (compilers, emulators), what is present, and installing what is missing.

Debian packages come from the profiles' `packages` and `emulator_packages`, PyPI packages from `pip`. 32-bit Wine
(`wine32:i386`) needs the i386 architecture and, on Debian 12 mirrors whose i386 security index lags, the security
release pinned low for that one install (FACTS section 5).
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.plan import compiler_argv, toolchain_present
from deploy.profile import known_targets, load_profile

# Tools beside the profiles' toolchains: (role, command, Debian package)
PEERS = [
    ("ftp client (emulated Windows 98 host)", "inetutils-ftp", "inetutils-ftp"),
    ("ssh server (tests)", "/usr/sbin/sshd", "openssh-server"),
    ("ssh and sftp clients", "sftp", "openssh-client"),
]
LOW_SECURITY_PIN = "Package: *\nPin: release l=Debian-Security\nPin-Priority: 100\n"


@dataclasses.dataclass
class Tool:
    target: str
    role: str  # "compiler" or "emulator"
    command: list
    packages: list  # Debian packages
    pip: list  # PyPI packages
    present: bool


def tools(targets=None):
    found = [] if targets else [Tool("-", role, [command], [package], [], shutil.which(command) is not None)
                                for role, command, package in PEERS]
    for name in targets or known_targets():
        profile = load_profile(name)
        for toolchain in profile.toolchains:
            if toolchain.get("kind") != "bundle":
                found.append(Tool(name, "compiler", compiler_argv(toolchain), toolchain.get("packages", []),
                                  toolchain.get("pip", []), toolchain_present(toolchain)))
        if profile.emulator:
            found.append(Tool(name, "emulator", profile.emulator[:1], profile.get("emulator_packages", []), [],
                              shutil.which(profile.emulator[0]) is not None))
    return found


def version_of(command):
    """First line of `command --version` (or `version` for zig), or "" when it does not answer."""
    argv = [*command[:3], "version"] if command[0] == sys.executable else [command[0], "--version"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines and done.returncode == 0 else ""


def missing(targets=None):
    """(Debian packages, PyPI packages) that the targets need and this machine lacks."""
    absent = [tool for tool in tools(targets) if not tool.present]
    return (sorted({p for tool in absent for p in tool.packages}), sorted({p for tool in absent for p in tool.pip}))


def install_commands(apt_packages, pip_packages):
    """The commands `install` runs, for showing to a user."""
    commands = []
    if any(p.endswith(":i386") for p in apt_packages):
        commands.append("dpkg --add-architecture i386")
    if apt_packages:
        commands += ["apt-get update", "apt-get install -y --no-install-recommends " + " ".join(apt_packages)]
    if pip_packages:
        commands.append(f"{sys.executable} -m pip install " + " ".join(pip_packages))
    return commands


def install(apt_packages, pip_packages):
    """Install what is missing; returns the exit status of the first step that failed (0 when all went well)."""
    if pip_packages:
        status = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *pip_packages]).returncode
        if status:
            return status
    if not apt_packages:
        return 0
    if any(p.endswith(":i386") for p in apt_packages):
        subprocess.run(["dpkg", "--add-architecture", "i386"], check=False)
    # an i386 index that fails its check must not stop the packages whose indexes are fine
    subprocess.run(["apt-get", "update", "-q"], check=False)
    with tempfile.TemporaryDirectory() as prefs:
        (Path(prefs) / "security-low.pref").write_text(LOW_SECURITY_PIN)
        command = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                   "-o", f"Dir::Etc::PreferencesParts={prefs}",
                   "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", *apt_packages]
        return subprocess.run(command, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}).returncode


if __name__ == "__main__":
    raise SystemExit(install(*missing()))
