"""The one exception type that the CLI turns into a one-line message."""


class HarnessError(Exception):
    """A problem the user can fix: the message says what is wrong, where, and how to fix it.

    The CLI prints it on one line and exits non-zero, without a traceback unless `--verbose`.
    """
