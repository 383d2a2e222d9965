"""Rate-distortion per category on its ``test`` split: the category model, the
general model and Pillow JPEG, WebP, AVIF.

For each category: PSNR-RGB, MS-SSIM, SSIM, L1, MSE and the high-frequency
energy ratio against bpp (real file bytes), BD-rates of every codec against
JPEG and WebP and of the category model against the general model, the
cheapest measured rate meeting PSNR >= 30 dB and SSIM >= 0.95 (and for the
category's model the lowest position of the continuous rate knob whose mean
over the images meets it, found as ``catcomp tune`` does, but on ``test``
and without writing the card), and the
adversarial effect: the shipped (GAN) model against its own beta=0 version
(``<model dir>/beta0``, written by ``catcomp train``). Writes
``docs/bench/rd_categories.json`` and one PNG per category.

``--refine N`` adds the category model with N steps of encoder-side latent
refinement (:mod:`catcomp.refine`) and its BD-rate against the plain encoder.

    python bench/rd_categories.py [--categories airplane,flower] [--limit N] [--update-cards] [--refine N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, baseline_codecs, model_codec, plot, summarize, sweep, write_json  # noqa: E402

from catcomp.categories import CATEGORIES, models_dir  # noqa: E402
from catcomp.evaluate import tune_category  # noqa: E402
from catcomp.metrics import bd_rate, hf_energy_ratio, quality_at_rate  # noqa: E402
from catcomp.zoo import load_model, update_card  # noqa: E402

GOAL = {"psnr": 30.0, "ssim": 0.95}


def split_images(category, limit=0, split="test"):
    from data_prep.sources import BadFile, open_source

    out = []
    for r in open_source(DATA):
        if r.category == category and r.split == split and (not limit or len(out) < limit):
            try:
                out.append(r.load())
            except BadFile as e:
                print(f"skipped: {e}", file=sys.stderr)
    return out


def delta_at_equal_rate(ref, new, key):
    """Mean of ``new - ref`` quality at the rates of ``ref`` that ``new`` also covers."""
    rn = [x["bpp"] for x in new]
    d = [quality_at_rate(rn, [x[key] for x in new], x["bpp"]) - x[key] for x in ref if min(rn) <= x["bpp"] <= max(rn) and key in x]
    return float(np.mean(d)) if d else float("nan")


def mean_hf_ratio(rows) -> float:
    """A curve's high-frequency energy ratio, averaged over its levels."""
    return float(np.mean([x["hf_ratio"] for x in rows]))


def adversarial_effect(beta0, gan) -> dict:
    """A GAN model's curve against its beta=0 model's: PSNR, MS-SSIM and
    high-frequency energy ratio changes at equal rate, and each curve's mean
    ratio. A phase that only moves the model up its rate curve raises the mean
    ratio (the ratio grows with the rate) but not the ratio at equal rate."""
    return {"psnr_change_db_at_equal_rate": delta_at_equal_rate(beta0, gan, "psnr"),
            "msssim_change_at_equal_rate": delta_at_equal_rate(beta0, gan, "ms_ssim"),
            "hf_ratio_change_at_equal_rate": delta_at_equal_rate(beta0, gan, "hf_ratio"),
            "hf_ratio_beta0": mean_hf_ratio(beta0),
            "hf_ratio_gan": mean_hf_ratio(gan)}


def cheapest_meeting_goal(rows):
    ok = [x["bpp"] for x in rows if x["psnr"] >= GOAL["psnr"] and x["ssim"] >= GOAL["ssim"]]
    return min(ok) if ok else None


def bd(rows_ref, rows, key="psnr"):
    return bd_rate([x["bpp"] for x in rows_ref], [x[key] for x in rows_ref], [x["bpp"] for x in rows], [x[key] for x in rows])


