"""Rate-distortion on Kodak: a catcomp model vs Pillow JPEG, WebP, AVIF, JPEG 2000.

Rates are real file bytes (header included). Writes JSON and a PNG plot.

    python bench/rd_kodak.py [--model general] [--kodak PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, baseline_codecs, load_rgb, model_codec, plot, summarize, sweep, write_json  # noqa: E402

from catcomp.zoo import load_model, update_card  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="general")
    p.add_argument("--kodak", type=Path, default=DATA / "kodak")
    p.add_argument("--levels", default="0,0.5,1,1.5,2,2.5,3,3.5,4,4.5,5")
    p.add_argument("--codecs", default="jpeg,webp,avif,jpeg2000")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    p.add_argument("--out", type=Path, default=RESULTS / "rd_kodak.json")
    p.add_argument("--update-card", action="store_true", help="write the measured points into the model's card.json")
    a = p.parse_args(argv)
    files = sorted(a.kodak.glob("*.png"))[: a.limit or None]
    if not files:
        sys.exit(f"no Kodak images in {a.kodak}")
    images = [load_rgb(f) for f in files]
    lm = load_model(a.model)
    levels = [float(x) for x in a.levels.split(",")]
    codecs = {"catcomp-" + lm.name: model_codec(lm.directory, levels)}
    codecs.update(baseline_codecs([c for c in a.codecs.split(",") if c]))
    t0 = time.time()
    curves = sweep(images, codecs)
    result = {
        "images": [f.name for f in files],
        "model": {"name": lm.name, "checksum": lm.card["checksum"], "training": lm.card.get("training")},
        "curves": curves,
        "summary": summarize(curves),
        "seconds": round(time.time() - t0, 1),
    }
    write_json(a.out, result)
    plot(curves, a.out.with_suffix(".png"), f"Kodak ({len(files)} images): catcomp {lm.name} vs Pillow codecs")
    if a.update_card:
        name = "catcomp-" + lm.name
        update_card(lm, {"kodak": {"images": len(files), "points": curves[name], **result["summary"][name],
                                   "command": "python bench/rd_kodak.py --update-card"}})
    for name, s in result["summary"].items():
        print(f"{name:>18}: " + "  ".join(f"{k}={v:.2f}" for k, v in s.items() if not np.isnan(v)))
    print(f"wrote {a.out} and {a.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
