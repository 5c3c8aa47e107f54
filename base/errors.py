"""The one exception type that the CLI turns into a one-line message."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The start of an exception's message, for quoting it inside a one-line HarnessError
    (Keras, OpenVINO and Ray put whole tracebacks or layer lists in some messages); the
    exception's type name when it has no message."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class HarnessError(Exception):
    """A problem the user can fix: the message says what is wrong, where, and how to fix it.

    The CLI prints it on one line and exits non-zero, without a traceback unless `--verbose`.
    """
