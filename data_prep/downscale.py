"""Downscale large photos to training resolution, then cut patches.

    python -m data_prep.downscale SRC -o OUTDIR [--long-side 512 | --factor 2]
    catcomp data downscale SRC -o OUTDIR

By default it writes HDF5 patch files exactly like ``extract`` does, from the
downscaled images. With ``--images`` it writes the downscaled images instead,
as PNG files mirroring SRC's tree (a valid source for ``extract`` later).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import click
from PIL import Image

from catcomp.atomic import write_bytes_atomic

from .extract import Options, extract, patch_options, print_summary
from .patches import FILTERS, downscale
from .sources import IMAGE_EXTS, BadFile, read_rgb


def downscale_tree(src, out, long_side=512, factor=None, method="lanczos", progress=True) -> tuple[int, list]:
    """Write every image under ``src`` downscaled, as PNG, to the same relative path under ``out``."""
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    done, bad = 0, []
    for f in tqdm(files, desc="downscale", unit="img", disable=not progress):
        try:
            rgb, _ = downscale(read_rgb(f), long_side, factor, method)
        except BadFile as e:
            bad.append(f"{f}: {e}")
            continue
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG")
        write_bytes_atomic((out / f.relative_to(src)).with_suffix(".png"), buf.getvalue())
        done += 1
    return done, bad


@click.command("downscale")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--long-side", type=int, default=512, show_default=True, help="Long side at most this many pixels.")
@click.option("--factor", type=float, help="Also downscale by at least this factor (2-4 washes out JPEG artefacts).")
@click.option("--method", type=click.Choice(sorted(FILTERS)), default="lanczos", show_default=True)
@click.option("--images", is_flag=True, help="Write downscaled PNG images instead of HDF5 patches.")
@patch_options
def downscale_cmd(source, output, long_side, factor, method, images, as_json, **kw):
    """Downscale the photos under SOURCE and write patches (or images) to OUTPUT."""
    progress = sys.stderr.isatty()
    if images:
        done, bad = downscale_tree(source, output, long_side, factor, method, progress)
        click.echo(f"{done} images written to {output}, {len(bad)} bad files")
        for b in bad:
            click.echo(f"bad file: {b}", err=True)
        return
    opts = Options(long_side=long_side, factor=factor, method=method, **kw)
    print_summary(extract([source], output, opts, progress), as_json)


if __name__ == "__main__":
    downscale_cmd()
