"""The one error type for bad user input: the CLI prints it on one line and exits with code 2."""


class UsageError(ValueError):
    """Bad input from a user (a flag, a file, a config key). The message names the problem and the valid choices."""


def choices_error(what: str, value: object, valid) -> UsageError:
    """`unknown sampler 'foo' (valid: a, b, c)`."""
    from diffuscope.validate import quote

    valid = [str(v) for v in valid]
    shown = ", ".join(valid[:30]) + (f", ... ({len(valid)} in all)" if len(valid) > 30 else "")
    return UsageError(f"unknown {what} {quote(value)} (valid: {shown})")
