"""Per-category statistics of a data set (HDF5 patch files or an image tree).

    python -m data_prep.stats PATH [--json]
    catcomp data stats PATH

Per category: image count, resolution histogram (long side), per-channel
mean and variance, the fraction of dark pixels (luma < 16; astronomy) and
edge density (fraction of pixels with Sobel magnitude > 0.1; anime).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import click
import h5py
import numpy as np

from .sources import BadFile, open_source

BINS = (0, 128, 256, 512, 1024, 2048)
_LUMA = np.array([0.299, 0.587, 0.114])


class _Acc:
    def __init__(self):
        self.n = self.pixels = self.dark = self.edges = 0
        self.sum = np.zeros(3)
        self.sq = np.zeros(3)
        self.hist = np.zeros(len(BINS), dtype=int)

    def add(self, rgb: np.ndarray):
        from skimage.filters import sobel

        x = rgb.reshape(-1, 3).astype(np.float64)
        luma = (rgb.astype(np.float64) @ _LUMA) / 255.0
        self.n += 1
        self.pixels += len(x)
        self.sum += x.sum(0)
        self.sq += (x**2).sum(0)
        self.dark += int((luma < 16 / 255).sum())
        self.edges += int((sobel(luma) > 0.1).sum())
        self.hist[np.searchsorted(BINS, max(rgb.shape[:2]), side="right") - 1] += 1

    def result(self) -> dict:
        mean = self.sum / max(self.pixels, 1)
        return {
            "count": self.n,
            "long_side_hist": {f">={b}": int(c) for b, c in zip(BINS, self.hist) if c},
            "mean_rgb": [round(v, 2) for v in mean],
            "var_rgb": [round(v, 1) for v in self.sq / max(self.pixels, 1) - mean**2],
            "dark_fraction": round(self.dark / max(self.pixels, 1), 4),
            "edge_density": round(self.edges / max(self.pixels, 1), 4),
        }


def _h5_images(path: Path):
    with h5py.File(path, "r") as f:
        cat = f.attrs.get("category", path.stem.rsplit("_", 1)[0])
        for i in range(f["images"].shape[0]):
            yield str(cat), f["images"][i]


def _tree_images(path: Path, bad: list):
    for r in open_source(path):
        try:
            yield r.category, r.load()
        except BadFile as e:
            bad.append(f"{r.source}: {e}")


def stats(path) -> dict:
    """Statistics per category for an HDF5 directory/file or an image source."""
    path = Path(path)
    accs, bad = defaultdict(_Acc), []
    h5s = [path] if path.suffix == ".h5" else sorted(path.glob("*.h5")) if path.is_dir() else []
    items = (x for h in h5s for x in _h5_images(h)) if h5s else _tree_images(path, bad)
    for cat, rgb in items:
        accs[cat].add(rgb)
    return {"categories": {c: a.result() for c, a in sorted(accs.items())}, "bad_files": bad}


@click.command("stats")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats_cmd(path, as_json):
    """Per-category statistics of PATH (HDF5 files or an image tree)."""
    s = stats(path)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    click.echo(f"{'category':<12}{'count':>7}{'mean R,G,B':>22}{'var R,G,B':>26}{'dark':>8}{'edges':>8}  long side")
    for cat, r in s["categories"].items():
        mean = ",".join(f"{v:.1f}" for v in r["mean_rgb"])
        var = ",".join(f"{v:.0f}" for v in r["var_rgb"])
        hist = " ".join(f"{k}:{v}" for k, v in r["long_side_hist"].items())
        click.echo(f"{cat:<12}{r['count']:>7}{mean:>22}{var:>26}{r['dark_fraction']:>8.3f}{r['edge_density']:>8.3f}  {hist}")
    for b in s["bad_files"]:
        click.echo(f"bad file: {b}", err=True)


if __name__ == "__main__":
    stats_cmd()
