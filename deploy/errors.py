"""The one error type users see: a single line naming the file and the problem."""


class DeployError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    def __init__(self, where, problem=None):
        message = f"{where}: {problem}" if problem is not None else str(where)
        super().__init__(message)
