"""The one error type for bad user input: the CLI prints it on one line and exits with code 2."""


class UsageError(ValueError):
    """Bad input from a user (a flag, a file, a config key). The message names the problem and the valid choices."""


def choices_error(what: str, value: object, valid) -> UsageError:
    """`unknown sampler 'foo' (valid: a, b, c)`."""
    return UsageError(f"unknown {what} {value!r} (valid: {', '.join(str(v) for v in valid)})")
