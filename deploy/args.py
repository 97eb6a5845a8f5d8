"""Command-line values as the tasks receive them (text), checked: a bad one is a one-line error naming the option,
the value and what would do."""

import math
from pathlib import Path

from deploy.atomic import check_parents
from deploy.errors import DeployError


def required(option, value):
    if value is None or str(value).strip() == "":
        raise DeployError(f"--{option} is required")
    return value


def integer(option, value, minimum=None, maximum=None):
    if value is None:
        return None
    try:
        number = int(str(value).strip(), 10)
    except ValueError:
        raise DeployError(f"--{option}", f"'{value}' is not a whole number") from None
    _in_range(option, number, minimum, maximum)
    return number


def real(option, value, minimum=None, maximum=None):
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        raise DeployError(f"--{option}", f"'{value}' is not a number") from None
    if not math.isfinite(number):
        raise DeployError(f"--{option}", f"'{value}' is not a finite number")
    _in_range(option, number, minimum, maximum)
    return number


def _in_range(option, number, minimum, maximum):
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        bounds = (f"from {minimum:g} to {maximum:g}" if minimum is not None and maximum is not None else
                  f"at least {minimum:g}" if minimum is not None else f"at most {maximum:g}")
        raise DeployError(f"--{option}", f"{number:g} is out of range: give a value {bounds}")


def choice(option, value, allowed):
    if value is None or value in allowed:
        return value
    near = [item for item in allowed if str(item).lower() == str(value).lower()]
    hint = f"; did you mean {near[0]}?" if near else ""
    raise DeployError(f"--{option}", f"'{value}' is not one of {', '.join(map(str, allowed))}{hint}")


def output_folder(option, value):
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise DeployError(path, f"is a file; --{option} names a folder here")
    check_parents(path, "made")
    return path
