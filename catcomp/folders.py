"""Jobs over many files: compress or decompress each, never losing anything.

Each file is handled on its own: a bad file is reported with its reason and
the job goes on. Outputs are written atomically and never replace an input
or (without ``overwrite``) an existing file.
"""

from __future__ import annotations

import functools
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from .atomic import write_bytes_atomic, write_table
from .codec import compress_image, decompress, info, read_image
from .errors import CatcompError

SUFFIX = ".ccz"
#: What a folder walk picks up for compression (every format Pillow can open).
IMAGE_SUFFIXES = {e for e, f in Image.registered_extensions().items() if f in Image.OPEN} - {SUFFIX}
FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}


@dataclass
class Result:
    path: str
    output: str | None = None
    ok: bool = False
    error: str | None = None
    category: str | None = None
    confidence: float | None = None
    level: float | None = None
    width: int = 0
    height: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    seconds: float = 0.0
    skipped: bool = False  # a complete output was already there

    @property
    def bpp(self) -> float:
        return 8 * self.out_bytes / (self.width * self.height) if self.width else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "bpp": round(self.bpp, 5)}


def _walk(root: Path, suffixes):
    """Files under ``root`` (sorted, dot-files skipped) with the wanted suffixes.

    Symlinks are followed only while they stay inside ``root``; one that
    leaves it is yielded with an error instead.
    """
    top = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and _inside(d / n, top))
        for n in sorted(filenames):
            p = d / n
            if n.startswith(".") or p.suffix.lower() not in suffixes:
                continue
            yield p, None if _inside(p, top) else "symlink leaves the input folder; not followed"


def _inside(p: Path, top: Path) -> bool:
    return not p.is_symlink() or p.resolve().is_relative_to(top)


def is_uri(p) -> bool:
    """``s3://bucket/x``, ``gs://...``, ``file:///...``: read through pyarrow's filesystems."""
    return "://" in str(p)


def _filesystem(uri: str):
    try:
        from pyarrow import fs
    except ImportError:
        raise CatcompError("reading URIs needs pyarrow: pip install 'catcomp[ray]'", uri) from None
    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises ArrowInvalid, ValueError, OSError...
        raise CatcompError(f"cannot open filesystem: {e}", uri) from None


def read_bytes(src) -> bytes:
    """The bytes of a local path or filesystem URI."""
    if not is_uri(src):
        return Path(src).read_bytes()
    f, path = _filesystem(str(src))
    with f.open_input_stream(path) as stream:
        return stream.read()


def _walk_uri(root: str, suffixes):
    """(URI, relative path, error) of the files under a filesystem URI (sorted, dot-files skipped)."""
    f, base = _filesystem(root)
    from pyarrow import fs

    info = f.get_file_info(base)
    if info.type != fs.FileType.Directory:
        return [(root, Path(Path(base).name), None if info.type == fs.FileType.File else "no such file or folder")]
    out = []
    for i in f.get_file_info(fs.FileSelector(base, recursive=True)):
        rel = Path(i.path).relative_to(base.rstrip("/") or "/")
        if i.type == fs.FileType.File and not any(p.startswith(".") for p in rel.parts) and rel.suffix.lower() in suffixes:
            out.append((root.rstrip("/") + "/" + rel.as_posix(), rel, None))
    return sorted(out)


