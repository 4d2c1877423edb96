"""One exception type for every error a user can cause.

The CLI turns a ``UserError`` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a path, a label, a parameter. The message is one
    sentence that names the culprit and says what to do."""
