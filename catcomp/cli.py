"""The ``catcomp`` command line: click commands, each a thin call into the API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .categories import CATEGORIES

DEFAULT_RD_STEPS, DEFAULT_GAN_STEPS, DEFAULT_BETA = 2000, 1000, 0.02


def _progress(label):
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="img", disable=not sys.stderr.isatty())

    def step(result, total):
        bar.total = total
        bar.update(1)
        if result is not None and not result.ok:
            bar.write(f"error: {result.error}", file=sys.stderr)

    return bar, step


def _report(results, quiet=False, report=None, table=False):
    """Print failures and a summary; write the per-file report; exit 1 if anything failed."""
    from .folders import summary, write_report

    s = summary(results)
    if report:
        write_report(results, report)
    if table and not quiet:
        click.echo(f"{'category':<12}{'files':>6}{'input bytes':>14}{'output bytes':>14}{'mean bpp':>10}")
        for c, t in s["categories"].items():
            click.echo(f"{c:<12}{t['files']:>6}{t['input_bytes']:>14}{t['output_bytes']:>14}{8 * t['output_bytes'] / max(t['pixels'], 1):>10.3f}")
    for err in s["failures"]:
        click.echo(f"error: {err}", err=True)
    if not quiet:
        click.echo(
            f"{s['ok']}/{s['files']} files ok"
            + (f" ({s['skipped']} already done)" if s["skipped"] else "")
            + f", {s['failed']} failed, {s['input_bytes']} -> {s['output_bytes']} bytes"
            + (f", mean {s['mean_bpp']} bpp" if s["mean_bpp"] else "")
        )
    if s["failed"]:
        sys.exit(1)


@click.group()
@click.version_option(package_name="catcomp")
def main():
    """catcomp: category-routed learned image compression."""


_workers = click.option("-j", "--workers", type=int, help="Images processed at once [default: the CPU count].")
_refine_for = click.option("--refine-for", type=click.Choice(["mse", "ssim"]), default="mse", show_default=True,
                           help="What --refine optimises besides rate: mse (and so PSNR), or ssim (MSE plus SSIM, for SSIM targets).")


def _refinement(steps, aim):
    """--refine and --refine-for as the API's ``refine`` argument."""
    if not steps:
        if aim != "mse":
            raise click.UsageError("--refine-for needs --refine N")
        return 0
    from .refine import Refinement

    return Refinement.aiming_at(steps, aim)


_report_opt = click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write one row per file to a .csv or .json file.")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="A .ccz file (one input) or a directory (folders are mirrored).")
@click.option("--category", type=click.Choice(CATEGORIES), help="Model to use for every image [default: the router decides per image].")
@click.option("--level", type=float, help="Rate level on the continuous knob 0..5 [default: the category's tuned rate].")
@click.option("--target-size", help="Per image: the best quality whose file fits, e.g. 50KB, 48KiB, 20000 (bytes).")
@click.option("--target-bpp", type=float, help="Per image: the best quality at most this many bits per pixel.")
@click.option("--ratio", type=float, help="Per image: at least this compression ratio against raw 8-bit pixels, e.g. 20 for 20:1.")
@click.option("--target-quality", help="Per image: the smallest file meeting every threshold, e.g. psnr=35 or ssim=0.97,psnr=32.")
@click.option("--refine", type=click.IntRange(0), default=0, show_default=True,
              help="Encoder effort: steps of latent refinement per image (30 is a good choice; encoding is then tens of times slower, "
              "smaller files at equal quality, same decoder).")
