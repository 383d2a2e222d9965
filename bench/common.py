"""Shared pieces of the benchmark scripts: where data and results live, catcomp
at one level with timings, and RD sweeps through :mod:`catcomp.evaluate`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from catcomp.codec import PaddedImage, decode_container, encode_image
from catcomp.container import Container
from catcomp.entropy import level_index
from catcomp.evaluate import ModelCodec, PillowCodec, curves, measure, write_json  # noqa: F401 (re-exported)
from catcomp.evaluate import plot_rd as plot  # noqa: F401 (re-exported)
from catcomp.baselines import BASELINES
from catcomp.metrics import bd_rate, quality_at_rate

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CATCOMP_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "docs" / "bench"


def load_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def catcomp_point(rgb, lm, level, category="other", refine=0):
    """(bytes, decoded RGB, encode s, decode s) for one image at one level."""
    t0 = time.perf_counter()
    data = encode_image(PaddedImage(Image.fromarray(rgb)), lm, level_index(level, lm.model.config.num_levels), category, refine)
    t1 = time.perf_counter()
    out = np.asarray(decode_container(Container.from_bytes(data), lm))
    return data, out, t1 - t0, time.perf_counter() - t1


def model_codec(model, levels, refine=0):
    """A catcomp model (name or directory) at ``levels`` (with ``refine`` steps of latent refinement), for :func:`sweep`."""
    return tuple(levels), ModelCodec(str(model), refine)


def baseline_codecs(names=("jpeg", "webp", "avif", "jpeg2000")) -> dict:
    return {c: (BASELINES[c][2], PillowCodec(c)) for c in names}


def sweep(images, codecs: dict, log=print, extra=None) -> dict:
    """Per codec: mean bpp and metrics over ``images`` at each setting."""
    rows = measure([(str(i), "other", rgb) for i, rgb in enumerate(images)], codecs, extra=extra)
    cv = curves(rows)
    for name, pts in cv.items():
        for p in pts:
            log(f"{name:>9} {p['setting']!s:>6}: {p['bpp']:.3f} bpp  {p['psnr']:.2f} dB  MS-SSIM {p.get('ms_ssim', float('nan')):.4f}")
    return cv


def summarize(cv: dict, reference="jpeg", at_bpp=0.5) -> dict:
    """BD-rates against ``reference`` (PSNR and MS-SSIM) and PSNR at ``at_bpp``."""
    ref = cv[reference]
    res = {}
    for name, rows in cv.items():
        r = [x["bpp"] for x in rows]
        res[name] = {
            f"bd_rate_psnr_vs_{reference}_pct": bd_rate([x["bpp"] for x in ref], [x["psnr"] for x in ref], r, [x["psnr"] for x in rows]),
            f"psnr_at_{at_bpp}_bpp": quality_at_rate(r, [x["psnr"] for x in rows], at_bpp),
        }
        if "ms_ssim" in rows[0]:
            res[name][f"bd_rate_msssim_vs_{reference}_pct"] = bd_rate(
                [x["bpp"] for x in ref], [x["ms_ssim"] for x in ref], r, [x["ms_ssim"] for x in rows]
            )
    return res

