"""User-facing errors: one line that names the problem and the fix; the CLI maps them to exit code 2."""


class UserError(Exception):
    """Bad input from the user (recipe, path, model id). Printed as one line, never as a traceback."""


def one_line(text: object) -> str:
    """`text` with every line break (any that str.splitlines knows) and the blanks around it folded into one space.

    Messages quote the user's input (YAML problem text, key names, pydantic messages), which can hold line breaks.
    """
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())