def plan(inputs, out, suffixes, name_fn, single_suffixes=()):
    """``(source, destination, error)`` for files and folder trees.

    Folders are mirrored under ``out``; a lone file may name its output
    directly (``out`` ending in one of ``single_suffixes``). Destinations
    are always inside ``out`` and never repeat.
    """
    inputs, out = [str(p) if is_uri(p) else Path(p) for p in inputs], Path(out)
    if len(inputs) == 1 and not is_uri(inputs[0]) and not inputs[0].is_dir() and out.suffix.lower() in single_suffixes:
        return [(inputs[0], out, None)]
    if out.exists() and not out.is_dir():
        raise CatcompError("output must be a directory when several inputs or a folder are given", out)
    pairs, seen = [], set()
    for p in inputs:
        if is_uri(p):
            items = _walk_uri(p, suffixes)
        elif p.is_dir():
            items = [(f, f.relative_to(p), err) for f, err in _walk(p, suffixes)]
        else:
            items = [(p, Path(p.name), None)]
        for src, rel, err in items:
            dst = out / rel.parent / name_fn(rel)
            if dst in seen:
                err = f"another input already writes {dst}"
            seen.add(dst)
            pairs.append((src, dst, err))
    return pairs


def process(src, dst: Path, err, inputs, work, valid, overwrite) -> Result:
    """One file of a job, in any engine: checks, ``work``, atomic write; never raises."""
    r = Result(str(src), str(dst))
    t0 = time.perf_counter()
    try:
        if err:
            raise CatcompError(err, src)
        if dst.resolve() in inputs:
            raise CatcompError(f"refusing to overwrite the input file {dst}", src)
        if dst.exists() and not overwrite:
            if not valid(dst, r):
                raise CatcompError("output exists and is not a complete output of this job (use --overwrite to replace it)", dst)
            r.ok = r.skipped = True
            r.out_bytes = dst.stat().st_size
            return r
        r.in_bytes = 0 if is_uri(src) else src.stat().st_size  # work() sets it for URIs
        data = work(src, r)
        write_bytes_atomic(dst, data, overwrite=overwrite)
        r.out_bytes, r.ok = len(data), True
    except CatcompError as e:
        r.error = str(e) if str(src) in str(e) or str(dst) in str(e) else f"{src}: {e}"
    except OSError as e:
        r.error = f"{src}: {e.strerror or e}"
    finally:
        r.seconds = round(time.perf_counter() - t0, 4)
    return r


def input_set(pairs) -> set:
    """The resolved local input files of a plan: outputs may never replace one."""
    return {p.resolve() for p, _, _ in pairs if not is_uri(p)}


def _run(pairs, fn, progress, workers):
    """``fn(src, dst, err, inputs)`` on every pair, ``workers`` at a time; results in input order."""
    inputs = input_set(pairs)
    workers = max(1, workers or os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, s, d, e, inputs) for s, d, e in pairs]
        for f in as_completed(futures):
            if progress:
                progress(f.result(), len(futures))
        return [f.result() for f in futures]


def _header_of(data_or_path, r: Result):
    h = info(data_or_path)
    r.category, r.level, r.width, r.height = h["category"], h["level"], h["width"], h["height"]


def _valid_ccz(path, r) -> bool:
    try:
        _header_of(path, r)  # parses the whole file: header and body CRCs
        return True
    except CatcompError:
        return False


@dataclass(frozen=True)
class CompressJob:
    """The per-image work of a compress run. Picklable, so every engine --
    the thread pool here, Ray actors in :mod:`catcomp.distributed` -- runs
    exactly this code on each file."""

    category: str | None = None
    level: float | None = None
    target: object = None  # a catcomp.ratecontrol.Target
    overwrite: bool = False
    refine: object = 0  # encoder-side latent refinement: steps or a catcomp.refine.Refinement

    def work(self, src, r: Result) -> bytes:
        if is_uri(src):
            raw = read_bytes(src)
            r.in_bytes = len(raw)
            im, name = read_image(raw, name=src)
        else:
            im, name = read_image(src)
        data, route = compress_image(im, name, self.category, self.level, self.target, self.refine)
        _header_of(data, r)
        r.confidence = route.confidence if route else None
        return data

    def __call__(self, src, dst, err, inputs) -> Result:
        return process(src, dst, err, inputs, self.work, _valid_ccz, self.overwrite)


