"""Terminal output: one rich console for the tasks, and the one-line error report."""

import sys

from rich.console import Console

# wide enough for the tables when the output goes to a file or a pipe (rich assumes 80 columns there)
_WIDTH = None if sys.stdout.isatty() else 150
console = Console(highlight=False, width=_WIDTH)
errors = Console(stderr=True, highlight=False, width=_WIDTH)


def report_error(error):
    errors.print(f"[bold red]error:[/] {error}", soft_wrap=True)


def main_guard(function, *args, **kwargs):
    """Run `function`; a DeployError becomes one line on stderr and exit status 1; Ctrl-C (or SIGTERM) stops every
    child process, prints "interrupted" and exits with status 130."""
    from deploy.errors import DeployError
    from deploy.processes import exit_interrupted, terminate_as_interrupt

    terminate_as_interrupt()
    try:
        return function(*args, **kwargs)
    except DeployError as error:
        report_error(error)
        sys.exit(1)
    except OSError as error:  # a file or network peer the user named: its name and the system's reason say it all
        if error.filename is None:
            raise
        report_error(f"{error.filename}: {error.strerror or error}")
        sys.exit(1)
    except KeyboardInterrupt:
        exit_interrupted(lambda message: errors.print(f"[bold yellow]{message}[/]"))
