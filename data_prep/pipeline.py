"""The training input pipeline over HDF5 patch files (written by extract/downscale).

Patches are read into memory once (uint8; ~200 kB per 256 px patch), then a
tf.data stream cuts random crops with flips, batches and prefetches, using
the same sampler the trainer uses for image folders.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def h5_files(root, split="train", categories=None) -> list[Path]:
    """``<category>_<split>.h5`` files under ``root`` (all categories by default)."""
    files = sorted(Path(root).glob(f"*_{split}.h5"))
    return [f for f in files if not categories or f.name.rsplit("_", 1)[0] in categories]


def load_patches(files) -> list[np.ndarray]:
    pool = []
    for f in files:
        with h5py.File(f, "r") as h:
            pool.extend(h["images"][...])
    return pool


def hdf5_dataset(root, crop=128, batch=8, split="train", categories=None, seed=0):
    """A tf.data stream of random ``crop`` x ``crop`` float batches in [0, 1]."""
    from catcomp.train import crop_dataset

    files = h5_files(root, split, categories)
    if not files:
        raise FileNotFoundError(f"no *_{split}.h5 files in {root}")
    return crop_dataset(load_patches(files), crop, batch, seed)
