"""Checks on everything a user or a file supplies: the one error type, validation and the limits."""
