"""Extract image collections into one HDF5 file per category and split.

    python -m data_prep.extract SRC... -o OUTDIR [--patch 256] [--mode grid|random]
    catcomp data extract SRC... -o OUTDIR

Each ``OUTDIR/<category>_<split>.h5`` holds ``images`` (N x P x P x 3 uint8),
``source`` (file, or ``file#index`` inside a pack), ``box`` (x0, y0, x1, y1 in
the possibly downscaled source) and ``scale`` (the downscale factor applied).
The same inputs and ``--seed`` give byte-identical files. Bad files are
reported with the reason and skipped; the summary counts them.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import click
import h5py
import numpy as np

from .patches import DuplicateFilter, downscale, is_flat, patch_boxes, record_rng
from .sources import BadFile, open_source


@dataclass
class Options:
    patch: int = 256
    mode: str = "grid"
    per_image: int = 8
    min_std: float = 2.0
    dedup_bits: int = 3
    long_side: int | None = None
    factor: float | None = None
    method: str = "lanczos"
    seed: int = 0
    unmapped: str | None = None


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)  # (category, split, what) -> n
    bad: list = field(default_factory=list)  # "source: reason"

    def table(self) -> dict:
        out = defaultdict(dict)
        for (cat, split, what), n in sorted(self.counts.items()):
            out[f"{cat}/{split}"][what] = n
        return dict(out)


class H5Writer:
    """Appends patches to per-(category, split) HDF5 files, deterministically."""

    def __init__(self, out_dir: Path, opts: Options):
        self.out_dir, self.opts, self.files = Path(out_dir), opts, {}

    def _open(self, cat, split):
        key = (cat, split)
        if key not in self.files:
            p = self.opts.patch
            path = self.out_dir / f".{cat}_{split}.h5.part"
            f = h5py.File(path, "w", track_order=False)
            f.attrs.update(category=cat, split=split, patch=p, seed=self.opts.seed, options=json.dumps(self.opts.__dict__))
            kw = dict(track_times=False)
            f.create_dataset("images", (0, p, p, 3), np.uint8, maxshape=(None, p, p, 3), chunks=(1, p, p, 3), compression="gzip", compression_opts=1, **kw)
            f.create_dataset("source", (0,), h5py.string_dtype(), maxshape=(None,), chunks=(256,), **kw)
            f.create_dataset("box", (0, 4), np.int32, maxshape=(None, 4), chunks=(256, 4), **kw)
            f.create_dataset("scale", (0,), np.float32, maxshape=(None,), chunks=(256,), **kw)
            self.files[key] = f
        return self.files[key]

    def add(self, cat, split, patches, source, boxes, scale):
        f = self._open(cat, split)
        n, k = f["images"].shape[0], len(patches)
        for name, value in (("images", np.stack(patches)), ("source", [source] * k), ("box", np.array(boxes, np.int32)), ("scale", [scale] * k)):
            f[name].resize(n + k, axis=0)
            f[name][n:] = value

    def close(self):
        for (cat, split), f in self.files.items():
            f.close()
            os.replace(self.out_dir / f".{cat}_{split}.h5.part", self.out_dir / f"{cat}_{split}.h5")


def extract(sources, out_dir, opts: Options | None = None, progress=True) -> Summary:
    """Run the extraction; returns the per category/split counts and bad files."""
    opts = opts or Options()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, writer, dedup = Summary(), H5Writer(out_dir, opts), defaultdict(lambda: DuplicateFilter(opts.dedup_bits))
    records = []
    for src in sources:
        try:
            records.extend(open_source(src, opts.unmapped))
        except BadFile as e:
            summary.bad.append(f"{src}: {e}")
    from tqdm import tqdm

    try:
        for r in tqdm(records, desc="extract", unit="img", disable=not progress):
            c = summary.counts
            try:
                rgb = r.load()
            except BadFile as e:
                summary.bad.append(f"{r.source}: {e}")
                c[r.category, r.split, "bad_files"] += 1
                continue
            rgb, scale = downscale(rgb, opts.long_side, opts.factor, opts.method)
            boxes = patch_boxes(*rgb.shape[:2], opts.patch, opts.mode, opts.per_image, record_rng(opts.seed, r.source))
            c[r.category, r.split, "images"] += 1
            if not boxes:
                c[r.category, r.split, "too_small"] += 1
            kept, kept_boxes = [], []
            for b in boxes:
                p = rgb[b[1] : b[3], b[0] : b[2]]
                if is_flat(p, opts.min_std):
                    c[r.category, r.split, "flat"] += 1
                elif dedup[r.category, r.split].seen(p):
                    c[r.category, r.split, "duplicates"] += 1
                else:
                    kept.append(p)
                    kept_boxes.append(b)
            if kept:
                writer.add(r.category, r.split, kept, r.source, kept_boxes, scale)
                c[r.category, r.split, "patches"] += len(kept)
    finally:
        writer.close()
    return summary


def print_summary(summary: Summary, as_json=False):
    t = summary.table()
    if as_json:
        click.echo(json.dumps({"counts": t, "bad_files": summary.bad}, indent=2))
        return
    cols = ["images", "patches", "too_small", "flat", "duplicates", "bad_files"]
    click.echo(f"{'category/split':<22}" + "".join(f"{k:>11}" for k in cols))
    for key, row in t.items():
        click.echo(f"{key:<22}" + "".join(f"{row.get(k, 0):>11}" for k in cols))
    for b in summary.bad:
        click.echo(f"bad file: {b}", err=True)


def patch_options(f):
    """The patching options shared by extract and downscale."""
    opts = [
        click.option("--patch", default=256, show_default=True, help="Patch side in pixels."),
        click.option("--mode", type=click.Choice(["grid", "random"]), default="grid", show_default=True),
        click.option("--per-image", default=8, show_default=True, help="Most patches per source image."),
        click.option("--min-std", default=2.0, show_default=True, help="Skip patches whose luma std is below this (0..255)."),
        click.option("--dedup-bits", default=3, show_default=True, help="Skip patches within this dHash distance of one kept (-1: off)."),
        click.option("--seed", default=0, show_default=True),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def scale_options(f):
    f = click.option("--method", type=click.Choice(["lanczos", "area"]), default="lanczos", show_default=True)(f)
    f = click.option("--factor", type=float, help="Downscale by this factor (2-4 washes out JPEG artefacts).")(f)
    return click.option("--long-side", type=int, help="Downscale so the long side is at most this.")(f)


@click.command("extract")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--unmapped", help="CIFAR: category for classes without a mapping (default: skip them).")
@scale_options
@patch_options
def extract_cmd(sources, output, as_json, **kw):
    """Extract SOURCES (category folder trees, ../shared/data, CIFAR batch folders, .npz packs) to HDF5."""
    summary = extract(sources, output, Options(**kw), progress=sys.stderr.isatty())
    print_summary(summary, as_json)


if __name__ == "__main__":
    extract_cmd()
