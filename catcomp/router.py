"""The router: a small Keras CNN that sorts images into the six categories.

It sees a fixed-size view of the whole image (``SIZE`` x ``SIZE``, aspect
ignored) and outputs softmax probabilities over :data:`CATEGORIES`. A
prediction whose probability is below the threshold calibrated on ``val``
(stored in the card) goes to ``other``, i.e. the general model: a wrong
category model costs more than the general one.

``models/router/`` holds ``router.weights.h5`` and ``card.json`` (size,
threshold, SHA-256 of the weights, confusion matrix on ``test``).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .categories import CATEGORIES, models_dir
from .errors import ModelError

SIZE = 64
EPOCHS = 100  # the 40-epoch router peaked at its last epoch; at 100 the best was 69
WEIGHTS = "router.weights.h5"


@dataclass
class Route:
    category: str
    confidence: float | None  # probability of the predicted class; None without a router
    predicted: str | None = None  # the class before the threshold sent it to `other`


def thumbnail(im: Image.Image, size=SIZE) -> np.ndarray:
    """The router's view of an image: RGB, ``size`` x ``size``, uint8."""
    if im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if "A" in im.mode or im.mode == "P" else im.convert("RGB")
    factor = min(im.width, im.height) // (2 * size)
    if factor > 1:
        im = im.reduce(factor)  # cheap box-filter first step for large images
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def build_router(size=SIZE, classes=len(CATEGORIES), width=32):
    """Small CNN; augmentation layers are active in training only."""
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3))
    h = layers.RandomFlip("horizontal")(inp)  # augmentation on 0..255 values, the range RandomContrast clips to
    h = layers.RandomTranslation(0.1, 0.1, fill_mode="reflect")(h)
    h = layers.RandomZoom((-0.2, 0.1), fill_mode="reflect")(h)
    h = layers.RandomContrast(0.2)(h)
    h = layers.Rescaling(1 / 127.5, -1.0)(h)
    for i, c in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for _ in range(1 if i == 0 else 2):  # full resolution gets one conv: most of the cost
            h = layers.Conv2D(c, 3, padding="same", use_bias=False)(h)
            h = layers.BatchNormalization()(h)
            h = layers.ReLU()(h)
        h = layers.MaxPooling2D()(h) if i < 3 else layers.GlobalAveragePooling2D()(h)
    h = layers.Dropout(0.3)(h)
    out = layers.Dense(classes, activation="softmax", dtype="float32")(h)
    return keras.Model(inp, out, name="router")


class Router:
    def __init__(self, model, card: dict):
        import tensorflow as tf

        self.model, self.card = model, card
        self._predict = model and tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        self.classes = tuple(card["classes"])
        self.threshold = float(card["threshold"])
        self.size = int(card["size"])

    def probabilities(self, thumbs: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(np.asarray(thumbs, dtype=np.float32)))

    def decide(self, probs: np.ndarray) -> list[Route]:
        out = []
        for p in np.atleast_2d(probs):
            k = int(np.argmax(p))
            cat = self.classes[k] if p[k] >= self.threshold else "other"
            out.append(Route(cat, round(float(p[k]), 4), self.classes[k]))
        return out

    def route(self, images) -> list[Route]:
        return self.decide(self.probabilities(np.stack([thumbnail(im, self.size) for im in images])))


def save_router(model, out_dir: Path, card: dict) -> dict:
    from .atomic import save_weights_atomic
    from .zoo import sha256, write_card

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights_atomic(model, out_dir / WEIGHTS)
    card = {**card, "files": {WEIGHTS: sha256(out_dir / WEIGHTS)}}
    write_card(out_dir, card)
    return card


@functools.lru_cache(maxsize=2)
def _load(directory: str, stamp: tuple) -> Router:
    from .zoo import read_card, sha256

    d = Path(directory)
    card = read_card(d)
    if sha256(d / WEIGHTS) != card.get("files", {}).get(WEIGHTS):
        raise ModelError(f"{WEIGHTS} does not match the SHA-256 in its card (corrupt or replaced)", d)
    model = build_router(int(card["size"]), len(card["classes"]), int(card.get("width", 32)))
    try:
        model.load_weights(d / WEIGHTS)
    except Exception as e:  # h5py errors on damaged files
        raise ModelError(f"cannot load router: {e}", d) from None
    return Router(model, card)


def load_router(directory=None) -> Router | None:
    """The installed router, or ``None`` when there is none (everything goes to ``other``)."""
    d = Path(directory) if directory else models_dir() / "router"
    if not (d / "card.json").is_file():
        return None
    stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in (d / "card.json", d / WEIGHTS))
    return _load(str(d.resolve()), stamp)


def route_image(im: Image.Image) -> Route:
    router = load_router()
    return router.route([im])[0] if router else Route("other", None)


# --- training and evaluation ----------------------------------------------------------


def load_split(data, split, size=SIZE, log=print):
    """Thumbnails and labels of one split of ``data`` (folders or MANIFEST.tsv)."""
    from data_prep.sources import BadFile, open_source

    xs, ys = [], []
    for r in open_source(data):
        if r.split != split or r.category not in CATEGORIES:
            continue
        try:
            xs.append(thumbnail(Image.fromarray(r.load()), size))
            ys.append(CATEGORIES.index(r.category))
        except BadFile as e:
            log(f"skipped: {e}")
    if not xs:
        raise ValueError(f"no {split} images under {data}")
    return np.stack(xs), np.array(ys)


