"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class NfdError(Exception):
    """A user-facing failure: bad input file, bad key, missing data. The message names the file or key."""
