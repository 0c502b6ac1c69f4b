"""The project's error kinds, by who must act on them.

A :class:`UserInputError` is the user's to fix (a malformed record, a missing file, a bad setting, a checkpoint for
another model, a file that would run code): ``train.py``, ``evaluate.py`` and ``lit-edit`` print it as one line
and exit with status 2. Anything else is a programming error and keeps its traceback. An edit that cannot be made
is an :class:`~lit_edit.mechanics.edited_model.EditFailedError` (the base model is unchanged; an evaluation records
it and goes on).
"""

from __future__ import annotations


class UserInputError(Exception):
    """A user's mistake; the message says what is wrong and where (file, line, field or flag)."""


class ConfigurationError(UserInputError, ValueError):
    """A setting that cannot work (a negative learning rate, zero steps); the message names the setting."""


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that cannot be used here: unreadable, or made for another model, weights or editor shape."""


class UnsafeFileError(UserInputError, ValueError):
    """A file that would run code if loaded (a pickle with globals outside the tensor allowlist): refused."""


class RunInUseError(UserInputError, RuntimeError):
    """Another process is writing the same output (results log, save directory): refused rather than mixed."""
