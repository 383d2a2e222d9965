"""Readers for every source the extractor takes, all yielding :class:`Record`.

- a folder tree whose first-level subfolders are categories (any depth
  below; ``train/val/test`` subfolders are used as the split when present);
- ``../shared/data`` as laid out, via its ``MANIFEST.tsv``;
- CIFAR-10/100 python batches, unpickled with an allow-list (no code runs);
- ``.npz`` packs of N x H x W x 3 uint8 images.

Splits are decided per *source image* (or per manifest group), never per
patch, and deterministically, so a rerun gives the same sets.
"""

from __future__ import annotations

import csv
import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from catcomp.categories import CATEGORIES

SPLITS = ("train", "val", "test")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
#: CIFAR class -> catcomp category. CIFAR-100's "flowers" superclass maps to flower.
CIFAR_MAP = {"airplane": "airplane", "automobile": "automobile", "flowers": "flower"}


@dataclass
class Record:
    category: str
    split: str
    source: str  # file path, or "file#index" inside a pack
    load: callable  # () -> uint8 H x W x 3 array; may raise
    group: str = ""  # images of one group always share a split


class BadFile(Exception):
    """A source file that cannot be used; the message says why."""


def split_of(key: str, fractions=(0.8, 0.1, 0.1)) -> str:
    """Deterministic split for a source image (or group) named ``key``."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
    return "train" if h < fractions[0] else "val" if h < fractions[0] + fractions[1] else "test"


def read_rgb(path) -> np.ndarray:
    """Decode an image file to uint8 RGB (first frame, EXIF orientation applied)."""
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise BadFile("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadFile(f"damaged image: {e}") from None


def folder_tree(root) -> Iterator[Record]:
    """A tree ``root/<category>/...``; uses MANIFEST.tsv when the root has one."""
    root = Path(root)
    if (root / "MANIFEST.tsv").is_file():
        yield from manifest(root)
        return
    for cat_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if cat_dir.name not in CATEGORIES:
            continue
        for f in sorted(p for p in cat_dir.rglob("*") if p.is_file()):
            rel = f.relative_to(cat_dir)
            split = rel.parts[0] if rel.parts[0] in SPLITS and len(rel.parts) > 1 else split_of(str(rel))
            if f.suffix.lower() == ".npz":
                yield from _guarded(npz, f, cat_dir.name, split)
            elif f.suffix.lower() in IMAGE_EXTS:
                yield Record(cat_dir.name, split, str(f), lambda f=f: read_rgb(f), str(rel))


def manifest(root) -> Iterator[Record]:
    """``../shared/data``: one row per file with its category, split and group."""
    root = Path(root)
    with open(root / "MANIFEST.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["category"] not in CATEGORIES or row["split"] not in SPLITS:
                continue  # e.g. kodak: evaluation only, never extracted for training
            f = root / row["file"]
            yield Record(row["category"], row["split"], str(f), lambda f=f: read_rgb(f), row.get("group", ""))


def npz(path, category: str, split: str | None = None) -> Iterator[Record]:
    """An ``.npz`` pack: its first array (or ``images``) is N x H x W x 3 uint8."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arr = z["images"] if "images" in z.files else z[z.files[0]]
    except Exception as e:
        raise BadFile(f"cannot read npz: {e}") from None
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise BadFile(f"npz array must be N x H x W x 3 uint8, got {arr.shape} {arr.dtype}")
    for i in range(len(arr)):
        key = f"{path.name}#{i}"
        yield Record(category, split or split_of(key), f"{path}#{i}", lambda a=arr[i]: a, key)


class _CifarUnpickler(pickle.Unpickler):
    """Only the types a CIFAR batch holds; anything else is refused (no code runs)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}  # fmt: skip

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path):
    try:
        return _CifarUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="bytes").load()
    except Exception as e:
        raise BadFile(f"not a CIFAR python batch: {e}") from None


def _names(meta, key):
    return [n.decode() if isinstance(n, bytes) else n for n in meta[key]]


def cifar(folder, unmapped: str | None = None, val_fraction=0.1) -> Iterator[Record]:
    """CIFAR-10 (``data_batch_*``, ``test_batch``, ``batches.meta``) or CIFAR-100
    (``train``, ``test``, ``meta``). Mapped classes become their category;
    others are skipped unless ``unmapped`` names a category for them.
    The official test set is ``test``; ``val_fraction`` of the training images
    (chosen by hash of their index) become ``val``."""
    folder = Path(folder)
    if (folder / "batches.meta").is_file():
        names, label_key = _names(_unpickle(folder / "batches.meta"), b"label_names"), b"labels"
        batches = sorted(folder.glob("data_batch_*")) + [folder / "test_batch"]
    elif (folder / "meta").is_file():
        names, label_key = _names(_unpickle(folder / "meta"), b"coarse_label_names"), b"coarse_labels"
        batches = [folder / "train", folder / "test"]
    else:
        raise BadFile("no batches.meta (CIFAR-10) or meta (CIFAR-100) here")
    for b in batches:
        if not b.is_file():
            continue
        d = _unpickle(b)
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        is_test = b.name in ("test_batch", "test")
        for i, label in enumerate(d[label_key]):
            cat = CIFAR_MAP.get(names[label], unmapped)
            if cat is None:
                continue
            key = f"{b.name}#{i}"
            split = "test" if is_test else ("val" if split_of(key, (1 - val_fraction, val_fraction, 0)) == "val" else "train")
            yield Record(cat, split, str(folder / key), lambda a=data[i]: a, key)


def _bad(reason):
    raise BadFile(reason)


def _guarded(reader, path, category, split):
    """A pack that cannot be read becomes one bad record, not a crashed run."""
    try:
        yield from reader(path, category, split)
    except BadFile as e:
        yield Record(category, split, str(path), lambda e=e: _bad(str(e)))


def open_source(src, unmapped=None) -> Iterator[Record]:
    """Pick the reader for ``src``: CIFAR folder, ``.npz`` (category from its
    parent folder's name), or a category folder tree."""
    src = Path(src)
    if src.is_file() and src.suffix == ".npz":
        cat = src.parent.name if src.parent.name in CATEGORIES else "other"
        return npz(src, cat)
    if (src / "batches.meta").is_file() or (src / "meta").is_file():
        return cifar(src, unmapped)
    if src.is_dir():
        return folder_tree(src)
    raise BadFile("not a folder tree, CIFAR folder or .npz file")
