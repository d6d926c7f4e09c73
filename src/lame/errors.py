"""Errors caused by what a user gave (a recipe, a path, an item, an option).

``lame`` prints a :class:`UserError` as one line and exits with status 2; any other exception is a
bug and keeps its traceback. The concrete classes also derive from the built-in exception a caller
would expect (``ValueError``, ``FileNotFoundError``).
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error the user can fix by changing their input."""


class InvalidInput(UserError, ValueError):
    """A value, file content or option that is not acceptable."""


class MissingPath(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or is not what it should be)."""
