"""User-facing errors: one line that names the problem and the fix; the CLI maps them to exit code 2."""


class UserError(Exception):
    """Bad input from the user (recipe, path, model id). Printed as one line, never as a traceback."""


def one_line(text: object) -> str:
    """`text` with every line break (any that str.splitlines knows) and the blanks around it folded into one space.

    Messages quote the user's input (YAML problem text, key names, pydantic messages), which can hold line breaks.
    """
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def find_cause(err: BaseException | None, kind) -> BaseException | None:
    """The first exception of `kind` (a type or tuple of types) in `err`'s cause/context chain: libraries re-wrap
    errors, so the one that says what the user must fix is often a few links down."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def did_you_mean(value: object, known, cutoff: float = 0.6) -> str:
    """The hint every "unknown name" error ends with: the closest known name, else the whole list.

    One helper so that recipes, the CLI and the registries (targets, schemes, archs, devices) all read alike."""
    import difflib

    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(names)}"
