"""Run a built program on this machine: directly, or under the profile's emulator."""

import subprocess

from deploy.errors import DeployError


def run_command(plan, args):
    return [*plan.profile.emulator, str(plan.program), *[str(arg) for arg in args]]


def run_program(plan, args, capture=False, timeout=None):
    """Run the plan's program with `args`; stdout and stderr pass through unless captured."""
    command = run_command(plan, args)
    try:
        return subprocess.run(command, capture_output=capture, timeout=timeout)
    except FileNotFoundError:
        raise DeployError(command[0], "not found; run `invoke doctor` for the install command") from None
