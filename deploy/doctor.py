"""What each target needs on this machine (compilers, emulators), what is present, and installing what is missing."""

import dataclasses
import shutil
import subprocess

from deploy.profile import known_targets, load_profile


@dataclasses.dataclass
class Tool:
    target: str
    role: str  # "compiler" or "emulator"
    command: str
    packages: list
    path: str | None

    @property
    def present(self):
        return self.path is not None


def tools(targets=None):
    found = []
    for name in targets or known_targets():
        profile = load_profile(name)
        for toolchain in profile.toolchains:
            if toolchain.get("packages"):
                found.append(Tool(name, "compiler", toolchain["cc"], toolchain["packages"],
                                  shutil.which(toolchain["cc"])))
        if profile.emulator:
            found.append(Tool(name, "emulator", profile.emulator[0], profile.get("emulator_packages", []),
                              shutil.which(profile.emulator[0])))
    return found


def version_of(command):
    try:
        done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else ""


def missing_packages(targets=None):
    return sorted({package for tool in tools(targets) if not tool.present for package in tool.packages})


def install_command(packages):
    return ["apt-get", "install", "-y", "--no-install-recommends", *packages]


def install(packages):
    """apt-get install the packages (as root); returns the exit status."""
    if not packages:
        return 0
    subprocess.run(["apt-get", "update"], check=False)
    return subprocess.run(install_command(packages)).returncode


if __name__ == "__main__":
    raise SystemExit(install(missing_packages()))
