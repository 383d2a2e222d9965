"""Per-image rate control: pick the knob position that meets a size or quality target.

The continuous rate knob is coded on a grid (``LEVEL_STEP`` apart), and the
analysis transform does not depend on it, so a search runs the analysis
once and then only quantizes and entropy-codes (size targets) or also
synthesizes (quality targets) at each probed grid position. File size and
quality grow with the knob, so a binary search needs about 7 probes.

* size targets (``Target.size``, ``Target.bpp``, ``Target.ratio``): the
  *largest* level whose whole ``.ccz`` file (header included) fits. The
  result never exceeds the limit; if even the lowest level does not fit,
  that is an error.
* quality targets (``Target.quality("psnr=35,ssim=0.97")``): the *smallest*
  file whose decoded image meets every threshold; an error if the highest
  level does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import CatcompError

#: Size suffixes; KB and MB are decimal (1000), KiB and MiB binary (1024).
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20}
#: Quality metrics a target may name (higher is better for each).
QUALITY_METRICS = ("psnr", "ssim", "ms_ssim")


def parse_size(text) -> int:
    """``"50KB"`` -> 50000, ``"1.5MiB"`` -> 1572864, ``"800"`` -> 800 bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in _UNITS:
        raise CatcompError(f"bad size {text!r}: use e.g. 50000, 50KB, 48KiB or 1.5MB")
    size = int(float(m.group(1)) * _UNITS[m.group(2)])
    if size <= 0:
        raise CatcompError(f"bad size {text!r}: must be positive")
    return size


def parse_quality(text) -> dict[str, float]:
    """``"psnr=32,ssim=0.95"`` -> ``{"psnr": 32.0, "ssim": 0.95}``."""
    out = {}
    for part in str(text).split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        try:
            if not sep or key not in QUALITY_METRICS:
                raise ValueError
            out[key] = float(value)
        except ValueError:
            raise CatcompError(f"bad quality target {part.strip()!r}: use METRIC=VALUE with METRIC one of {', '.join(QUALITY_METRICS)}") from None
    return out


def meets(measured: dict, thresholds: dict) -> bool:
    return all(measured[k] >= v for k, v in thresholds.items())


@dataclass(frozen=True)
class Target:
    """What a rate-controlled compression must achieve; build with the class methods."""

    kind: str  # "size", "bpp", "ratio" or "quality"
    value: float | int | dict

    @classmethod
    def size(cls, size) -> "Target":
        """At most ``size`` bytes (an int, or text such as ``"50KB"``)."""
        return cls("size", parse_size(size))

    @classmethod
    def bpp(cls, bpp: float) -> "Target":
        """At most ``bpp`` bits per pixel (file bytes)."""
        if not bpp > 0:
            raise CatcompError(f"bad target bpp {bpp}: must be positive")
        return cls("bpp", float(bpp))

    @classmethod
    def ratio(cls, ratio: float) -> "Target":
        """At least ``ratio``:1 against the raw 8-bit pixels (width x height x bands)."""
        if not ratio >= 1:
            raise CatcompError(f"bad ratio {ratio}: must be at least 1")
        return cls("ratio", float(ratio))

    @classmethod
    def quality(cls, spec) -> "Target":
        """Every threshold met, e.g. ``"psnr=35"`` or ``{"ssim": 0.97}``."""
        return cls("quality", parse_quality(spec) if isinstance(spec, str) else {k: float(v) for k, v in spec.items()})

    def max_bytes(self, width: int, height: int, bands: int) -> int:
        if self.kind == "size":
            return self.value
        if self.kind == "bpp":
            return int(self.value * width * height / 8)
        return int(width * height * bands / self.value)

    def __str__(self):
        if self.kind == "quality":
            return ",".join(f"{k}={v:g}" for k, v in self.value.items())
        return {"size": "{} bytes", "bpp": "{} bpp", "ratio": "{}:1"}[self.kind].format(self.value)


def quality_of(original: np.ndarray, decoded: np.ndarray, metrics) -> dict:
    from . import metrics as M

    if "ms_ssim" in metrics and min(original.shape[:2]) < M.MS_SSIM_MIN_SIDE:
        raise CatcompError(f"ms_ssim needs both sides of at least {M.MS_SSIM_MIN_SIDE} px")
    return {k: getattr(M, k)(original, decoded) for k in metrics}


def bisect_first(lo: int, hi: int, pred) -> int | None:
    """Smallest ``j`` in ``lo..hi`` with ``pred(j)`` for a monotone ``pred``; None if there is none."""
    if not pred(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if pred(mid) else (mid + 1, hi)
    return lo


def search(img, lm, category: str, target: Target, refine=0) -> tuple[bytes, int]:
    """(``.ccz`` bytes, grid index) meeting ``target`` for a :class:`~catcomp.codec.PaddedImage`.

    With ``refine`` (steps or a :class:`~catcomp.refine.Refinement`) the latent is refined (:mod:`catcomp.refine`). For a
    size target: at the level found without refinement (the same size, less
    error). For a quality target: the search goes on below the level found,
    refining at each level it probes (a smaller file; about log2(levels)
    refinements). A refined file that misses the target is not used.
    """
    from .codec import analyse, pack, quantize, refined, synthesize

    y = analyse(img, lm)
    top = lm.tables.num_positions - 1
    probes: dict[tuple, tuple] = {}

    def probe(j, refine=0):
        if (j, refine) not in probes:
            q = quantize(refined(y, img, lm, j, refine), lm, j)
            probes[j, refine] = (q, pack(img, lm, q, j, category))
        return probes[j, refine]

    if target.kind != "quality":
        from PIL import Image

        limit = target.max_bytes(img.width, img.height, Image.getmodebands(img.mode))
        over = bisect_first(0, top, lambda j: len(probe(j)[1]) > limit)
        if over == 0:
            raise CatcompError(f"cannot meet {target}: the lowest rate level already needs {len(probe(0)[1])} bytes (limit {limit})")
        j = top if over is None else over - 1
        if refine and len(probe(j, refine)[1]) <= limit:
            return probe(j, refine)[1], j
        return probe(j)[1], j

    original = img.rgb[: img.height, : img.width]
    measured = {}

    def good(j, refine=0):
        measured[j] = quality_of(original, synthesize(probe(j, refine)[0], lm, j, img.width, img.height), target.value)
        return meets(measured[j], target.value)

    j = bisect_first(0, top, good)
    if j is None:
        got = ", ".join(f"{k}={v:.4g}" for k, v in measured[top].items())
        raise CatcompError(f"cannot meet {target}: the highest rate level gives {got}")
    r = bisect_first(0, j, lambda k: good(k, refine)) if refine else None
    return (probe(j)[1], j) if r is None else (probe(r, refine)[1], r)
