"""Fixtures: a tiny model built on the fly (no shipped weights needed) and test images."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A models/ folder with a tiny untrained 'general' model and its tables."""
    import keras

    from catcomp.transforms import CompressionModel, ModelConfig
    from catcomp.zoo import save_model

    keras.utils.set_random_seed(1)
    root = tmp_path_factory.mktemp("models")
    save_model(CompressionModel(ModelConfig(N=8, M=8, density_filters=(3, 3))), root / "general", {"tuned_level": 2.0})
    return root


@pytest.fixture(autouse=True)
def use_tiny_models(tiny_models, monkeypatch):
    monkeypatch.setenv("CATCOMP_MODELS", str(tiny_models))


def photo(w=64, h=48, seed=0):
    """A smooth colour image with texture, different for every seed (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 40.0
    chans = []
    for _ in range(3):
        fx, fy, ph = rng.uniform(-2, 2, 3)
        chans.append(127 + 90 * np.sin(fx * xx + fy * yy + ph * 3) * np.cos(rng.uniform(0.2, 1.5) * yy + ph))
    return np.clip(np.stack(chans, -1) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def rgb_image():
    return Image.fromarray(photo())