@_refine_for
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (inputs are never replaced). Without it, complete outputs are kept and skipped.")
@_workers
@_report_opt
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a thread pool here; ray: Ray Data actors on a Ray cluster (pip install 'catcomp[ray]').")
@click.option("--address", help="Ray cluster to join (auto, ray://host:10001) [default: RAY_ADDRESS, else a local instance].")
@click.option("--num-workers", type=int, help="Ray actors, one CPU each [default: the cluster's CPUs].")
def compress(inputs, output, category, level, target_size, target_bpp, ratio, target_quality, refine, refine_for, overwrite, workers, report, engine,
             address, num_workers):  # fmt: skip
    """Compress images and folders of images to .ccz files.

    The rate is the category's tuned level unless --level or one rate
    target (--target-size, --target-bpp, --ratio, --target-quality) is given.
    """
    from .errors import CatcompError
    from .folders import compress_files
    from .ratecontrol import Target

    given = {k: v for k, v in (("size", target_size), ("bpp", target_bpp), ("ratio", ratio), ("quality", target_quality)) if v is not None}
    if len(given) + (level is not None) > 1:
        raise click.UsageError("give at most one of --level, --target-size, --target-bpp, --ratio, --target-quality")
    try:
        target = None
        for kind, value in given.items():  # at most one
            target = getattr(Target, kind)(value)
    except CatcompError as e:
        raise click.BadParameter(str(e)) from None
    opts = {"category": category, "level": level, "overwrite": overwrite, "target": target, "refine": _refinement(refine, refine_for)}
    bar, step = _progress("compress")
    with bar:
        try:
            if engine == "ray":
                from .distributed import compress_files_ray

                results = compress_files_ray(inputs, output, address=address, num_workers=num_workers, progress=step, **opts)
            else:
                results = compress_files(inputs, output, progress=step, workers=workers, **opts)
        except CatcompError as e:
            raise click.ClickException(str(e)) from None
    _report(results, report=report, table=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, category, confidence, predicted}.")
def route(inputs, as_json):
    """Print the category the router picks for each image (folders are walked)."""
    from .codec import read_image
    from .errors import CatcompError
    from .folders import IMAGE_SUFFIXES, plan
    from .router import route_image

    rows, failed = [], 0
    for src, _, err in plan(inputs, Path("."), IMAGE_SUFFIXES, lambda rel: rel.name):
        try:
            if err:
                raise CatcompError(err, src)
            r = route_image(read_image(src)[0])
            rows.append({"path": str(src), "category": r.category, "confidence": r.confidence, "predicted": r.predicted})
        except CatcompError as e:
            failed += 1
            click.echo(f"error: {e}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            conf = "-" if r["confidence"] is None else f"{r['confidence']:.3f}"
            click.echo(f"{r['category']:<11}{conf:>7}  {r['path']}")
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="An image file (one input) or a directory (folders are mirrored).")
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg", "webp"]), default="png", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (inputs are never replaced). Without it, complete outputs are kept and skipped.")
@_workers
@_report_opt
def decompress(inputs, output, fmt, overwrite, workers, report):
    """Decode .ccz files and folders of them back to images."""
    from .folders import decompress_files

    bar, step = _progress("decompress")
    with bar:
        results = decompress_files(inputs, output, fmt=fmt, overwrite=overwrite, progress=step, workers=workers)
    _report(results, report=report)


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

    build_sample_folder(output / "samples")
    comp = compress_files([output / "samples"], output / "compressed", overwrite=True)
    back = decompress_files([output / "compressed"], output / "restored", overwrite=True)
    click.echo(f"{'file':<24}{'category':>11}{'conf':>6}{'size':>10}{'bytes':>9}{'bpp':>8}{'PSNR dB':>9}")
    restored = {Path(r.path).name: Path(r.output) for r in back if r.ok}
    for r in comp:
        if r.ok:
            p = psnr_of(r.path, restored[Path(r.output).name]) if Path(r.output).name in restored else float("nan")
            conf = "-" if r.confidence is None else f"{r.confidence:.2f}"
            click.echo(f"{Path(r.path).name:<24}{r.category:>11}{conf:>6}{f'{r.width}x{r.height}':>10}{r.out_bytes:>9}{r.bpp:>8.3f}{p:>9.2f}")
    click.echo(f"outputs in {output}/compressed and {output}/restored")
    _report(back, quiet=True)
    _report(comp, table=True)