def calibrate_threshold(probs, labels, other=CATEGORIES.index("other")) -> float:
    """The confidence threshold that maximises accuracy when low confidence means ``other``
    (the lowest such threshold on ties)."""
    conf, pred = probs.max(1), probs.argmax(1)
    best_t, best_acc = 0.0, -1.0
    for t in np.unique(np.concatenate([[0.0], conf])):
        acc = np.mean(np.where(conf >= t, pred, other) == labels)
        if acc > best_acc + 1e-12:
            best_t, best_acc = float(t), float(acc)
    return best_t


def evaluate(router: Router, x, y) -> dict:
    """Accuracy, confusion matrix (rows true, columns routed) and per-class precision/recall."""
    routed = np.array([router.classes.index(r.category) for r in router.decide(router.probabilities(x))])
    k = len(router.classes)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y, routed), 1)
    per = {}
    for i, c in enumerate(router.classes):
        tp = cm[i, i]
        per[c] = {"precision": round(tp / max(cm[:, i].sum(), 1), 4), "recall": round(tp / max(cm[i].sum(), 1), 4), "support": int(cm[i].sum())}
    return {"accuracy": round(float(np.mean(routed == y)), 4), "images": int(len(y)), "classes": list(router.classes),
            "confusion_matrix": cm.tolist(), "per_class": per}


def train_router(data, out_dir, epochs=EPOCHS, size=SIZE, batch=32, width=32, label_smoothing=0.0, mixup=0.0, seed=0,
                 refit_threshold=None, log=print) -> dict:
    """Train on ``train``, keep the best epoch and calibrate the threshold on ``val``,
    report on ``test``; write ``out_dir`` (weights + card). ``mixup`` > 0 trains on
    MixUp pairs (Zhang et al. 2018) with mixing weights drawn from Beta(mixup, mixup).

    ``refit_threshold`` (the threshold a train-only run of the same recipe calibrated
    on ``val``) instead trains on ``train`` + ``val`` for all ``epochs``, keeps the
    last epoch and that threshold; the card then reports ``test`` only."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    t0 = time.time()
    splits = {s: load_split(data, s, size, log) for s in ("train", "val", "test")}
    (xt, yt), (xv, yv) = splits["train"], splits["val"]
    refit = refit_threshold is not None
    if refit:
        xt, yt = np.concatenate([xt, xv]), np.concatenate([yt, yv])
    counts = np.bincount(yt, minlength=len(CATEGORIES))
    model = build_router(size, len(CATEGORIES), width)
    steps = epochs * int(np.ceil(len(yt) / batch))
    model.compile(keras.optimizers.AdamW(keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=2e-3, warmup_steps=steps // 20)),
                  keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing), metrics=["categorical_accuracy"])
    onehot = functools.partial(np.eye(len(CATEGORIES), dtype="float32").__getitem__)
    class_weight = tf.constant(len(yt) / (len(counts) * np.maximum(counts, 1)), tf.float32)  # balanced classes

    def mix(x, y):
        if mixup > 0:
            g1, g2 = tf.random.gamma([tf.shape(x)[0]], mixup), tf.random.gamma([tf.shape(x)[0]], mixup)
            lam = g1 / (g1 + g2)
            x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * tf.reverse(x, [0])
            y = lam[:, None] * y + (1 - lam[:, None]) * tf.reverse(y, [0])
        return x, y, tf.linalg.matvec(y, class_weight)

    ds = tf.data.Dataset.from_tensor_slices((xt.astype("float32"), onehot(yt))).shuffle(len(yt), seed=seed).batch(batch).map(mix)
    held_out = {} if refit else {"validation_data": (xv.astype("float32"), onehot(yv)), "callbacks": [
        keras.callbacks.EarlyStopping("val_categorical_accuracy", patience=epochs, restore_best_weights=True)]}
    hist = model.fit(ds, epochs=epochs, shuffle=False, verbose=2, **held_out)
    router = Router(model, {"classes": CATEGORIES, "threshold": 0.0, "size": size})
    router.threshold = float(refit_threshold) if refit else calibrate_threshold(router.probabilities(xv), yv)
    card = {
        "name": "router", "classes": list(CATEGORIES), "size": size, "width": width, "threshold": round(router.threshold, 4),
        "threshold_note": "calibrated on val: routes with a lower top probability go to `other` (the general model)",
        "training": {"data": str(data), "fit_splits": ["train", "val"] if refit else ["train"], "epochs": epochs,
                     "best_epoch": epochs if refit else int(np.argmax(hist.history["val_categorical_accuracy"])) + 1,
                     "batch": batch, "label_smoothing": label_smoothing, "mixup": mixup, "seconds": round(time.time() - t0), "split_sizes": {s: int(len(v[1])) for s, v in splits.items()}},
        "val": None if refit else evaluate(router, xv, yv),  # a refit router has trained on val
        "test": evaluate(router, *splits["test"]),
    }
    return save_router(model, out_dir, card)


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="Train the catcomp router (train split), calibrate on val, report on test.")
    p.add_argument("--data", required=True)
    p.add_argument("--out", default=str(models_dir() / "router"))
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--size", type=int, default=SIZE, help="side of the router's square view of an image")
    p.add_argument("--width", type=int, default=32, help="channels of the first convolution (doubling per stage)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--mixup", type=float, default=0.0, help="MixUp Beta parameter (0: off; 0.2-0.4 typical)")
    p.add_argument("--refit-threshold", type=float, metavar="T",
                   help="train on train+val for all --epochs and keep the last epoch, with threshold T (both found "
                        "on val by an earlier train-only run of the same recipe)")
    a = p.parse_args(argv)
    card = train_router(a.data, a.out, a.epochs, a.size, width=a.width, label_smoothing=a.label_smoothing, mixup=a.mixup,
                        refit_threshold=a.refit_threshold)
    print(json.dumps({k: card[k] for k in ("threshold", "val", "test")}, indent=1))


if __name__ == "__main__":
    main()
