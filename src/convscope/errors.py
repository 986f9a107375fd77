"""Errors a user can cause.

Every exception here carries a one-line message that says what went wrong and what to do.
The CLI prints it to stderr and exits with code 2 (no traceback); the Python API lets it raise.
"""


class UserError(Exception):
    """Base class: a problem with the user's input, options or environment."""

    exit_code = 2


class ImageError(UserError):
    """An image file is missing, unreadable, corrupt, or too large."""


class ConfigError(UserError):
    """An option has a bad value (negative weight, unknown layer, mismatched lists...)."""


class DataError(UserError):
    """A data set cannot be used: missing or empty folder, too few classes, offline download..."""


class OutputError(UserError):
    """An output cannot be written (folder missing or not writable)."""


class WeightsError(UserError):
    """Pretrained weights are unavailable (package missing, offline download failed)."""


class NumericalError(UserError):
    """The optimization diverged (NaN or inf loss); lower the learning rate or the weights."""