_data_opt = click.option("--data", "data_dir", envvar="CATCOMP_DATA", required=True, type=click.Path(exists=True, path_type=Path),
                         help="Images by category with train/val/test splits (folders or MANIFEST.tsv). Env: CATCOMP_DATA.")
_categories_arg = click.argument("categories", nargs=-1, type=click.Choice(CATEGORIES))


def _split_list(text, cast=str):
    return tuple(cast(x) for x in text.split(",") if x.strip())


@main.command("evaluate")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--category", type=click.Choice(CATEGORIES), help="Treat every image as this category.")
@click.option("--route", "route_flag", is_flag=True, help="Route each image to its category (the default without --category).")
@click.option("--codecs", default="catcomp,general,jpeg,webp,avif", show_default=True, help="Any of catcomp,general,jpeg,webp,avif,jpeg2000.")
@click.option("--levels", default="0,1,2,3,4,5", show_default=True, help="catcomp rate levels to measure.")
@click.option("--refine", type=click.IntRange(0), default=0, show_default=True, help="Encode catcomp's points with N steps of latent refinement.")
@_refine_for
@click.option("-o", "--output", default="catcomp-eval", show_default=True, type=click.Path(file_okay=False, path_type=Path))
def evaluate_cmd(inputs, category, route_flag, codecs, levels, refine, refine_for, output):
    """Rate-distortion of catcomp and baselines on images: JSON, CSV, RD plots, BD-rates.

    Each image is routed (or taken as --category); `catcomp` codes it with
    its category's model, `general` with the general model. Metrics per
    image and rate point: bpp (file bytes), MSE, PSNR, SSIM, MS-SSIM, L1.
    """
    import numpy as np

    from .codec import read_image
    from .errors import CatcompError
    from .evaluate import evaluate, format_table
    from .folders import IMAGE_SUFFIXES, plan
    from .router import route_image

    if category and route_flag:
        raise click.UsageError("--category and --route exclude each other")
    refine = _refinement(refine, refine_for)
    items, failed = [], 0
    for src, _, err in plan(inputs, Path("."), IMAGE_SUFFIXES, lambda rel: rel.name):
        try:
            if err:
                raise CatcompError(err, src)
            im = read_image(src)[0]
            items.append((str(src), category or route_image(im).category, np.asarray(im.convert("RGB"))))
        except CatcompError as e:
            failed += 1
            click.echo(f"error: {e}", err=True)
    if not items:
        raise click.ClickException("no images to evaluate")
    bar, step = _progress("evaluate")
    with bar:
        rep = evaluate(items, _split_list(codecs), _split_list(levels, float), output, progress=lambda _: step(None, len(items)), refine=refine)
    for g, r in rep["groups"].items():
        click.echo(f"\n{g} ({r['images']} images): BD-rate % (PSNR) of each codec (row) against each (column)")
        bd = r["bd_rate_pct"]["psnr"]
        click.echo(format_table([{"codec": a, **bd[a]} for a in bd], ("codec", *bd)))
    click.echo(f"\nwrote {output}/evaluate.json, evaluate.csv and rd_*.png/svg")
    sys.exit(1 if failed else 0)


@main.command("tune")
@_categories_arg
@_data_opt
@click.option("--target", default="psnr=30,ssim=0.95", show_default=True, help="Thresholds every category must meet, e.g. psnr=32,ssim=0.95.")
@click.option("--stat", default="mean", show_default=True,
              help="'mean': the mean of each metric over the val images meets it; 'pNN' (e.g. p90): NN%% of the images meet it each.")
