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