def evaluate(category, levels, baselines, limit, refine=0):
    images = split_images(category, limit)
    if not images:
        raise SystemExit(f"no test images for {category} under {DATA}")
    own_dir = models_dir() / category
    own = load_model(own_dir) if category != "other" and (own_dir / "card.json").is_file() else None
    codecs = {}
    if own:
        codecs[f"catcomp-{category}"] = model_codec(own_dir, levels)
        if (own_dir / "beta0" / "card.json").is_file():
            codecs[f"catcomp-{category}-beta0"] = model_codec(own_dir / "beta0", levels)
    codecs["catcomp-general"] = model_codec("general", levels)
    plain = f"catcomp-{category}" if own else "catcomp-general"
    if refine:
        codecs[f"{plain}-refine{refine}"] = model_codec(own_dir if own else "general", levels, refine)
    codecs.update(baseline_codecs(baselines))
    curves = sweep(images, codecs, log=lambda s: print(f"[{category}] {s}", flush=True), extra={"hf_ratio": hf_energy_ratio})
    summary = summarize(curves, "jpeg")
    for name, rows in curves.items():
        summary[name]["bd_rate_psnr_vs_webp_pct"] = bd(curves["webp"], rows)
        summary[name]["cheapest_bpp_psnr30_ssim095"] = cheapest_meeting_goal(rows)
    goal = tune_category([(None, None, rgb) for rgb in images], category, GOAL, write=False)
    summary[plain]["goal_on_knob"] = {k: goal[k] for k in ("reached", "level", "bpp", "psnr", "ssim")}
    measured = {"general": load_model("general"), **({category: own} if own else {})}
    result = {"images": len(images), "megapixels": round(sum(i.shape[0] * i.shape[1] for i in images) / 1e6, 2), "curves": curves, "summary": summary,
              "model_checksums": {n: lm.card["checksum"] for n, lm in measured.items()},
              "model_weights": {n: lm.card["files"]["model.weights.h5"][:16] for n, lm in measured.items()}}
    if refine:
        new = curves[f"{plain}-refine{refine}"]
        result["refine_vs_plain"] = {"steps": refine, "bd_rate_psnr_pct": bd(curves[plain], new), "bd_rate_msssim_pct": bd(curves[plain], new, "ms_ssim")}
    if own:
        cat = curves[f"catcomp-{category}"]
        result["category_vs_general"] = {"bd_rate_psnr_pct": bd(curves["catcomp-general"], cat),
                                         "bd_rate_msssim_pct": bd(curves["catcomp-general"], cat, "ms_ssim")}
        if f"catcomp-{category}-beta0" in curves:
            result["adversarial_effect"] = adversarial_effect(curves[f"catcomp-{category}-beta0"], cat)
    return result, own


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--categories", default=",".join(CATEGORIES))
    p.add_argument("--levels", default="0,1,2,3,4,5")
    p.add_argument("--codecs", default="jpeg,webp,avif")
    p.add_argument("--limit", type=int, default=0, help="at most N test images per category")
    p.add_argument("--out", type=Path, default=RESULTS / "rd_categories.json")
    p.add_argument("--update-cards", action="store_true", help="write each category's test-split points into its model card")
    p.add_argument("--refine", type=int, default=0, help="also measure the model with N steps of encoder-side latent refinement")
    a = p.parse_args(argv)
    levels = [float(x) for x in a.levels.split(",")]
    report = {"data": str(DATA), "split": "test", "levels": levels, "goal": GOAL, "limit": a.limit, "categories": {}}
    if a.out.is_file():  # categories measured by earlier runs (same levels and limit) are kept
        old = json.loads(a.out.read_text())
        if (old.get("levels"), old.get("limit")) == (levels, a.limit):
            report["categories"] = old["categories"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for category in a.categories.split(","):
        t0 = time.time()
        result, own = evaluate(category, levels, [c for c in a.codecs.split(",") if c], a.limit, a.refine)
        prev = report["categories"].get(category, {})
        same = [prev.get(k, {}).get(category) == result[k].get(category) for k in ("model_checksums", "model_weights")]
        old_adv = prev.get("adversarial_effect") if any(same) else None  # the same weights, whatever their tables
        if own and old_adv and "adversarial_effect" not in result:  # beta0 models live in training runs, not in git
            result["adversarial_effect"] = {**old_adv, "note": old_adv.get("note", "measured by an earlier run with the same weights; this run had no beta0 model")}
            if not same[0]:
                result["adversarial_effect"]["tables"] = old_adv.get("tables", "measured with earlier coding tables of the same weights")
        report["categories"][category] = result
        plot(result["curves"], a.out.with_name(f"rd_{category}.png"), f"{category}: test split ({result['images']} images)")
        if own and a.update_cards:
            name = f"catcomp-{category}"
            update_card(own, {"test": {"images": result["images"], "points": result["curves"][name], **result["summary"][name],
                                       "vs_general": result["category_vs_general"], "adversarial": result.get("adversarial_effect"),
                                       "command": "python bench/rd_categories.py --update-cards"}})
        result["seconds"] = round(time.time() - t0, 1)
        write_json(a.out, report)  # after every category, so a long run keeps what it has
    for category in a.categories.split(","):
        r = report["categories"][category]
        for name, s in r["summary"].items():
            print(f"{category:>10} {name:>24}: " + "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items() if v is not None and not (isinstance(v, float) and np.isnan(v))))
        for k in ("category_vs_general", "adversarial_effect", "refine_vs_plain"):
            if k in r:
                print(f"{category:>10} {k}: " + "  ".join(f"{n}={v:.3f}" if isinstance(v, float) else f"{n}: {v}" for n, v in r[k].items()))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
