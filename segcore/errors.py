"""Errors for problems the user can fix; each message names the file or value at fault and the fix.

Everything here subclasses SegcoreError, which subclasses ValueError so callers that only know the standard library
can still catch it. The CLI prints a SegcoreError as one line (exit code 1) and the app shows its message; any other
exception is a bug and keeps its traceback.
"""


class SegcoreError(ValueError):
    """Base class: a problem with what the user gave us, explained in the message."""


class CheckpointError(SegcoreError):
    """A model folder, weights file or Hub repo that cannot be loaded or written."""


class ImageError(SegcoreError):
    """A file or array that is not a usable image."""


class ModelError(SegcoreError):
    """An architecture that cannot be built as asked: unknown name, bad keyword arguments, missing weights."""


class ConfigError(SegcoreError):
    """A setting out of range or not among its choices (recipe, loss, metric, refinement or transform options)."""


class InputError(SegcoreError):
    """Arrays or tensors that do not fit the function they were given to (shape, size, label range)."""


class DatasetError(SegcoreError):
    """A dataset folder that cannot be used as asked; the message names the file or folder and the fix."""
