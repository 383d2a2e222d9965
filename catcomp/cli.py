"""The ``catcomp`` command line: click commands, each a thin call into the API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .categories import CATEGORIES


def _progress(total, label):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="img", disable=total < 2 or not sys.stderr.isatty())

    def step(result):
        bar.update(1)
        if not result.ok:
            bar.write(f"error: {result.error}", file=sys.stderr)

    return bar, step


def _report(results, quiet=False):
    """Print failures and a one-line summary; exit 1 if anything failed."""
    from .folders import summary

    s = summary(results)
    for err in s["failures"]:
        click.echo(f"error: {err}", err=True)
    if not quiet:
        click.echo(
            f"{s['ok']}/{s['files']} files, {s['input_bytes']} -> {s['output_bytes']} bytes"
            + (f", mean {s['mean_bpp']} bpp" if s["mean_bpp"] else "")
        )
    if s["failed"]:
        sys.exit(1)


@click.group()
@click.version_option(package_name="catcomp")
def main():
    """catcomp: category-routed learned image compression."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="A .ccz file (one input) or a directory.")
@click.option("--category", type=click.Choice(CATEGORIES), help="Model to use (default: routed; general until a router exists).")
@click.option("--level", type=float, help="Rate level on the continuous knob 0..5 (default: the category's tuned rate).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (inputs are never replaced).")
def compress(files, output, category, level, overwrite):
    """Compress images to .ccz files."""
    from .folders import compress_files

    bar, step = _progress(len(files), "compress")
    with bar:
        results = compress_files(files, output, category=category, level=level, overwrite=overwrite, progress=step)
    _report(results)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="An image file (one input) or a directory.")
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg", "webp"]), default="png", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (inputs are never replaced).")
def decompress(files, output, fmt, overwrite):
    """Decode .ccz files back to images."""
    from .folders import decompress_files

    bar, step = _progress(len(files), "decompress")
    with bar:
        results = decompress_files(files, output, fmt=fmt, overwrite=overwrite, progress=step)
    _report(results)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
def info(file, as_json):
    """Show the header of a .ccz file."""
    from . import codec
    from .errors import CatcompError

    try:
        h = codec.info(file)
    except CatcompError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(h, indent=2))
    else:
        for k, v in h.items():
            click.echo(f"{k:>15}: {v}")


@main.command()
@click.option("-o", "--output", default="catcomp-demo", show_default=True, type=click.Path(path_type=Path))
def demo(output):
    """Compress and restore a mixed sample folder (scikit-image's photos) with the shipped models."""
    from .demo import build_sample_folder, psnr_of
    from .folders import compress_files, decompress_files

    samples = build_sample_folder(output / "samples")
    comp = compress_files(samples, output / "compressed", overwrite=True)
    made = [Path(r.output) for r in comp if r.ok]
    back = decompress_files(made, output / "restored", overwrite=True)
    click.echo(f"{'file':<24}{'category':>11}{'size':>10}{'bytes':>9}{'bpp':>8}{'PSNR dB':>9}")
    restored = {Path(r.path).name: Path(r.output) for r in back if r.ok}
    for r in comp:
        if r.ok:
            p = psnr_of(r.path, restored[Path(r.output).name]) if Path(r.output).name in restored else float("nan")
            size = f"{r.width}x{r.height}"
            click.echo(f"{Path(r.path).name:<24}{r.category:>11}{size:>10}{r.out_bytes:>9}{r.bpp:>8.3f}{p:>9.2f}")
    click.echo(f"outputs in {output}/compressed and {output}/restored")
    _report(back, quiet=True)
    _report(comp)


@main.group()
def data():
    """Prepare training data: extract, downscale, stats (see data_prep/)."""


def _add_data_commands():
    from data_prep.downscale import downscale_cmd
    from data_prep.extract import extract_cmd
    from data_prep.stats import stats_cmd

    for cmd in (extract_cmd, downscale_cmd, stats_cmd):
        data.add_command(cmd)


_add_data_commands()


if __name__ == "__main__":
    main()