def compress_plan(inputs, out):
    """(source, ``.ccz`` destination, error) for every image under ``inputs``."""
    return plan(inputs, out, IMAGE_SUFFIXES, lambda rel: rel.name + SUFFIX, {SUFFIX})


def compress_files(inputs, out, category=None, level=None, overwrite=False, progress=None, workers=None, target=None, refine=0) -> list[Result]:
    """Compress files and folder trees to ``out`` (mirrored, ``name.ext.ccz``).

    Each image is routed (unless ``category`` is given) and coded at its
    category's tuned level (unless ``level`` is given, or ``target`` -- a
    :class:`~catcomp.ratecontrol.Target` -- sets it per image); ``refine`` (steps
    or a :class:`~catcomp.refine.Refinement`) refines each latent (:mod:`catcomp.refine`). Existing complete
    outputs are kept and counted as done, so an interrupted run resumes.
    Inputs may be filesystem URIs (``s3://...``); ``out`` is a local path.
    """
    job = CompressJob(category, level, target, overwrite, refine)
    return _run(compress_plan(inputs, out), job, progress, workers)


def decompress_files(inputs, out, fmt="png", overwrite=False, progress=None, workers=None) -> list[Result]:
    """Decode ``.ccz`` files and folder trees to ``out`` in ``fmt`` (png, jpeg, webp)."""
    pil_fmt, ext = FORMATS[fmt]

    def name(rel: Path) -> str:
        stem = rel.name[: -len(SUFFIX)] if rel.name.endswith(SUFFIX) else rel.name
        return stem if Path(stem).suffix.lower() == ext else stem + ext

    pairs = plan(inputs, out, {SUFFIX}, name, {ext, ".jpeg"} if fmt == "jpeg" else {ext})

    def work(src, r):
        im = decompress(src)
        r.width, r.height = im.size
        buf = io.BytesIO()
        if pil_fmt == "JPEG" and im.mode not in ("RGB", "L", "CMYK"):
            im = im.convert("RGB")
        im.save(buf, pil_fmt, **({"quality": 95} if pil_fmt != "PNG" else {}))
        return buf.getvalue()

    def valid(path, r) -> bool:
        try:
            with Image.open(path) as im:
                im.load()  # fully decodable, so not a leftover of something else
                r.width, r.height = im.size
            return im.format == pil_fmt
        except (OSError, SyntaxError, ValueError):
            return False

    return _run(pairs, functools.partial(process, work=work, valid=valid, overwrite=overwrite), progress, workers)


def summary(results) -> dict:
    ok = [r for r in results if r.ok]
    pixels = sum(r.width * r.height for r in ok)
    cats = {}
    for r in sorted(ok, key=lambda r: r.category or ""):
        if r.category:
            c = cats.setdefault(r.category, {"files": 0, "input_bytes": 0, "output_bytes": 0, "pixels": 0})
            c["files"] += 1
            c["input_bytes"] += r.in_bytes
            c["output_bytes"] += r.out_bytes
            c["pixels"] += r.width * r.height
    return {
        "files": len(results),
        "ok": len(ok),
        "skipped": sum(r.skipped for r in results),
        "failed": len(results) - len(ok),
        "input_bytes": sum(r.in_bytes for r in ok),
        "output_bytes": sum(r.out_bytes for r in ok),
        "mean_bpp": round(8 * sum(r.out_bytes for r in ok) / pixels, 4) if pixels else None,
        "categories": cats,  # per category: files, input/output bytes, pixels
        "failures": [r.error for r in results if not r.ok],
    }


REPORT_FIELDS = ("path", "output", "ok", "skipped", "error", "category", "confidence", "level", "width", "height",
                 "in_bytes", "out_bytes", "bpp", "seconds")


def write_report(results, path):
    """One row per file, as CSV or JSON (by the suffix of ``path``), written atomically."""
    write_table([{k: r.as_dict()[k] for k in REPORT_FIELDS} for r in results], path, REPORT_FIELDS)
