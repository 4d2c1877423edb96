"""One exception type for every error a user can cause.

The CLI turns a ``UserError`` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a path, a label, a parameter. The message is one
    sentence that names the culprit and says what to do."""


# No message quotes more than about this many characters of what the user gave (a split file
# padded with megabytes of NUL bytes once made a 419 MB error line).
QUOTED = 200


def bounded(value, limit: int = QUOTED) -> str:
    """``str(value)`` cut to ``limit`` characters, saying how many more there were."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def quoted(value, limit: int = QUOTED) -> str:
    """``repr(value)`` cut to ``limit`` characters (escapes show NUL bytes and other controls)."""
    return bounded(repr(value), limit)