@click.option("--limit", default=0, help="At most N val images per category (0 = all).")
@click.option("--dry-run", is_flag=True, help="Print the table without writing the model cards.")
def tune_cmd(categories, data_dir, target, stat, limit, dry_run):
    """Find each category's lowest rate meeting --target on its val split; store it as the tuned rate."""
    from .evaluate import format_table, split_items, tune_category
    from .ratecontrol import parse_quality

    thresholds = parse_quality(target)
    rows = []
    for c in categories or CATEGORIES:
        rows.append(tune_category(split_items(data_dir, c, "val", limit), c, thresholds, stat, write=not dry_run))
        click.echo(f"{c}: level {rows[-1]['level']}" + ("" if rows[-1]["reached"] else " (target NOT reached; card unchanged)"), err=True)
    click.echo(format_table(rows, ("category", "model", "images", "level", "bpp", *thresholds, "share_meeting", "reached")))
    if not all(r["reached"] for r in rows):
        sys.exit(1)


@main.command("compare")
@_categories_arg
@_data_opt
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test"]))
@click.option("--limit", default=0, help="At most N images per category (0 = all).")
@click.option("-o", "--output", default="catcomp-compare", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--update", is_flag=True, help="Measure only the named categories and keep the other rows of OUTPUT/compare.json.")
def compare_cmd(categories, data_dir, split, limit, output, update):
    """Per-category optimal ratios: the tuned operating points against raw, PNG, JPEG, WebP and AVIF."""
    from .evaluate import COMPARE_COLUMNS, compare, format_table, stale_rows

    cats = categories or CATEGORIES
    bar, step = _progress("compare")
    try:
        with bar:
            rep = compare(data_dir, cats, split, limit, output, progress=lambda _: step(None, len(cats)), update=update)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(format_table(rep["results"], COMPARE_COLUMNS))
    for c in stale_rows(rep):
        click.echo(f"warning: the {c} row was measured with another model than the one installed now; re-run `catcomp compare {c} --update`", err=True)
    for r in rep["results"]:
        if "target" in r:
            t = r["target"]
            click.echo(f"{r['category']}: target {t['target']} ({t['statistic']}) met on val: {t['met_on_val']}, on {split}: {t['met_on_test']}")
    click.echo(f"wrote {output}/compare.json, compare.csv, compare.png/svg ({rep['seconds']} s)")


@main.command("train")
@click.argument("category", type=click.Choice(CATEGORIES + ("general",)))
@click.option("--data", "data_dir", envvar="CATCOMP_DATA", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Images by category (folders, MANIFEST.tsv or data_prep HDF5); only the train split is read. Env: CATCOMP_DATA.")
@click.option("--init", default=None, help="Model to fine-tune from: a name or directory, or 'scratch'. Default: general (scratch for general).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Model directory to write [default: <models>/CATEGORY].")
@click.option("--steps", default=DEFAULT_RD_STEPS, show_default=True, help="Rate-distortion steps (phase 1).")
@click.option("--gan-steps", default=DEFAULT_GAN_STEPS, show_default=True, help="Adversarial fine-tuning steps (phase 2; 0 = none).")
@click.option("--beta", default=DEFAULT_BETA, show_default=True,
              help="Weight of the adversarial loss in phase 2: higher gives sharper texture at lower PSNR (1.0 cost 0.26-0.41 dB in bench/adversarial.py).")
@click.option("--disc-warmup", default=0, show_default=True, type=click.IntRange(min=0),
              help="Steps that train phase 2's fresh discriminator alone against the frozen phase-1 model before the adversarial "
                   "steps; a fresh one stays at chance for about 800 (bench/disc_probe.py).")
@click.option("--lr", default=1e-4, show_default=True, help="Peak learning rate of phase 1 (use 3e-4 from scratch).")
@click.option("--gan-lr", default=3e-5, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate of the model in phase 2 (the discriminator's is fixed at 3e-4).")
@click.option("--gan-decoder-only", is_flag=True,
              help="Phase 2 trains only the synthesis: latents, entropy model and file sizes stay those of phase 1.")
@click.option("--ms-ssim", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of a 1-MS-SSIM term added to the MSE (0-255 scale) in the distortion of both phases; "
                   "about 2000 makes it as large as the MSE at 33 dB. Needs --crop 161 or more.")
@click.option("--ssim", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of a 1-SSIM term (single scale, the metric catcomp reports) added the same way; "
                   "1000 is the weight --refine-for ssim uses.")
@click.option("--crop", default=128, show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--bf16/--fp32", default=True, show_default=True, help="bfloat16 transforms during training (weights stay float32).")
@click.option("--strategy", type=click.Choice(["auto", "default", "mirrored", "multiworker"]), default="auto", show_default=True,
              help="tf.distribute strategy; auto picks multi-worker with TF_CONFIG, mirrored with several GPUs.")
@click.option("--res-blocks", type=click.IntRange(0, 8), help="Residual blocks in the synthesis; more than the --init model has adds fresh ones [default: as --init].")
@click.option("--resume", is_flag=True, help="Continue from the checkpoints in OUT/checkpoint.")
@click.option("--checkpoint-minutes", default=5.0, show_default=True)
@click.option("--tables-only", is_flag=True, help="Do not train: rebuild the coding tables of the model at OUT and refit their context choice on the train split.")
def train_cmd(category, data_dir, init, out, steps, gan_steps, beta, disc_warmup, lr, gan_lr, gan_decoder_only, ms_ssim, ssim, crop, batch, bf16, strategy, res_blocks, resume, checkpoint_minutes, tables_only):
    """Train or fine-tune the model of one CATEGORY; other models are untouched."""
    from .categories import models_dir
    from .train import OptionError, refit_tables, start_config, train

    if tables_only:
        card = refit_tables(out or models_dir() / category, data_dir, None if category == "general" else [category], crop)
        click.echo(f"rebuilt the tables of {card['name']} ({card['tables']['fitted_on_images']} training images); checksum {card['checksum']}")
        return

    init = init or ("scratch" if category == "general" else "general")
    if init != "scratch" and not Path(init).is_dir():
        init = models_dir() / init
    if init != "scratch" and not (Path(init) / "model.weights.h5").is_file():
        raise click.BadParameter(f"{init}: no model.weights.h5 to start from", param_hint="--init")
    try:
        config = start_config(None if init == "scratch" else init, res_blocks)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--res-blocks") from None
    card = {"name": category, "category": category, "data": {"root": str(data_dir), "splits_used": ["train"]}}
    try:  # train() checks its options before it writes anything
        card = train(data_dir, out or models_dir() / category, config=config, steps=steps, gan_steps=gan_steps, beta=beta, lr=lr, gan_lr=gan_lr, crop=crop, batch=batch,
                     categories=None if category == "general" else [category], init=None if init == "scratch" else init, resume=resume,
                     ckpt_every_s=checkpoint_minutes * 60, card=card, bf16=bf16, strategy=strategy, ms_ssim=ms_ssim, ssim=ssim, disc_warmup=disc_warmup,
                     gan_decoder_only=gan_decoder_only)
    except OptionError as e:
        raise click.BadParameter(str(e), param_hint=e.option) from None
    run = card["training"]["runs"][-1]
    click.echo(f"saved {card['name']} ({run['rd_steps']}+{run['gan_steps']} steps, {card['training']['steps']} in all) to {out or models_dir() / category}")
    _retune_hint(card, category)


@main.command("install")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("name", type=click.Choice(CATEGORIES + ("general",)))
@click.option("--description", help="What the model is, for its card.")
@click.option("--command", "command_", help="The command that trained it, for its card.")
def install_cmd(run, name, description, command_):
    """Make the model trained into RUN (`catcomp train --out RUN`) the model NAME: its
    files are verified and copied, its card keeps NAME's tuned rate until re-tuned."""
    from .categories import models_dir
    from .errors import CatcompError
    from .zoo import install_model

    try:
        card = install_model(run, name, description, command_)
    except CatcompError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"installed {run} as {name} (checksum {card['checksum']}, {card['training']['steps']} steps) in {models_dir() / name}")
    _retune_hint(card, name)


def _retune_hint(card, name):
    if card.get("tuned_levels") or "tuned_level" in card:
        click.echo(f"its rate is still the one tuned for the previous weights: run `catcomp tune {name}` to re-measure it")


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
