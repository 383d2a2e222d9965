"""The adversarial phase's trade-off: models that share one beta=0 model, each
after its own adversarial phase (e.g. different ``--beta``), against that
beta=0 model on a category's ``val`` split (choosing beta is tuning, so not
``test``): PSNR, MS-SSIM and high-frequency energy ratio change at equal rate, mean ratio.
Writes ``docs/bench/adversarial_<category>.json``.

    catcomp train airplane --data D --init RUN/beta0 --steps 0 --gan-steps 1000 --beta 1.0 --out runs/b1
    python bench/adversarial.py airplane RUN/beta0 RUN runs/b1 [--split val] [--limit 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, model_codec, sweep, write_json  # noqa: E402
from rd_categories import adversarial_effect, mean_hf_ratio, split_images  # noqa: E402

from catcomp.metrics import hf_energy_ratio  # noqa: E402
from catcomp.zoo import read_card  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("category")
    ap.add_argument("beta0", help="the beta=0 model directory")
    ap.add_argument("models", nargs="+", help="model directories fine-tuned adversarially from beta0")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--levels", default="0,1,2,3,4")
    ap.add_argument("--out", type=Path, help="[default: docs/bench/adversarial_<category>.json]")
    args = ap.parse_args(argv)
    levels = [float(v) for v in args.levels.split(",")]
    images = split_images(args.category, args.limit, args.split)
    if not images:
        raise SystemExit(f"no {args.split} images for {args.category}")
    dirs = [args.beta0, *args.models]
    curves = sweep(images, {d: model_codec(d, levels) for d in dirs}, extra={"hf_ratio": hf_energy_ratio})
    rows = []
    for d in dirs:
        card = read_card(Path(d))
        run = card["training"]["runs"][-1]
        r = {"model": d, "checksum": card["checksum"], "beta": run.get("beta", 0.0), "gan_steps": run.get("gan_steps", 0), "disc_warmup": run.get("disc_warmup", 0), "hf_ratio": mean_hf_ratio(curves[d])}
        if d != args.beta0:
            effect = adversarial_effect(curves[args.beta0], curves[d])
            r |= {k: v for k, v in effect.items() if "change" in k}
        rows.append(r)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    out = args.out or RESULTS / f"adversarial_{args.category}.json"
    write_json(out, {"category": args.category, "split": args.split, "images": len(images), "levels": levels, "models": rows, "curves": curves})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
