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

import keras
import numpy as np

from .atomic import save_weights_atomic, write_bytes_atomic
from .categories import models_dir
from .container import model_id
from .entropy import LEVEL_STEP, NUM_CONTEXTS, EntropyTables, build_tables, fit_choice, fit_predictor
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
    return keras.ops.convert_to_numpy(g)[:, 0, 0, :].astype(np.float64)


#: At most this many training images (centre crops of at most FIT_SIDE px) fit the table choice.
FIT_IMAGES, FIT_SIDE = 64, 512


def fit_latents(model: CompressionModel, images, seed=0) -> list:
    """Float latents of up to FIT_IMAGES of ``images`` (uint8 RGB arrays), centre-cropped."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(images))[:FIT_IMAGES]
    out = []
    for i in sorted(pick):
        im = images[i]
        h, w = (min(s, FIT_SIDE) // 16 * 16 for s in im.shape[:2])
        if h and w:
            top, left = (im.shape[0] - h) // 2, (im.shape[1] - w) // 2
            x = im[None, top : top + h, left : left + w].astype("float32") / 255.0 - 0.5
            out.append(keras.ops.convert_to_numpy(model.analysis(x)).astype(np.float32)[0])
    return out


def save_model(model: CompressionModel, out_dir: Path, card: dict | None = None, images=None) -> dict:
    """Write weights, freshly built tables and the card to ``out_dir`` (see :func:`save_tables`)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_weights_atomic(model, Path(out_dir) / WEIGHTS)
    return save_tables(model, out_dir, card, images)


def save_tables(model: CompressionModel, out_dir: Path, card: dict | None = None, images=None) -> dict:
    """Build the coding tables of ``model`` (whose weights are in ``out_dir``) and
    write them with the card. With ``images`` (training images as uint8 arrays)
    the tables' context predictor and choice are fitted to their latents;
    without, every context uses the knob's own gain and no predicted mean."""
    out_dir = Path(out_dir)
    gains = knob_gains(model)
    tables = build_tables(model.density, gains)
    latents = fit_latents(model, images) if images else []
    if latents:  # the predictors at the middle knob position, then every position's choice
        middle = gains[(len(gains) - 1) // 2]
        tables.predictor, tables.mean_predictor = (fit_predictor(latents, middle, signed=s) for s in (False, True))
        tables.choice, tables.shift = fit_choice(tables, gains, latents)
    write_bytes_atomic(out_dir / TABLES, tables.to_bytes())
    w, t = sha256(out_dir / WEIGHTS), sha256(out_dir / TABLES)
    old = read_card(out_dir) if (out_dir / CARD).is_file() else {}
    card = {**_carried(old, w, _checksum(w, t)), **(card or {})}
    card.update(
        name=model_id(card.get("name", out_dir.name)),
        config=model.config.to_dict(),
        files={WEIGHTS: w, TABLES: t},
        checksum=_checksum(w, t),
        level_step=LEVEL_STEP,
        tables={"grid_rows": int(len(tables.q_min)), "contexts": NUM_CONTEXTS, "fitted_on_images": len(latents)},
    )
    write_card(out_dir, card)
    return card


def install_model(run_dir, name: str, description: str | None = None, command: str | None = None) -> dict:
    """Make the trained model at ``run_dir`` (a ``catcomp train --out`` directory)
    the model ``name`` in :func:`models_dir`: its verified weights and tables are
    copied, and the card is the run's, with the old model's settings (its tuned
    rate, until re-tuned), its data description where the run read the same data,
    and ``replaces`` naming the model it replaced. Returns the new card."""
    run_dir, dst = Path(run_dir), models_dir() / name
    card = _verified(run_dir)
    if (dst / CARD).is_file() and (dst / CARD).resolve() == (run_dir / CARD).resolve():
        raise ModelError(f"is already the model {name}", run_dir)
    old = read_card(dst) if (dst / CARD).is_file() else {}
    dst.mkdir(parents=True, exist_ok=True)
    for fname in (WEIGHTS, TABLES):
        write_bytes_atomic(dst / fname, (run_dir / fname).read_bytes())
    card = {**_carried(old, card["files"][WEIGHTS], card["checksum"]), **card, "name": model_id(name)}
    if old.get("data", {}).get("root") == card.get("data", {}).get("root"):
        card["data"] = {**card["data"], **old["data"]}
    if old and old.get("checksum") != card["checksum"]:
        card["replaces"] = {"checksum": old.get("checksum"), "steps": old.get("training", {}).get("steps"),
                            "note": "the previous model; its card and figures are in git history"}
    card.update({k: v for k, v in (("description", description), ("command", command)) if v})
    write_card(dst, card)
    return card


#: Card fields that are measurements of one exact model: a new checksum drops them.
MEASURED = ("rd", "tuning")
#: Card fields that are settings: they outlive new weights until re-tuned.
SETTINGS = ("name", "category", "tuned_level", "tuned_levels")


def _carried(old: dict, weights_sha: str, checksum: str) -> dict:
    """What of a directory's old card outlives rewritten weights or tables: all of
    it for the same model, all but its measurements over the same weights with new
    tables, and only its settings over new weights, as the rest (training,
    description, command) told of the old ones."""
    if old.get("checksum") == checksum:
        return old
    if old.get("files", {}).get(WEIGHTS) == weights_sha:
        return {k: v for k, v in old.items() if k not in MEASURED}
    return {k: old[k] for k in SETTINGS if k in old}


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


def _verified(d: Path, files=None) -> dict:
    """The card of ``d``, once ``files`` (default: all it lists) match their SHA-256s."""
    card = read_card(d)
    for fname in card.get("files", {}) if files is None else files:
        if not (d / fname).is_file():
            raise ModelError(f"missing model file {fname}", d)
        if sha256(d / fname) != card.get("files", {}).get(fname):
            raise ModelError(f"{fname} does not match the SHA-256 in its card (corrupt or replaced)", d)
    return card


def load_weights(model_dir) -> CompressionModel:
    """The model of a directory with its verified weights, without its tables (to rebuild them)."""
    d = Path(model_dir)
    model = CompressionModel(ModelConfig.from_dict(_verified(d, [WEIGHTS])["config"]))
    model.load_weights(d / WEIGHTS)
    return model


@functools.lru_cache(maxsize=8)
def _load(model_dir: str, checksum: str) -> LoadedModel:
    d = Path(model_dir)
    card = _verified(d)
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
