"""Errors the public API raises for bad input. Each message names the file or value at fault and the fix.

They subclass ValueError so callers that only know the standard library can still catch them; the CLI and the
app turn them into a one-line message (exit code 1 in the CLI) instead of a traceback.
"""


class SegcoreError(ValueError):
    """Base class: a problem with what the user gave us, explained in the message."""


class CheckpointError(SegcoreError):
    """A model folder, weights file or Hub repo that cannot be loaded or written."""


class ImageError(SegcoreError):
    """A file or array that is not a usable image."""
