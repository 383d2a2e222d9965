"""Jobs over many files: compress or decompress each, never losing anything.

Each file is handled on its own: a bad file is reported with its reason and
the job goes on. Outputs are written atomically and never replace an input
or (without ``overwrite``) an existing file.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import write_bytes_atomic
from .codec import compress, decompress, info
from .errors import CatcompError

SUFFIX = ".ccz"
FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}


@dataclass
class Result:
    path: str
    output: str | None = None
    ok: bool = False
    error: str | None = None
    category: str | None = None
    level: float | None = None
    width: int = 0
    height: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    seconds: float = 0.0

    @property
    def bpp(self) -> float:
        return 8 * self.out_bytes / (self.width * self.height) if self.width else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "bpp": round(self.bpp, 5)}


def _plan(inputs, out, single_suffixes, name_fn):
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    if len(inputs) == 1 and out.suffix.lower() in single_suffixes:
        return [(inputs[0], out)]
    if out.exists() and not out.is_dir():
        raise CatcompError("output must be a directory when several inputs are given", out)
    return [(p, out / name_fn(p)) for p in inputs]


def _guard(src: Path, dst: Path, all_inputs: set):
    if dst.resolve() in all_inputs:
        raise CatcompError(f"refusing to overwrite the input file {dst}", src)


def _run(pairs, work, overwrite, progress):
    inputs = {p.resolve() for p, _ in pairs}
    results = []
    for src, dst in pairs:
        r = Result(str(src), str(dst))
        t0 = time.perf_counter()
        try:
            _guard(src, dst, inputs)
            if dst.exists() and not overwrite:
                raise CatcompError("output exists (use --overwrite to replace it)", dst)
            r.in_bytes = src.stat().st_size if src.is_file() else 0
            data = work(src, r)
            write_bytes_atomic(dst, data, overwrite=overwrite)
            r.out_bytes, r.ok = len(data), True
        except CatcompError as e:
            r.error = str(e) if r.path in str(e) or str(dst) in str(e) else f"{src}: {e}"
        except OSError as e:
            r.error = f"{src}: {e.strerror or e}"
        r.seconds = round(time.perf_counter() - t0, 4)
        results.append(r)
        if progress:
            progress(r)
    return results


def compress_files(inputs, out, category=None, level=None, overwrite=False, progress=None) -> list[Result]:
    """Compress each input to ``out/<name>.ccz`` (or to ``out`` if it ends in .ccz)."""
    pairs = _plan(inputs, out, {SUFFIX}, lambda p: p.name + SUFFIX)

    def work(src, r):
        data = compress(src, category=category, level=level)
        h = info(data)
        r.category, r.level, r.width, r.height = h["category"], h["level"], h["width"], h["height"]
        return data

    return _run(pairs, work, overwrite, progress)


def decompress_files(inputs, out, fmt="png", overwrite=False, progress=None) -> list[Result]:
    """Decode each ``.ccz`` input to ``out/<name>`` in ``fmt`` (png, jpeg, webp)."""
    pil_fmt, ext = FORMATS[fmt]

    def name(p: Path) -> str:
        stem = p.name[: -len(SUFFIX)] if p.name.endswith(SUFFIX) else p.name
        return stem if Path(stem).suffix.lower() == ext else stem + ext

    pairs = _plan(inputs, out, {ext, ".jpeg"} if fmt == "jpeg" else {ext}, name)

    def work(src, r):
        im = decompress(src)
        r.width, r.height = im.size
        buf = io.BytesIO()
        if pil_fmt == "JPEG" and im.mode not in ("RGB", "L", "CMYK"):
            im = im.convert("RGB")
        im.save(buf, pil_fmt, **({"quality": 95} if pil_fmt != "PNG" else {}))
        return buf.getvalue()

    return _run(pairs, work, overwrite, progress)


def summary(results) -> dict:
    ok = [r for r in results if r.ok]
    pixels = sum(r.width * r.height for r in ok)
    return {
        "files": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "input_bytes": sum(r.in_bytes for r in ok),
        "output_bytes": sum(r.out_bytes for r in ok),
        "mean_bpp": round(8 * sum(r.out_bytes for r in ok) / pixels, 4) if pixels else None,
        "categories": sorted({r.category for r in ok if r.category}),
        "failures": [r.error for r in results if not r.ok],
    }
