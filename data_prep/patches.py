"""Downscaling and patch cutting, with the filters that keep a training set clean."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

FILTERS = {"lanczos": Image.Resampling.LANCZOS, "area": Image.Resampling.BOX}


def downscale(rgb: np.ndarray, long_side: int | None = None, factor: float | None = None, method="lanczos") -> tuple[np.ndarray, float]:
    """Shrink so the long side is at most ``long_side`` and/or by ``factor``.

    Never enlarges. Returns the image and the scale applied (1.0: unchanged).
    Downscaling a photo 2-4x washes out its JPEG artefacts, as is usual for
    learned-compression training sets.
    """
    h, w = rgb.shape[:2]
    scale = 1.0
    if factor:
        scale = min(scale, 1.0 / factor)
    if long_side:
        scale = min(scale, long_side / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, FILTERS[method])), scale


def patch_boxes(h: int, w: int, size: int, mode: str, count: int, rng: np.random.Generator) -> list[tuple]:
    """Patch boxes (x0, y0, x1, y1): a centred grid of whole tiles (at most
    ``count``, spread evenly), or ``count`` random positions."""
    if h < size or w < size:
        return []
    if mode == "random":
        ys = rng.integers(0, h - size + 1, count)
        xs = rng.integers(0, w - size + 1, count)
        return [(int(x), int(y), int(x) + size, int(y) + size) for y, x in zip(ys, xs)]
    ny, nx = h // size, w // size
    oy, ox = (h - ny * size) // 2, (w - nx * size) // 2
    boxes = [(ox + i * size, oy + j * size, ox + (i + 1) * size, oy + (j + 1) * size) for j in range(ny) for i in range(nx)]
    if len(boxes) > count:
        boxes = [boxes[k] for k in np.linspace(0, len(boxes) - 1, count).round().astype(int)]
    return boxes


def is_flat(patch: np.ndarray, min_std: float) -> bool:
    """Near-flat: the luma standard deviation (0..255 scale) is below ``min_std``."""
    luma = patch.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(luma.std()) < min_std


def dhash(patch: np.ndarray) -> int:
    """64-bit difference hash of a patch (9x8 grey thumbnail, horizontal gradients)."""
    g = np.asarray(Image.fromarray(patch).convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


class DuplicateFilter:
    """Remembers hashes; a patch within ``max_bits`` Hamming distance of one seen is a duplicate."""

    def __init__(self, max_bits: int = 3):
        self.max_bits = max_bits
        self.hashes = np.empty(0, dtype=np.uint64)

    def seen(self, patch: np.ndarray) -> bool:
        if self.max_bits < 0:
            return False
        h = np.uint64(dhash(patch))
        if self.hashes.size:
            dist = np.bitwise_count(self.hashes ^ h)
            if int(dist.min()) <= self.max_bits:
                return True
        self.hashes = np.append(self.hashes, h)
        return False


def record_rng(seed: int, source: str) -> np.random.Generator:
    """A generator that depends only on the seed and the source name, so
    results do not depend on processing order."""
    return np.random.default_rng(int.from_bytes(hashlib.sha1(f"{seed}:{source}".encode()).digest()[:8], "big"))
