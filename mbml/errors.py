"""The one exception type users see: a one-line message naming the problem (the CLI prints it, exit 2)."""


class MbmlError(Exception):
    """A user-facing error: bad input, a corrupt file, an unknown name, a config clash."""
