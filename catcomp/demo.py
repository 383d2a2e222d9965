"""The demo job: a small mixed folder of the photos scikit-image ships,
compressed and restored with the shipped models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

#: Files bundled in scikit-image's ``data`` folder (no download needed):
#: astronomy, vehicles, people, animals, a grayscale photo and an RGBA logo.
SAMPLES = (
    "hubble_deep_field.jpg",
    "rocket.jpg",
    "motorcycle_left.png",
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "camera.png",
    "logo.png",
)


def build_sample_folder(folder) -> list[Path]:
    """Copy the sample photos into ``folder``; returns their paths."""
    import skimage.data

    src = Path(skimage.data.__file__).parent
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLES:
        if (src / name).is_file():
            if not (folder / name).exists():
                shutil.copyfile(src / name, folder / name)
            paths.append(folder / name)
    return paths


def psnr_of(original, restored) -> float:
    """PSNR (dB, RGB) between an input and its restored copy."""
    from .metrics import psnr

    a = np.asarray(Image.open(original).convert("RGB"))
    b = np.asarray(Image.open(restored).convert("RGB"))
    return psnr(a, b)
