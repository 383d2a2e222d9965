"""Evaluation: rate-distortion of catcomp and the Pillow baselines, BD-rates,
per-category rate tuning and the per-category optimal-ratio comparison.

Every rate is real file bytes (``bpp = 8 * bytes / pixels``, header
included) and every catcomp point is decoded from those bytes. Quality is
measured on RGB by :mod:`catcomp.metrics`.

Three entry points, each behind a CLI command:

* :func:`evaluate` -- codecs x rate points x images -> per-image rows, mean
  curves per category, BD-rates between every pair of codecs, plots.
* :func:`tune` -- per category, the lowest knob position whose quality on the
  ``val`` split meets a target; written to the model card as its tuned rate.
* :func:`compare` -- per category on ``test``: the tuned operating point, its
  size against raw and PNG, and the rate JPEG/WebP/AVIF need for its PSNR.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import baselines
from .atomic import write_bytes_atomic, write_table
from .categories import CATEGORIES, model_name
from .codec import PaddedImage, analyse, decode_container, pack, quantize, refined, synthesize
from .container import Container
from .entropy import LEVEL_STEP, level_index
from .errors import CatcompError
from .metrics import MS_SSIM_MIN_SIDE, all_metrics, bd_rate, psnr, rate_at_quality
from .ratecontrol import bisect_first, meets, parse_quality, quality_of
from .refine import Refinement
from .zoo import load_model, read_card, write_card

#: Codec names :func:`evaluate` knows: catcomp (the image's category model),
#: general (the general model on every image) and Pillow's codecs.
CODECS = ("catcomp", "general", *baselines.BASELINES)
QUALITY_KEYS = ("psnr", "ms_ssim", "ssim", "l1", "mse")
DEFAULT_LEVELS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


# --- codecs as "one image, many rate points" ---------------------------------------


class ModelCodec:
    """catcomp at several levels of the knob; the analysis runs once per image."""

    def __init__(self, fixed_model: str | None = None, refine=0):
        self.fixed_model = fixed_model  # None: each image's category model
        self.refine = refine  # encoder-side refinement at each level: steps or a Refinement

    def points(self, rgb, category, levels):
        lm = load_model(self.fixed_model or model_name(category))
        img = PaddedImage(Image.fromarray(rgb))
        y = analyse(img, lm)
        out = []
        for lv in levels:
            j = level_index(lv, lm.model.config.num_levels)
            data = pack(img, lm, quantize(refined(y, img, lm, j, self.refine), lm, j), j, category)
            out.append((data, np.asarray(decode_container(Container.from_bytes(data), lm))))
        return out


class PillowCodec:
    def __init__(self, name):
        self.name = name

    def points(self, rgb, category, settings):
        out = []
        for s in settings:
            data = baselines.encode(rgb, self.name, s)
            out.append((data, baselines.decode(data)))
        return out


def make_codecs(names, levels=DEFAULT_LEVELS, refine=0) -> dict:
    """name -> (settings, codec) for names from :data:`CODECS` (catcomp's encoders refining ``refine`` steps)."""
    out = {}
    for n in names:
        if n not in CODECS:
            raise CatcompError(f"unknown codec {n!r}: choose from {', '.join(CODECS)}")
        if n in ("catcomp", "general"):
            out[n] = (tuple(levels), ModelCodec(None if n == "catcomp" else "general", refine))
        else:
            out[n] = (baselines.BASELINES[n][2], PillowCodec(n))
    return out


# --- measuring ------------------------------------------------------------------------------


def measure(items, codecs: dict, quality=None, extra=None, progress=None, workers=1) -> list[dict]:
    """One row per (image, codec, setting): bytes, bpp and quality.

    ``items`` are (name, category, RGB array); ``quality`` maps a metric name
    to fn(original, decoded) (default: all of :func:`~catcomp.metrics.all_metrics`);
    ``extra`` adds further such metrics. ``workers`` images are measured at
    once (threads); rows come back in input order either way.
    """

    def one(item):
        name, category, rgb = item
        rows = []
        for codec, (settings, impl) in codecs.items():
            for s, (data, dec) in zip(settings, impl.points(rgb, category, settings)):
                m = all_metrics(rgb, dec) if quality is None else {k: f(rgb, dec) for k, f in quality.items()}
                m.update({k: f(rgb, dec) for k, f in (extra or {}).items()})
                rows.append({"image": name, "category": category, "codec": codec, "setting": s,
                             "bytes": len(data), "bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1]), **m})  # fmt: skip
        if progress:
            progress(name)
        return rows

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [row for rows in pool.map(one, items) for row in rows]


def curves(rows, group: str | None = None) -> dict:
    """codec -> mean-over-images points (one per setting), for one category or all."""
    out: dict = {}
    for r in rows:
        if group in (None, r["category"]):
            out.setdefault(r["codec"], {}).setdefault(r["setting"], []).append(r)
    res = {}
    for codec, by_setting in out.items():
        res[codec] = []
        for s, rs in by_setting.items():
            keys = [k for k in ("bpp", *QUALITY_KEYS, *rs[0]) if isinstance(rs[0].get(k), float)]
            point = {"setting": s, "images": len(rs)}
            for k in dict.fromkeys(keys):  # MS-SSIM is absent for small images
                vals = [r[k] for r in rs if k in r]
                point[k] = float(np.mean(vals))
            res[codec].append(point)
    return res


def _bd(ref, new, key):
    if not all(key in p for p in ref + new):
        return float("nan")
    return bd_rate([p["bpp"] for p in ref], [p[key] for p in ref], [p["bpp"] for p in new], [p[key] for p in new])


def bd_table(cv: dict, keys=("psnr", "ms_ssim")) -> dict:
    """BD-rate (%) of every codec against every other: ``table[key][new][ref]``."""
    return {k: {a: {b: _bd(cv[b], cv[a], k) for b in cv if b != a} for a in cv} for k in keys}


def plot_rd(cv: dict, path, title, operating_points=None):
    """PSNR and MS-SSIM against bpp for every codec; writes ``path`` (.png or .svg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, pts in cv.items():
        style = "o-" if name.startswith(("catcomp", "general")) else ".--"
        for ax, key in zip(axes, ("psnr", "ms_ssim")):
            if all(key in p for p in pts):
                ax.plot([p["bpp"] for p in pts], [p[key] for p in pts], style, label=name)
    for name, p in (operating_points or {}).items():
        for ax, key in zip(axes, ("psnr", "ms_ssim")):
            if key in p:
                ax.plot(p["bpp"], p[key], "k*", ms=12)
                ax.annotate(name, (p["bpp"], p[key]), textcoords="offset points", xytext=(6, -10), fontsize=8)
    for ax, lab in zip(axes, ("PSNR-RGB (dB)", "MS-SSIM")):
        ax.set_xlabel("bits per pixel (file bytes)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path, obj):
    write_bytes_atomic(Path(path), (json.dumps(obj, indent=2, default=float, allow_nan=True) + "\n").encode())


# --- catcomp evaluate -----------------------------------------------------------------------


def evaluate(items, codec_names=("catcomp", "jpeg", "webp"), levels=DEFAULT_LEVELS, out_dir=None, progress=None, refine=0) -> dict:
    """RD of ``codec_names`` on ``items`` (name, category, RGB); per category and overall.

    ``refine`` (steps or a :class:`~catcomp.refine.Refinement`) encodes the
    catcomp points with latent refinement (:mod:`catcomp.refine`).

    With ``out_dir``: ``evaluate.json`` (curves and BD tables),
    ``evaluate.csv`` (one row per image, codec and setting) and
    ``rd_<group>.png`` / ``.svg`` per category and for ``all``.
    """
    t0 = time.time()
    rows = measure(items, make_codecs(codec_names, levels, refine), progress=progress)
    groups = {"all": None, **{c: c for c in CATEGORIES if any(r["category"] == c for r in rows)}}
    r = Refinement.of(refine)
    report = {"images": len(items), "codecs": list(codec_names), "levels": list(levels), "refine": r.steps, "refine_ssim_weight": r.ssim, "groups": {}}
    for g, cat in groups.items():
        cv = curves(rows, cat)
        report["groups"][g] = {"images": sum(1 for i in items if cat in (None, i[1])), "curves": cv, "bd_rate_pct": bd_table(cv)}
    report["seconds"] = round(time.time() - t0, 1)
    if out_dir:
        out_dir = Path(out_dir)
        write_json(out_dir / "evaluate.json", report)
        write_table(rows, out_dir / "evaluate.csv")
        for g, r in report["groups"].items():
            for ext in ("png", "svg"):
                plot_rd(r["curves"], out_dir / f"rd_{g}.{ext}", f"{g}: {r['images']} images")
    return report


# --- data splits ------------------------------------------------------------------------------


def split_items(data, category: str, split: str, limit: int = 0) -> list:
    """(name, category, RGB) for the images of ``category`` in ``split`` of a data tree."""
    from data_prep.sources import BadFile, open_source

    items = []
    try:
        records = [r for r in open_source(data) if r.category == category and r.split == split]
    except (OSError, BadFile) as e:
        raise CatcompError(f"cannot read the data: {e}", data) from None
    for r in records[: limit or None]:
        try:
            items.append((r.source, category, r.load()))
        except BadFile as e:
            raise CatcompError(str(e), r.source) from None
    if not items:
        raise CatcompError(f"no {split} images of {category}", data)
    return items


# --- catcomp tune ------------------------------------------------------------------------------


def summary_stat(per_image: list[dict], thresholds: dict, stat: str) -> tuple[bool, dict]:
    """Whether ``per_image`` quality meets ``thresholds`` under ``stat``, and the summary.

    ``mean``: the mean of each metric meets its threshold. ``pNN`` (e.g.
    ``p90``): at least NN% of the images meet every threshold on their own.
    """
    means = {k: float(np.mean([m[k] for m in per_image])) for k in thresholds}
    share = float(np.mean([meets(m, thresholds) for m in per_image]))
    summary = {**means, "share_meeting": share}
    if stat == "mean":
        return meets(means, thresholds), summary
    if stat.startswith("p") and stat[1:].replace(".", "", 1).isdigit() and 0 < float(stat[1:]) <= 100:
        return share >= float(stat[1:]) / 100 - 1e-9, summary
    raise CatcompError(f"bad statistic {stat!r}: use mean or pNN, e.g. p90")


class _Probe:
    """One model on a set of images: latents cached, quality and bpp at any grid index."""

    def __init__(self, lm, items, thresholds, category, refine=0):
        self.lm, self.thresholds, self.category, self.refine = lm, thresholds, category, refine
        self.imgs = [PaddedImage(Image.fromarray(rgb)) for _, _, rgb in items]
        self.latents = [analyse(img, lm) for img in self.imgs]
        self.cache: dict[int, list] = {}  # grid index -> quantized latents
        self.measured: dict[int, list] = {}  # grid index -> per-image quality
        if "ms_ssim" in thresholds and any(min(rgb.shape[:2]) < MS_SSIM_MIN_SIDE for *_, rgb in items):
            raise CatcompError(f"ms_ssim targets need images of at least {MS_SSIM_MIN_SIDE} px a side")

    def quantized(self, j) -> list:
        if j not in self.cache:
            self.cache[j] = [quantize(refined(y, img, self.lm, j, self.refine), self.lm, j) for img, y in zip(self.imgs, self.latents)]
        return self.cache[j]

    def quality(self, j) -> list[dict]:
        if j not in self.measured:
            self.measured[j] = [quality_of(img.rgb[: img.height, : img.width], synthesize(q, self.lm, j, img.width, img.height), self.thresholds)
                                for img, q in zip(self.imgs, self.quantized(j))]  # fmt: skip
        return self.measured[j]

    def bpp(self, j) -> float:
        return float(np.mean([8 * len(pack(img, self.lm, q, j, self.category)) / (img.width * img.height) for img, q in zip(self.imgs, self.quantized(j))]))


def tune_category(items, category: str, thresholds: dict, stat="mean", write=True, refine=0) -> dict:
    """The lowest knob position meeting ``thresholds`` on ``items``; written to the card.
    ``refine`` measures the encoder with that refinement (benchmarks; ``write`` needs the plain one)."""
    if refine and write:
        raise ValueError("the tuned rate is the plain encoder's: tune with refine only with write=False")
    lm = load_model(model_name(category))
    probe = _Probe(lm, items, thresholds, category, refine)
    top = lm.tables.num_positions - 1
    j = bisect_first(0, top, lambda j: summary_stat(probe.quality(j), thresholds, stat)[0])
    jj = top if j is None else j
    ok, summ = summary_stat(probe.quality(jj), thresholds, stat)
    res = {"category": category, "model": lm.name, "images": len(items), "reached": j is not None,
           "level": round(jj * LEVEL_STEP, 4), "bpp": probe.bpp(jj), **summ}  # fmt: skip
    if j is not None and write:
        tuning = {"target": thresholds, "statistic": stat, "split": "val", **{k: v for k, v in res.items() if k != "category"}}
        card = read_card(lm.directory)
        own = category == "other" or model_name(category) == category  # the model is this category's own
        for d in (card, lm.card):  # on disk, and in the loaded model so this process sees it too
            d.setdefault("tuned_levels", {})[category] = res["level"]
            d.setdefault("tuning", {})[category] = tuning
            if own:  # also the model's default rate
                d["tuned_level"] = res["level"]
                d.pop("tuned_level_note", None)
        write_card(lm.directory, card)
    return res


# --- catcomp compare ---------------------------------------------------------------------------


#: Baseline settings swept by ``compare``: enough points to interpolate the
#: rate each needs at catcomp's operating PSNR (0.1 to 3 bpp on photos).
COMPARE_BASELINES = {"jpeg": (3, 10, 25, 40, 55, 70, 85, 95), "webp": (0, 10, 25, 40, 60, 75, 90, 98), "avif": (0, 15, 30, 45, 60, 75, 90)}


def _png_bytes(rgb) -> int:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.tell()


def compare_category(items, category: str, levels=DEFAULT_LEVELS, baseline_names=("jpeg", "webp", "avif")) -> dict:
    """The operating point of ``category`` on ``items`` against raw, PNG and the baselines."""
    lm = load_model(model_name(category))
    tuned = lm.tuned_level_for(category)
    codecs = {"catcomp": (tuple(levels), ModelCodec()), "tuned": ((tuned,), ModelCodec())}
    codecs.update({b: (COMPARE_BASELINES[b], PillowCodec(b)) for b in baseline_names})
    # full metrics at the operating point; the curves need only PSNR. Two images at a
    # time: TensorFlow, the Pillow encoders and the metrics leave part of 2 cores idle.
    workers = min(2, os.cpu_count() or 1)
    rows = measure(items, {"tuned": codecs.pop("tuned")}, workers=workers) + measure(items, codecs, quality={"psnr": psnr}, workers=workers)
    cv = curves(rows)
    op = cv.pop("tuned")[0]
    pixels = sum(rgb.shape[0] * rgb.shape[1] for *_, rgb in items)
    tuned_bytes = sum(r["bytes"] for r in rows if r["codec"] == "tuned")
    png = sum(_png_bytes(rgb) for *_, rgb in items)
    res = {
        "category": category, "model": lm.name, "checksum": lm.card["checksum"], "images": len(items), "tuned_level": tuned,
        "bpp": op["bpp"], "pct_of_raw": 100 * tuned_bytes / (3 * pixels), "pct_of_png": 100 * tuned_bytes / png,
        **{k: op[k] for k in QUALITY_KEYS if k in op}, "curve": cv["catcomp"], "baseline_curves": {b: cv[b] for b in baseline_names},
    }  # fmt: skip
    for b in baseline_names:
        # the rate the baseline needs for the tuned PSNR, from its mean curve
        res[f"{b}_bpp"] = need = rate_at_quality([p["bpp"] for p in cv[b]], [p["psnr"] for p in cv[b]], op["psnr"])
        res[f"saving_vs_{b}_pct"] = 100 * (1 - op["bpp"] / need)
    tuning = lm.card.get("tuning", {}).get(category)
    if tuning:  # does the operating point tuned on val also meet its target here?
        per_image = [r for r in rows if r["codec"] == "tuned"]
        ok, summ = summary_stat(per_image, tuning["target"], tuning["statistic"])
        res["target"] = {"target": tuning["target"], "statistic": tuning["statistic"], "met_on_val": tuning.get("reached", True),
                         "met_on_test": ok, "test": summ, "val": {k: tuning.get(k) for k in (*tuning["target"], "share_meeting")}}  # fmt: skip
    return res


def plot_compare(results: list[dict], path):
    """Every category's RD curve (PSNR) with its operating point, and its savings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, r in enumerate(results):
        c = f"C{i}"
        ax.plot([p["bpp"] for p in r["curve"]], [p["psnr"] for p in r["curve"]], "o-", color=c, ms=3, label=r["category"])
        ax.plot(r["bpp"], r["psnr"], "*", color=c, ms=14, mec="k")
    ax.set_xlabel("bits per pixel (file bytes)")
    ax.set_ylabel("PSNR-RGB (dB)")
    ax.set_title("catcomp per category; * = tuned operating point")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    names = [k[len("saving_vs_") : -len("_pct")] for k in results[0] if k.startswith("saving_vs_")]
    x = np.arange(len(results))
    for k, b in enumerate(names):
        bx.bar(x + (k - (len(names) - 1) / 2) * 0.8 / len(names), [r[f"saving_vs_{b}_pct"] for r in results], 0.8 / len(names), label=f"vs {b}")
    bx.axhline(0, color="k", lw=0.8)
    bx.set_xticks(x, [r["category"] for r in results])
    bx.set_ylabel("bytes saved at equal PSNR (%)")
    bx.set_title("saving at the operating point")
    bx.grid(alpha=0.3, axis="y")
    bx.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


COMPARE_COLUMNS = ("category", "tuned_level", "bpp", "pct_of_raw", "pct_of_png", "psnr", "ms_ssim", "jpeg_bpp", "saving_vs_jpeg_pct",
                   "webp_bpp", "saving_vs_webp_pct", "avif_bpp", "saving_vs_avif_pct")  # fmt: skip


def compare(data, categories=CATEGORIES, split="test", limit=0, out_dir=None, progress=None, update=False) -> dict:
    """:func:`compare_category` for each category on ``split``; table, JSON, CSV and figure.

    With ``update`` only ``categories`` are measured and the other rows of
    ``out_dir/compare.json`` are kept (if it was made on the same split): each row
    names its model's checksum and the time it was measured, so a kept row can be
    checked against the installed model (:func:`stale_rows`)."""
    t0 = time.time()
    results = []
    for c in categories:
        t1 = time.time()
        row = compare_category(split_items(data, c, split, limit), c)
        results.append({**row, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.time() - t1, 1)})
        if progress:
            progress(c)
    old = Path(out_dir) / "compare.json" if update and out_dir else None
    if old and old.is_file():
        prev = json.loads(old.read_text())
        if prev.get("split") != split:
            raise ValueError(f"{old} compares the {prev.get('split')} split, not {split}: cannot update it")
        kept = [r for r in prev["results"] if r["category"] not in categories]
        order = {c: i for i, c in enumerate(CATEGORIES)}
        results = sorted(kept + results, key=lambda r: order.get(r["category"], len(order)))
    report = {"split": split, "data": str(data), "results": results, "seconds": round(time.time() - t0, 1), "measured_now": list(categories)}
    if out_dir:
        out_dir = Path(out_dir)
        write_json(out_dir / "compare.json", report)
        write_table([{k: r.get(k) for k in COMPARE_COLUMNS} for r in results], out_dir / "compare.csv", COMPARE_COLUMNS)
        for ext in ("png", "svg"):
            plot_compare(results, out_dir / f"compare.{ext}")
    return report


def stale_rows(report: dict) -> list[str]:
    """Categories whose row in a compare report measured another model than the one installed now."""

    def installed(category):
        try:
            return load_model(model_name(category)).card["checksum"]
        except CatcompError:
            return None

    return [r["category"] for r in report["results"] if r.get("checksum") != installed(r["category"])]


def format_table(rows, columns) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}" if isinstance(v, float) else str(v)

    cells = [[c for c in columns]] + [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)


__all__ = ["evaluate", "tune_category", "compare", "compare_category", "measure", "curves", "bd_table", "parse_quality"]
