"""The exception types the CLI turns into a one-line message and a non-zero exit code: 2 for bad input, 1 for the
network."""


class SwinzooError(Exception):
    """A problem with the user's input: the message names it and says how to fix it."""


class NetworkError(SwinzooError):
    """The network or the Hub failed (unreachable, timed out, a server error): not the user's input (exit 1)."""
