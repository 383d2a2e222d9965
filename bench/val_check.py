"""Does a candidate model beat the shipped one? Compares two ``evaluate.json``
files that ``catcomp evaluate`` wrote for the same images and levels (the old
model's and the candidate's): BD-rate of the candidate's catcomp curve against
the old one (negative = fewer bytes at equal quality) on PSNR, MS-SSIM and
SSIM, and the change of every metric per level. Writes JSON with ``--out``.

    CATCOMP_MODELS=DIR catcomp evaluate ../shared/data/flower/val --category flower --codecs catcomp --levels 0,1,2,3,4 -o OUT
    python bench/val_check.py docs/bench/val_checks/OLD.json OUT/evaluate.json [--out docs/bench/val_checks/NEW.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

from catcomp.evaluate import bd_table  # noqa: E402

KEYS = ("psnr", "ms_ssim", "ssim")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--codec", default="catcomp")
    ap.add_argument("--out", type=Path, help="also copy NEW here (the val_checks record) and write the comparison beside it")
    a = ap.parse_args(argv)
    old, new = (json.loads(p.read_text()) for p in (a.old, a.new))
    if old["images"] != new["images"] or old["levels"] != new["levels"]:
        raise SystemExit(f"{a.old} and {a.new} measured different images or levels")
    cv = {name: d["groups"]["all"]["curves"][a.codec] for name, d in (("old", old), ("new", new))}
    bd = bd_table(cv, KEYS)
    result = {"old": str(a.old), "new": str(a.new), "images": new["images"],
              "bd_rate_pct": {k: bd[k]["new"]["old"] for k in KEYS},
              "per_level": [{"level": p["setting"], **{k: p[k] - q[k] for k in ("bpp", *KEYS) if k in p and k in q}} for q, p in zip(cv["old"], cv["new"])]}
    for k, v in result["bd_rate_pct"].items():
        print(f"BD-rate at equal {k}: {v:+.2f}%")
    for r in result["per_level"]:
        print("level {level:g}: ".format(**r) + " ".join(f"d{k}={v:+.4f}" for k, v in r.items() if k != "level"))
    if a.out:
        shutil.copyfile(a.new, a.out)
        write_json(a.out.with_name(a.out.stem + "_vs_old.json"), result)


if __name__ == "__main__":
    main()
