"""Shared pieces of the benchmark scripts: inputs, catcomp at a level, RD sweeps."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from catcomp import baselines
from catcomp.codec import PaddedImage, decode_container, encode_image
from catcomp.container import Container
from catcomp.entropy import level_index
from catcomp.metrics import all_metrics, bd_rate, quality_at_rate

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CATCOMP_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "docs" / "bench"


def load_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def catcomp_point(rgb, lm, level, category="other"):
    """(bytes, decoded RGB, encode s, decode s) for one image at one level."""
    t0 = time.perf_counter()
    data = encode_image(PaddedImage(Image.fromarray(rgb)), lm, level_index(level, lm.model.config.num_levels), category)
    t1 = time.perf_counter()
    out = np.asarray(decode_container(Container.from_bytes(data), lm))
    return data, out, t1 - t0, time.perf_counter() - t1


def sweep(images, codecs: dict, log=print, extra=None) -> dict:
    """Per codec and setting: the mean of each metric and of bpp over ``images``.

    ``codecs`` maps a name to (settings, fn) with fn(rgb, setting) -> (bytes, decoded);
    ``extra`` maps further metric names to fn(original, decoded).
    """
    out = {}
    for name, (settings, fn) in codecs.items():
        rows = []
        for s in settings:
            per = []
            for rgb in images:
                data, dec = fn(rgb, s)
                m = all_metrics(rgb, dec)
                m.update({k: f(rgb, dec) for k, f in (extra or {}).items()})
                m["bpp"] = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
                per.append(m)
            keys = dict.fromkeys(k for p in per for k in p)  # MS-SSIM is absent for images under 161 px
            row = {"setting": s, **{k: float(np.mean([p[k] for p in per if k in p])) for k in keys}}
            rows.append(row)
            log(f"{name:>9} {s!s:>6}: {row['bpp']:.3f} bpp  {row['psnr']:.2f} dB  MS-SSIM {row.get('ms_ssim', float('nan')):.4f}")
        out[name] = rows
    return out


def baseline_codecs(names=("jpeg", "webp", "avif", "jpeg2000")) -> dict:
    def fn_for(codec):
        def fn(rgb, q):
            data = baselines.encode(rgb, codec, q)
            return data, baselines.decode(data)

        return fn

    return {c: (baselines.BASELINES[c][2], fn_for(c)) for c in names}


def summarize(curves: dict, reference="jpeg", at_bpp=0.5) -> dict:
    """BD-rates against ``reference`` (PSNR and MS-SSIM) and PSNR at ``at_bpp``."""
    ref = curves[reference]
    res = {}
    for name, rows in curves.items():
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


def plot(curves: dict, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, rows in curves.items():
        r = [x["bpp"] for x in rows]
        style = "o-" if name.startswith("catcomp") else ".--"
        axes[0].plot(r, [x["psnr"] for x in rows], style, label=name)
        if "ms_ssim" in rows[0]:
            axes[1].plot(r, [x["ms_ssim"] for x in rows], style, label=name)
    for ax, lab in zip(axes, ("PSNR-RGB (dB)", "MS-SSIM")):
        ax.set_xlabel("bits per pixel (file bytes)")
        ax.set_ylabel(lab)
        ax.set_xlim(0, 2.2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path, obj):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=float) + "\n")
