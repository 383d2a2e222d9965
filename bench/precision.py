"""How much a model's decoded quality depends on the arithmetic it runs in, JSON out.

    python bench/precision.py --images DIR --model DIR [--model DIR ...] [--levels 1,2,3] [--limit 40]

Runs each model's whole forward pass (analysis, rounding at the level's gain,
synthesis) on the first ``--limit`` images of DIR (cropped to multiples of
16) once in float32, as the codec does, and once in mixed bfloat16, as
training does by default (``--bf16``), and reports the mean PSNR per level.
A model whose bfloat16 PSNR is clearly above its float32 PSNR was trained
into the rounding of bfloat16 and loses that at coding time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, load_rgb, write_json  # noqa: E402

from catcomp.metrics import psnr  # noqa: E402
from catcomp.transforms import CompressionModel, ModelConfig  # noqa: E402
from catcomp.zoo import WEIGHTS, read_card  # noqa: E402


def mean_psnr(model, images, level) -> float:
    out = []
    for x in images:
        x_hat, _, _ = model(x[None], np.array([level], "float32"), training=False)
        out.append(psnr(x * 255.0, np.asarray(x_hat, dtype="float32")[0] * 255.0))
    return float(np.mean(out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--model", type=Path, action="append", required=True, help="a model directory (repeatable)")
    p.add_argument("--levels", default="1,2,3")
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--out", type=Path, default=RESULTS / "precision.json")
    a = p.parse_args(argv)
    levels = [float(v) for v in a.levels.split(",")]
    images = []
    for f in sorted(f for f in a.images.iterdir() if f.is_file())[: a.limit]:
        rgb = load_rgb(f)
        h, w = rgb.shape[0] // 16 * 16, rgb.shape[1] // 16 * 16
        images.append(rgb[:h, :w].astype("float32") / 255.0)
    t0 = time.time()
    report = {"images": str(a.images), "count": len(images), "levels": levels, "models": {}}
    for d in a.model:
        card = read_card(d)
        row = {"checksum": card.get("checksum")}
        for dtype in ("float32", "mixed_bfloat16"):
            m = CompressionModel(ModelConfig.from_dict(card["config"]), transform_dtype=None if dtype == "float32" else dtype)
            m.load_weights(d / WEIGHTS)
            row[dtype] = [round(mean_psnr(m, images, lv), 3) for lv in levels]
        row["bf16_minus_fp32_db"] = [round(b - f, 3) for b, f in zip(row["mixed_bfloat16"], row["float32"])]
        report["models"][str(d)] = row
        print(d, row, flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    write_json(a.out, report)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
