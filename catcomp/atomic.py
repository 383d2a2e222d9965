"""Atomic, no-clobber file writes: a reader never sees a half-written output."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from .errors import CatcompError


def write_bytes_atomic(path, data: bytes, overwrite: bool = True):
    """Write ``data`` to a temporary file beside ``path``, fsync, then move it in place.

    With ``overwrite=False`` an existing ``path`` is never replaced: the final
    step is a hard link, which fails atomically if the name is taken.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise CatcompError("output exists (use --overwrite to replace it)", path) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_weights_atomic(model, path):
    """``model.save_weights`` to a temporary name beside ``path``, then rename,
    so an interrupted save never leaves a half-written weights file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, path)


def write_table(rows: list[dict], path, fields=None):
    """Rows as JSON or CSV (by the suffix of ``path``), written atomically.

    ``fields`` are the CSV columns (default: every key, in first-seen order).
    """
    if Path(path).suffix.lower() == ".json":
        data = json.dumps(rows, indent=1, default=float).encode()
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fields or list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
        data = buf.getvalue().encode()
    write_bytes_atomic(Path(path), data)
