"""Encode and decode speed (megapixels/second) on a Kodak image, JSON out.

    python bench/speed.py [--image kodim01.png] [--levels 0,2,5] [--repeat 5] [--refine 30]

``--refine N`` also times encoding with N steps of latent refinement
(once per level, after a warm-up), with float32 gradients too where the
bfloat16 ones are used, and records the file size it gives.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, catcomp_point, load_rgb, write_json  # noqa: E402

from catcomp import refine  # noqa: E402
from catcomp.zoo import load_model  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="general")
    p.add_argument("--image", type=Path, default=DATA / "kodak" / "kodim01.png")
    p.add_argument("--levels", default="0,2,5")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--refine", type=int, default=0, help="also time encoding with N refinement steps")
    p.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    a = p.parse_args(argv)
    rgb = load_rgb(a.image)
    mp = rgb.shape[0] * rgb.shape[1] / 1e6
    lm = load_model(a.model)
    rows = []
    for lv in (float(x) for x in a.levels.split(",")):
        catcomp_point(rgb, lm, lv)  # warm-up
        runs = [catcomp_point(rgb, lm, lv) for _ in range(a.repeat)]
        enc, dec = np.median([r[2] for r in runs]), np.median([r[3] for r in runs])
        rows.append({"level": lv, "bytes": len(runs[0][0]), "encode_s": enc, "decode_s": dec, "encode_mp_s": mp / enc, "decode_mp_s": mp / dec})
        print(f"level {lv}: encode {mp / enc:.2f} MP/s ({enc:.3f} s), decode {mp / dec:.2f} MP/s ({dec:.3f} s)")
        if a.refine:
            catcomp_point(rgb, lm, lv, refine=1)  # traces the gradient
            data, _, secs, _ = catcomp_point(rgb, lm, lv, refine=a.refine)
            rows[-1].update({"refine_steps": a.refine, "refine_bytes": len(data), "refine_encode_s": secs, "refine_encode_mp_s": mp / secs})
            print(f"  with --refine {a.refine}: encode {mp / secs:.3f} MP/s ({secs:.1f} s), {len(data)} bytes")
            if refine.BF16:  # the same through the float32 model, for the bfloat16 speed-up
                refine.BF16 = False
                catcomp_point(rgb, lm, lv, refine=1)
                secs = catcomp_point(rgb, lm, lv, refine=a.refine)[2]
                refine.BF16 = True
                rows[-1]["refine_encode_s_float32_gradients"] = secs
                print(f"  the same with float32 gradients: {secs:.1f} s")
    write_json(a.out, {"image": a.image.name, "megapixels": mp, "model": lm.name, "repeat": a.repeat,
                       "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(), "results": rows})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
