"""Errors raised by sampleopt.

Every error names the problem in one line. The CLI maps :class:`UsageError` to
exit code 2 (the user asked for something that cannot be done) and any other
:class:`SampleoptError` to exit code 1 (the computation itself went wrong).
"""

from __future__ import annotations


class SampleoptError(Exception):
    """Base class of the errors sampleopt raises on purpose."""


class UsageError(SampleoptError, ValueError):
    """Bad input from the user: a wrong name, shape, type or value."""


class NonFiniteError(SampleoptError, FloatingPointError):
    """NaN or inf appeared in a reward, loss or gradient."""


def describe_error(exc: BaseException) -> str:
    """One line for a summary or the command line: sampleopt's own errors by their
    message, anything else by its type and message (an interrupt by its name)."""
    if isinstance(exc, SampleoptError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
