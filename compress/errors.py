"""User-facing errors: one line that names the problem and the fix; the CLI maps them to exit code 2."""


class UserError(Exception):
    """Bad input from the user (recipe, path, model id). Printed as one line, never as a traceback."""
