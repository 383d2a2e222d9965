"""Model directories: save a trained model with its tables and card, load it back.

A model directory holds ``model.weights.h5`` (Keras weights, no code),
``entropy_tables.npz`` (integer coding tables, loaded without pickle) and
``card.json`` (config, SHA-256 of both files, training facts, measured RD
points, tuned rate). Loading verifies both hashes before anything is used.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import save_weights_atomic, write_bytes_atomic
from .categories import models_dir
from .entropy import LEVEL_STEP, EntropyTables, build_tables
from .errors import ModelError
from .transforms import CompressionModel, ModelConfig

WEIGHTS = "model.weights.h5"
TABLES = "entropy_tables.npz"
CARD = "card.json"


@dataclass
class LoadedModel:
    name: str
    model: CompressionModel
    tables: EntropyTables
    card: dict
    directory: Path

    @property
    def checksum(self) -> bytes:
        """8 bytes identifying the exact weights + tables (written into each file)."""
        return bytes.fromhex(self.card["checksum"])

    @property
    def tuned_level(self) -> float:
        return float(self.card.get("tuned_level", (self.model.config.num_levels - 1) / 2))

    def tuned_level_for(self, category: str) -> float:
        """The rate ``catcomp tune`` chose for ``category`` on this model, else the card's default."""
        return float(self.card.get("tuned_levels", {}).get(category, self.tuned_level))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _checksum(weights_sha: str, tables_sha: str) -> str:
    return hashlib.sha256((weights_sha + tables_sha).encode()).hexdigest()[:16]


def knob_gains(model: CompressionModel) -> np.ndarray:
    """Encoder gains at every knob grid position, shape (J, M)."""
    J = int(round((model.config.num_levels - 1) / LEVEL_STEP)) + 1
    g, _ = model.gains(np.arange(J, dtype="float32") * LEVEL_STEP)
    return np.asarray(g)[:, 0, 0, :].astype(np.float64)


def save_model(model: CompressionModel, out_dir: Path, card: dict | None = None) -> dict:
    """Write weights, freshly built tables and the card to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights_atomic(model, out_dir / WEIGHTS)
    tables = build_tables(model.density, knob_gains(model))
    write_bytes_atomic(out_dir / TABLES, tables.to_bytes())
    w, t = sha256(out_dir / WEIGHTS), sha256(out_dir / TABLES)
    old = read_card(out_dir) if (out_dir / CARD).is_file() else {}
    card = {**old, **(card or {})}
    card.update(
        name=card.get("name", out_dir.name),
        config=model.config.to_dict(),
        files={WEIGHTS: w, TABLES: t},
        checksum=_checksum(w, t),
        level_step=LEVEL_STEP,
    )
    write_card(out_dir, card)
    return card


def read_card(model_dir: Path) -> dict:
    try:
        return json.loads((Path(model_dir) / CARD).read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read model card: {e}", Path(model_dir) / CARD) from None


def update_card(lm: "LoadedModel", rd: dict):
    """Merge measured rate-distortion results into a loaded model's card on disk."""
    card = read_card(lm.directory)
    card.setdefault("rd", {}).update(rd)
    write_card(lm.directory, card)


def write_card(model_dir: Path, card: dict):
    write_bytes_atomic(Path(model_dir) / CARD, (json.dumps(card, indent=2) + "\n").encode())


@functools.lru_cache(maxsize=8)
def _load(model_dir: str, checksum: str) -> LoadedModel:
    d = Path(model_dir)
    card = read_card(d)
    for fname, expected in card.get("files", {}).items():
        if not (d / fname).is_file():
            raise ModelError(f"missing model file {fname}", d)
        if sha256(d / fname) != expected:
            raise ModelError(f"{fname} does not match the SHA-256 in its card (corrupt or replaced)", d)
    model = CompressionModel(ModelConfig.from_dict(card["config"]))
    try:
        model.load_weights(d / WEIGHTS)
        tables = EntropyTables.from_bytes((d / TABLES).read_bytes())
    except Exception as e:  # h5py / numpy errors on damaged files
        raise ModelError(f"cannot load model: {e}", d) from None
    return LoadedModel(card.get("name", d.name), model, tables, card, d)


def load_model(name_or_dir: str | Path) -> LoadedModel:
    """Load a shipped model by name (``general``, ``flower``...) or directory."""
    d = Path(name_or_dir)
    if not d.is_dir():
        d = models_dir() / str(name_or_dir)
    if not (d / CARD).is_file():
        raise ModelError("no model here (card.json missing)", d)
    card = read_card(d)
    return _load(str(d.resolve()), card.get("checksum", ""))
