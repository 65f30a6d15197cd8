"""The one exception type users see: a one-line message naming the problem (the CLI prints it, exit 2)."""


class MbmlError(Exception):
    """A user-facing error: bad input, a corrupt file, an unknown name, a config clash."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (for an MbmlError that wraps a library's error)."""
    return " ".join(str(e).split()) or type(e).__name__
