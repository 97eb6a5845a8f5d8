"""Run a built program on this machine: directly, or under the profile's emulator (qemu-user, Wine)."""

import os
import re
import subprocess
from pathlib import Path

from deploy import processes
from deploy.errors import DeployError


TOK_S = re.compile(r"achieved tok/s: ([0-9.]+|inf)")


def tokens_per_second(stderr):
    """The `achieved tok/s` figure the program prints on stderr (text or bytes), or None."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    match = TOK_S.search(text)
    return float(match.group(1)) if match else None


def run_command(plan, args):
    return [*plan.profile.emulator, str(plan.program), *[str(arg) for arg in args]]


def run_env(plan):
    """The environment for the emulator: the profile's emulator_env, `{build}` standing for the build folder."""
    extra = {key: str(value).format(build=plan.out_dir.parent) for key, value in
             (plan.profile.get("emulator_env") or {}).items()}
    return dict(os.environ, **extra)


def prepare_emulator(plan):
    """Run the profile's one-time emulator set-up (creating a Wine prefix, say) unless it has been done."""
    init = plan.profile.get("emulator_init")
    if not init:
        return
    env = run_env(plan)
    marker = Path(env.get("WINEPREFIX") or plan.out_dir.parent) / ".emulator-ready"
    if marker.exists():
        return
    try:
        processes.run(init, env=env, timeout=600).check_returncode()
        if init[0] == "wineboot":
            processes.run(["wineserver", "-w"], env=env, timeout=600)
    except (OSError, subprocess.SubprocessError) as error:
        raise DeployError(plan.target, f"emulator set-up `{' '.join(init)}` failed: {error}") from None
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def run_program(plan, args, capture=False, timeout=None):
    """Run the plan's program with `args`; stdout and stderr pass through unless captured."""
    command = run_command(plan, args)
    prepare_emulator(plan)
    try:
        return processes.run(command, capture=capture, timeout=timeout, env=run_env(plan))
    except FileNotFoundError:
        raise DeployError(command[0], "not found; run `invoke doctor` for the install command") from None


def normalise_line_ends(output):
    """Wine's console writes CRLF; compare program output with LF line ends."""
    return output.replace(b"\r\n", b"\n")
