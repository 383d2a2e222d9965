"""Per-image rate control on Kodak: does ``--target-size`` land within 5% below
the target, and never above it?

For each image and each target rate (bpp), the size limit is
``bpp * pixels / 8`` bytes; ``catcomp.compress(..., target=Target.size(limit))``
picks the level. Also times the search against one plain compression.
Writes ``docs/bench/rate_control.json``.

    python bench/rate_control.py [--category other] [--bpp 0.5,0.75,1.0,1.5] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, write_json  # noqa: E402

import catcomp  # noqa: E402
from catcomp import Target  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kodak", type=Path, default=DATA / "kodak")
    p.add_argument("--category", default="other")
    p.add_argument("--bpp", default="0.5,0.75,1.0,1.5")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "rate_control.json")
    a = p.parse_args(argv)
    files = sorted(a.kodak.glob("*.png"))[: a.limit or None]
    rows = []
    catcomp.compress(Image.open(files[0]), a.category, level=2.0)  # load the model before timing
    for f in files:
        im = Image.open(f)
        im.load()
        t0 = time.perf_counter()
        catcomp.compress(im, a.category, level=2.0)
        plain_s = time.perf_counter() - t0
        for bpp in (float(x) for x in a.bpp.split(",")):
            limit = int(bpp * im.width * im.height / 8)
            t0 = time.perf_counter()
            try:
                data = catcomp.compress(im, a.category, target=Target.size(limit))
                size, level, err = len(data), catcomp.info(data)["level"], None
            except catcomp.CatcompError as e:
                size, level, err = None, None, str(e)
            rows.append({"image": f.name, "target_bpp": bpp, "limit_bytes": limit, "bytes": size, "level": level, "error": err,
                         "fill": size / limit if size else None, "search_s": time.perf_counter() - t0, "plain_s": plain_s})  # fmt: skip
            print(f"{f.name} {bpp}: {size} / {limit} bytes" + (f" level {level}" if level is not None else f" ({err})"), flush=True)
    hit = [r for r in rows if r["bytes"] is not None]
    within = [r for r in hit if 0.95 <= r["fill"] <= 1.0]
    summary = {
        "cases": len(rows),
        "reachable": len(hit),
        "within_5pct_below": len(within),
        "share_within_5pct_below": len(within) / max(len(hit), 1),
        "exceeded": sum(r["fill"] > 1.0 for r in hit),
        "mean_fill": float(np.mean([r["fill"] for r in hit])) if hit else None,
        "min_fill": min((r["fill"] for r in hit), default=None),
        "mean_search_s": float(np.mean([r["search_s"] for r in hit])) if hit else None,
        "mean_plain_compress_s": float(np.mean([r["plain_s"] for r in rows])),
    }
    write_json(a.out, {"category": a.category, "images": len(files), "summary": summary, "rows": rows})
    print(summary)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
