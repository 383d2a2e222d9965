"""The original research's quality goal on whole ``test`` splits: for each
category, the lowest position of the continuous rate knob whose mean over
*every* test image reaches PSNR >= 30 dB and SSIM >= 0.95 (found as
``catcomp tune`` does, without writing the card), and the bpp there.

``bench/rd_categories.py`` measures the same on its (``--limit``) subset;
this one takes the whole split. ``--refine N`` measures the encoder with N
steps of latent refinement (``--refine-for ssim``: aimed at SSIM) instead of
the plain one; its result is merged beside the plain one.

    python bench/goal.py [--categories astronomy,anime] [--refine 30 --refine-for ssim]

``--split val`` runs the same search on ``val`` (where choices between models are made).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, write_json  # noqa: E402
from rd_categories import GOAL, split_images  # noqa: E402

from catcomp.categories import CATEGORIES, model_name  # noqa: E402
from catcomp.evaluate import tune_category  # noqa: E402
from catcomp.refine import Refinement  # noqa: E402
from catcomp.zoo import load_model  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--categories", default=",".join(CATEGORIES))
    p.add_argument("--refine", type=int, default=0, help="steps of encoder-side latent refinement")
    p.add_argument("--refine-for", choices=["mse", "ssim"], default="mse")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--out", type=Path, default=RESULTS / "goal.json")
    a = p.parse_args(argv)
    refine = Refinement.aiming_at(a.refine, a.refine_for)  # falsy (the plain encoder) at 0 steps
    encoder = f"refine{refine.steps}-{a.refine_for}" if refine else "plain"
    report = json.loads(a.out.read_text()) if a.out.is_file() else {"data": str(DATA), "split": a.split, "goal": GOAL, "categories": {}}
    if report["split"] != a.split:
        raise SystemExit(f"{a.out} holds {report['split']} results; give another --out for {a.split}")
    for category in a.categories.split(","):
        t0 = time.time()
        images = split_images(category, split=a.split)
        res = tune_category([(None, None, rgb) for rgb in images], category, GOAL, write=False, refine=refine)
        res.update(seconds=round(time.time() - t0, 1), checksum=load_model(model_name(category)).card["checksum"],
                   megapixels=round(sum(i.shape[0] * i.shape[1] for i in images) / 1e6, 2))
        report["categories"].setdefault(category, {})[encoder] = res
        print(f"{category} ({encoder}, {res['images']} images): " + (f"level {res['level']}, {res['bpp']:.3f} bpp" if res["reached"] else
              f"not reached; level {res['level']}: {res['bpp']:.3f} bpp") + f", PSNR {res['psnr']:.2f}, SSIM {res['ssim']:.4f} ({res['seconds']} s)", flush=True)
        write_json(a.out, report)


if __name__ == "__main__":
    main()
