"""The one error type users see: a single line naming the file and the problem."""


class DeployError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    def __init__(self, where, problem=None):
        message = f"{where}: {problem}" if problem is not None else str(where)
        super().__init__(message)


def file_error(path, error):
    """A DeployError for an OSError met reading `path` (missing, a folder, unreadable): the system's own words."""
    return DeployError(path, error.strerror or str(error))
