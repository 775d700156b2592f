"""Files written whole or not at all: write to a temporary file beside the target, then rename over it.

A reader (the app polling a job, a second process, a user opening the file) never sees a half-written file, and a
failure part-way (a full disk, an exception while serialising) leaves the previous version in place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a unique temporary path in the target's folder; on success it replaces ``path``, on error it is removed.

    The temporary name keeps the target's suffix, so writers that infer a format from the name (numpy, PIL,
    matplotlib) still do. The file ends with permissions ``mode`` (temporary files are made private otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def json_safe(value):
    """Strict-JSON-ready: NaN and infinities become None, numpy/torch scalars become numbers, keys become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    try:  # numpy and torch scalars
        return json_safe(value.item())
    except (AttributeError, ValueError):
        return str(value)


def write_json_atomic(path: str | Path, values, *, indent: int = 2) -> Path:
    """Strict JSON (see `json_safe`), serialised in full before anything touches the disk."""
    return write_text_atomic(path, json.dumps(json_safe(values), indent=indent, allow_nan=False) + "\n")
