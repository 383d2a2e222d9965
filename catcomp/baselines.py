"""Pillow's own codecs as baselines: JPEG (4:2:0, optimized Huffman), WebP, AVIF, JPEG 2000.

Each baseline maps a quality setting to real file bytes and back, so its
rate is measured the same way as catcomp's: bytes actually written.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: codec -> (Pillow format, save keywords for a quality q, qualities swept by default).
BASELINES = {
    "jpeg": ("JPEG", lambda q: {"quality": q, "optimize": True}, (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
    "webp": ("WEBP", lambda q: {"quality": q, "method": 6}, (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)),
    "avif": ("AVIF", lambda q: {"quality": q, "speed": 6}, (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)),
    # JPEG 2000 is swept by compression ratio (the setting is the ratio); the
    # irreversible 9/7 wavelet and colour transform are its lossy mode.
    "jpeg2000": ("JPEG2000", lambda r: {"quality_mode": "rates", "quality_layers": [r], "irreversible": True, "mct": 1}, (200, 120, 80, 50, 35, 24, 16, 10, 6)),
}


def encode(rgb: np.ndarray, codec: str, q) -> bytes:
    fmt, kwargs, _ = BASELINES[codec]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kwargs(q))
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
