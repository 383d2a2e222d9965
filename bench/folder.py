"""Folder throughput and memory: ``catcomp compress`` over whole folders.

* Kodak (24 images) and a mixed folder of test-split images (``--per-category``
  of each category): images/s and MP/s with 1 and 2 workers, and the share of
  the time spent routing (a first pass with the one-time costs, then a second).
* Peak memory (VmHWM of a fresh child process) compressing a folder of 1,000
  images, one of them 6000x4000, and decompressing the result.

Writes ``docs/bench/folder.json``.

    python bench/folder.py [--per-category 8] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, write_json  # noqa: E402

CHILD = """
import json, re, sys, time

def peak_mb():
    # VmHWM: the peak RSS of this process's own memory since exec. (ru_maxrss would
    # also count the parent's RSS, inherited through fork before the exec.)
    return round(int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024)

from catcomp.folders import compress_files, decompress_files, summary
from catcomp.router import load_router
load_router()  # load the models before timing
run = decompress_files if sys.argv[4] == "decompress" else compress_files
t0 = time.perf_counter()
res = run([sys.argv[1]], sys.argv[2], workers=int(sys.argv[3]))
dt = time.perf_counter() - t0
s = summary(res)
px = sum(r.width * r.height for r in res if r.ok)
print(json.dumps({"seconds": round(dt, 2), "images": s["ok"], "failed": s["failed"], "megapixels": round(px / 1e6, 2),
                  "images_per_s": round(s["ok"] / dt, 2), "mp_per_s": round(px / 1e6 / dt, 3), "mean_bpp": s["mean_bpp"],
                  "categories": s["categories"], "max_rss_mb": peak_mb()}))
"""


def run_child(src, workers, mode="compress", out=None) -> dict:
    """Run ``mode`` over folder ``src`` in a fresh process; outputs go to ``out`` (a temporary folder if None)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", CHILD, str(src), str(out or tmp), str(workers), mode]
        p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def routing_share(src) -> dict:
    """Time to route every image (thumbnail + CNN + codec head) against the time to read and
    compress it, in two passes over ``src`` in this process: ``cold`` includes the one-time
    costs (loading each model, tracing the router's functions), ``warm`` is the steady
    state that a large folder sees."""
    from catcomp.codec import compress_image, read_image
    from catcomp.router import load_router, route_image

    load_router()
    files = sorted(p for p in Path(src).rglob("*") if p.is_file())
    out = {}
    for name in ("cold", "warm"):
        t_route = t_all = 0.0
        for f in files:
            t0 = time.perf_counter()
            im, label = read_image(f)
            t1 = time.perf_counter()
            route = route_image(im)
            t2 = time.perf_counter()
            compress_image(im, label, route.category)
            t_all += time.perf_counter() - t0
            t_route += t2 - t1
        out[name] = {"images": len(files), "route_seconds": round(t_route, 2), "total_seconds": round(t_all, 2),
                     "routing_share_pct": round(100 * t_route / t_all, 2)}
    return out


def mixed_folder(dst: Path, per_category: int):
    from data_prep.sources import open_source

    taken = {}
    for r in open_source(DATA):
        if r.split == "test" and r.category != "kodak" and taken.get(r.category, 0) < per_category:
            taken[r.category] = taken.get(r.category, 0) + 1
            (dst / r.category).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(r.source, dst / r.category / Path(r.source).name)
    return taken


def memory_folder(dst: Path, n=1000):
    rng = np.random.default_rng(0)
    dst.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:4000, 0:6000].astype(np.float32) / 300.0
    big = np.stack([127 + 100 * np.sin(xx * (1 + c) + yy) for c in range(3)], -1) + rng.normal(0, 6, (4000, 6000, 3))
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(dst / "big_6000x4000.jpg", quality=90)
    del big, yy, xx
    for i in range(n - 1):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(dst / f"small_{i:04d}.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-category", type=int, default=8)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "folder.json")
    a = p.parse_args(argv)
    res = {"machine_cpus": __import__("os").cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = {"kodak": DATA / "kodak", "mixed_test": tmp / "mixed"}
        res["mixed_test_counts"] = mixed_folder(folders["mixed_test"], a.per_category)
        for name, src in folders.items():
            res[name] = {f"workers_{w}": run_child(src, w) for w in (1, 2)}
            print(name, json.dumps(res[name]), flush=True)
        res["routing"] = routing_share(folders["mixed_test"])
        print("routing", res["routing"], flush=True)
        if not a.skip_memory:
            memory_folder(tmp / "memory")
            res["memory_1000_images_incl_6000x4000"] = run_child(tmp / "memory", 2, out=tmp / "ccz")
            res["memory_decompress_them"] = run_child(tmp / "ccz", 2, "decompress")
            print("memory", res["memory_1000_images_incl_6000x4000"], res["memory_decompress_them"], flush=True)
    res["command"] = "python bench/folder.py"
    write_json(a.out, res)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
