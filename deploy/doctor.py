"""What each target needs on this machine (compilers, emulators), what is present, and installing what is missing.

Debian packages come from the profiles' `packages`, `emulator_packages` and `machine.packages`, PyPI packages from
`pip`. A profile's whole emulated machine also needs its image, built from Debian packages that are downloaded and
unpacked under build/, never installed (deploy/vmimage.py): `prepare_machines` builds it, so a deploy to it then
needs no network. 32-bit Wine
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
MACHINE_TOOLS = ["mkfs.vfat", "ip"]  # a machine's FAT32 disk and its private link (machine.packages install them)
LOW_SECURITY_PIN = "Package: *\nPin: release l=Debian-Security\nPin-Priority: 100\n"


@dataclasses.dataclass
class Tool:
    target: str
    role: str  # "compiler", "emulator" or "machine"
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
        machine = profile.get("machine")
        if machine:
            found.append(Tool(name, "machine", machine["command"][:1], machine["packages"], [],
                              all(shutil.which(command) for command in (machine["command"][0], *MACHINE_TOOLS))))
    return found


def prepare_machines(targets=None, say=print):
    """Build the image of every profile's whole emulated machine (downloads its Debian packages once)."""
    from deploy.vmimage import build_image

    for name in targets or known_targets():
        profile = load_profile(name)
        if profile.get("machine"):
            image = build_image(profile, say=say)
            say(f"{name}: machine image {image.key} " + ("built" if image.built else "ready"))


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
    status = install(*missing())
    if status == 0:
        prepare_machines()
    raise SystemExit(status)
