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


def remedy(exc: OSError) -> str:
    """What to do about an I/O error, by its cause: space, permissions, or the path itself."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free space"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the permissions"
    if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG):
        return "check the path (a link that leads nowhere or in a loop, a file where a folder should be)"
    return "free space or fix the permissions"
