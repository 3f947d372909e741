"""User-facing errors: raised for bad input, printed by the CLI without a traceback."""


class LanternError(ValueError):
    """Bad input or a state the user can fix (a malformed file, a wrong setting).

    The message must say what was wrong and where (file, line, field), and what to do.
    """
