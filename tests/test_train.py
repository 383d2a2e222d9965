"""Training: a tiny model trains on a folder, saves a usable model, resumes from its checkpoint."""

import json

import numpy as np
from PIL import Image

import catcomp
from catcomp.train import train
from catcomp.transforms import ModelConfig

from .conftest import photo

TINY = ModelConfig(N=8, M=8, density_filters=(3, 3))


def test_train_save_resume_and_use(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for i in range(4):
        d = data / ("flower" if i % 2 else "anime") / "train"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(80, 72, seed=i)).save(d / f"{i}.png")
    out = tmp_path / "models" / "general"
    card = train(data, out, TINY, steps=6, crop=32, batch=2, ckpt_every_s=0)
    assert card["training"]["steps"] == 6 and card["training"]["train_sources"] == 4
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6
    card = train(data, out, TINY, steps=10, crop=32, batch=2, resume=True)
    assert card["training"]["steps"] == 10  # continued from 6, not restarted
    monkeypatch.setenv("CATCOMP_MODELS", str(tmp_path / "models"))
    data_ccz = catcomp.compress(Image.fromarray(photo(40, 30)), level=1)
    assert np.asarray(catcomp.decompress(data_ccz)).shape == (30, 40, 3)
