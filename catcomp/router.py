"""The router: a small Keras CNN that sorts images into the six categories.

It sees a fixed-size view of the whole image (``SIZE`` x ``SIZE``, aspect
ignored) and outputs softmax probabilities over :data:`CATEGORIES`. An
optional second opinion, the *codec head*, reads texture statistics of the
general compression model's analysis transform (trained on 120k steps of
photos, so a pretrained feature extractor that ships anyway) at larger views;
the two probability vectors are mixed with the card's weight. A
prediction whose probability is below the threshold calibrated on ``val``
(stored in the card) goes to ``other``, i.e. the general model: a wrong
category model costs more than the general one.

``models/router/`` holds ``router.weights.h5``, ``codec_head.weights.h5`` and
``card.json`` (sizes, threshold, mixing weight, the general model's checksum
the head was trained on, SHA-256 of the weights, confusion matrix on ``test``).
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .categories import CATEGORIES, models_dir
from .errors import ModelError

SIZE = 64
EPOCHS = 100  # the 40-epoch router peaked at its last epoch; at 100 the best was 69
WEIGHTS = "router.weights.h5"
HEAD_WEIGHTS = "codec_head.weights.h5"
# The codec head's views. Adding a 256 px view gained a point on val (none on test), and
# at 3.5x the head's cost it pushed routing past 10% of a folder's compression time.
HEAD_VIEWS = (128,)
HEAD_EPOCHS = 40
HEAD_WEIGHT = 0.5  # share of the codec head in the mixed probabilities


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


def _compiled(model):
    """``model`` as a traced inference function of a numpy batch (``None`` stays ``None``)."""
    import tensorflow as tf

    if model is None:
        return None
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: fn(np.asarray(x, dtype=np.float32))


class Router:
    """The CNN, optionally with the codec head (``head``, reading ``features``)."""

    def __init__(self, model, card: dict, head=None, features=None):
        self.model, self.card, self.head = model, card, head
        self._predict, self._head, self._features = map(_compiled, (model, head, features))
        self.classes = tuple(card["classes"])
        self.threshold = float(card["threshold"])
        self.size = int(card["size"])
        self.head_views = tuple(card["codec_head"]["views"]) if head else ()
        self.weight = float(card["codec_head"]["weight"]) if head else 0.0

    @property
    def sizes(self) -> tuple:
        return tuple(dict.fromkeys((self.size, *self.head_views)))

    def views(self, images) -> dict:
        """{size: stacked thumbnails} of ``images`` for every view the router reads."""
        return {s: np.stack([thumbnail(im, s) for im in images]) for s in self.sizes}

    def head_probabilities(self, views: dict) -> np.ndarray:
        return np.asarray(self._head(np.concatenate([self._features(views[s]) for s in self.head_views], -1)))

    def probabilities(self, views) -> np.ndarray:
        """Class probabilities from :meth:`views` (or the CNN's thumbnails alone, without a head)."""
        views = views if isinstance(views, dict) else {self.size: views}
        p = np.asarray(self._predict(views[self.size]))
        return p if self.head is None else (1 - self.weight) * p + self.weight * self.head_probabilities(views)

    def decide(self, probs: np.ndarray) -> list[Route]:
        out = []
        for p in np.atleast_2d(probs):
            k = int(np.argmax(p))
            cat = self.classes[k] if p[k] >= self.threshold else "other"
            out.append(Route(cat, round(float(p[k]), 4), self.classes[k]))
        return out

    def route(self, images) -> list[Route]:
        return self.decide(self.probabilities(self.views(images)))


def codec_features(analysis):
    """0..255 images (B, H, W, 3) -> texture statistics (B, 2 x channels of the taps):
    log mean |activation| and log standard deviation of every channel after each
    GDN of a codec's analysis transform and of its latent."""
    import keras
    from keras import ops

    inp = keras.Input((None, None, 3))
    h, feats = inp / 255.0 - 0.5, []
    for layer in analysis.layers:
        h = layer(h)
        if layer.name.startswith("gdn") or layer is analysis.layers[-1]:
            t = ops.cast(h, "float32")
            feats += [ops.log(ops.mean(ops.abs(t), (1, 2)) + 1e-4), ops.log(ops.std(t, (1, 2)) + 1e-4)]
    return keras.Model(inp, ops.concatenate(feats, -1), name="codec_features")


def build_head(features: int, classes=len(CATEGORIES)):
    """Standardised features -> dropout -> softmax: a linear classifier."""
    import keras
    from keras import layers

    inp = keras.Input((features,))
    h = layers.Dropout(0.3)(layers.Normalization()(inp))
    out = layers.Dense(classes, activation="softmax", kernel_regularizer=keras.regularizers.l2(1e-3), dtype="float32")(h)
    return keras.Model(inp, out, name="codec_head")


def fit_head(x, y, epochs=HEAD_EPOCHS, classes=len(CATEGORIES)):
    """A :func:`build_head` classifier fitted on features ``x`` and labels ``y``."""
    import keras

    head = build_head(x.shape[-1], classes)
    head.get_layer(index=1).adapt(x)
    head.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    head.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return head


def save_router(models: dict, out_dir: Path, card: dict) -> dict:
    """Write ``{file name: keras model}`` atomically and the card with every file's SHA-256."""
    from .atomic import save_weights_atomic
    from .zoo import sha256, write_card

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        save_weights_atomic(model, out_dir / name)
    card = {**card, "files": {name: sha256(out_dir / name) for name in card.get("files", {}) | models}}
    write_card(out_dir, card)
    return card


def _weights(d: Path, card: dict, name: str, model):
    from .zoo import sha256

    if sha256(d / name) != card.get("files", {}).get(name):
        raise ModelError(f"{name} does not match the SHA-256 in its card (corrupt or replaced)", d)
    try:
        model.load_weights(d / name)
    except Exception as e:  # h5py errors on damaged files
        raise ModelError(f"cannot load {name}: {e}", d) from None
    return model


@functools.lru_cache(maxsize=2)
def _load(directory: str, stamp: tuple, head=True) -> Router:
    from .zoo import load_model, read_card

    d = Path(directory)
    card = read_card(d)
    model = _weights(d, card, WEIGHTS, build_router(int(card["size"]), len(card["classes"]), int(card.get("width", 32))))
    ch = card.get("codec_head")
    # the CNN alone uses the threshold calibrated for it before the head was added
    cnn_card = {**{k: v for k, v in card.items() if k != "codec_head"}, "threshold": ch["cnn_threshold"]} if ch else card
    if not (head and ch):
        return Router(model, cnn_card)
    lm = load_model(ch["model"])
    installed, trained_on = _weights_sha(lm.card), ch.get("model_weights_sha256", "unknown")  # older heads recorded no weights hash
    if installed != trained_on:  # the head reads the weights only: new coding tables do not matter
        warnings.warn(f"{d}: the router's codec head was trained on {ch['model']} model weights {trained_on[:16]}, but "
                      f"{installed[:16]} are installed, so the CNN routes alone (retrain the head: "
                      "python -m catcomp.router --data DATA --head-only)", stacklevel=2)
        return Router(model, cnn_card)
    head_model = _weights(d, card, HEAD_WEIGHTS, build_head(int(ch["features"]), len(card["classes"])))
    return Router(model, card, head_model, codec_features(lm.model.analysis))


def _weights_sha(card: dict) -> str:
    """SHA-256 of a model's weights, from its card."""
    from .zoo import WEIGHTS

    return card.get("files", {}).get(WEIGHTS, "")


def load_router(directory=None) -> Router | None:
    """The installed router, or ``None`` when there is none (everything goes to ``other``)."""
    d = Path(directory) if directory else models_dir() / "router"
    if not (d / "card.json").is_file():
        return None
    return _load(str(d.resolve()), _stamp(d))


def _stamp(d: Path) -> tuple:
    """Changes whenever the router's files or the general model's card do (the cache key)."""
    files = (d / "card.json", d / WEIGHTS, d / HEAD_WEIGHTS, models_dir() / "general" / "card.json")
    return tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in files)


def route_image(im: Image.Image) -> Route:
    router = load_router()
    return router.route([im])[0] if router else Route("other", None)


# --- training and evaluation ----------------------------------------------------------


def load_split(data, split, sizes=(SIZE,), log=print):
    """``({size: thumbnails}, labels)`` of one split of ``data`` (folders or MANIFEST.tsv)."""
    from data_prep.sources import BadFile, open_source

    xs, ys = {s: [] for s in sizes}, []  # a size asked for twice is loaded once
    for r in open_source(data):
        if r.split != split or r.category not in CATEGORIES:
            continue
        try:
            im = Image.fromarray(r.load())
        except BadFile as e:
            log(f"skipped: {e}")
            continue
        for s, v in xs.items():
            v.append(thumbnail(im, s))
        ys.append(CATEGORIES.index(r.category))
    if not ys:
        raise ValueError(f"no {split} images under {data}")
    return {s: np.stack(v) for s, v in xs.items()}, np.array(ys)


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


def evaluate(router: Router, x, y, probs=None) -> dict:
    """Accuracy, confusion matrix (rows true, columns routed) and per-class precision/recall
    of the router's decisions on views ``x`` (or on class probabilities ``probs``)."""
    probs = router.probabilities(x) if probs is None else probs
    routed = np.array([router.classes.index(r.category) for r in router.decide(probs)])
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
    splits = {s: load_split(data, s, (size,), log) for s in ("train", "val", "test")}
    (xt, yt), (xv, yv) = ((v[size], y) for v, y in (splits["train"], splits["val"]))
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
    return save_router({WEIGHTS: model}, out_dir, card)


def train_codec_head(data, router_dir, views=HEAD_VIEWS, epochs=HEAD_EPOCHS, weight=HEAD_WEIGHT, seed=0, log=print) -> dict:
    """Give the router in ``router_dir`` its codec head (or train it again): a linear
    classifier on :func:`codec_features` of the installed general model at ``views``,
    trained on ``train`` (each image also mirrored), mixed with the CNN at ``weight``;
    the threshold is calibrated again on ``val``; the card reports ``val`` and
    ``test`` for the mix and, under ``cnn_only``, for the CNN alone."""
    import keras

    from .zoo import load_model, read_card

    keras.utils.set_random_seed(seed)
    t0 = time.time()
    d = Path(router_dir)
    cnn = _load(str(d.resolve()), _stamp(d), head=False)
    lm = load_model("general")
    features = codec_features(lm.model.analysis)
    splits = {s: load_split(data, s, (cnn.size, *views), log) for s in ("train", "val", "test")}

    def feats(v, flip=False):
        return np.concatenate([features.predict((v[s][:, :, ::-1] if flip else v[s]).astype("float32"), batch_size=32, verbose=0) for s in views], -1)

    (vt, yt), (vv, yv) = splits["train"], splits["val"]
    xt = np.concatenate([feats(vt), feats(vt, flip=True)])
    head = fit_head(xt, np.concatenate([yt, yt]), epochs)
    card = read_card(d)
    card["codec_head"] = {
        "model": "general", "model_weights_sha256": _weights_sha(lm.card), "views": list(views), "features": int(xt.shape[-1]),
        "weight": weight, "epochs": epochs, "cnn_threshold": cnn.threshold, "fit_splits": ["train"], "seconds": round(time.time() - t0),
        "note": "linear classifier on log mean |activation| and log std of each channel after every GDN of the general "
                "model's analysis transform and of its latent, at each view; its probabilities are mixed with the CNN's",
    }
    router = Router(cnn.model, card, head, features)
    router.threshold = calibrate_threshold(router.probabilities(vv), yv)
    card["threshold"] = round(router.threshold, 4)
    card["cnn_only"] = {s: evaluate(cnn, *splits[s])["accuracy"] for s in ("val", "test")}
    card["val"], card["test"] = (evaluate(router, *splits[s]) for s in ("val", "test"))
    return save_router({HEAD_WEIGHTS: head}, d, card)


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
    p.add_argument("--head-only", action="store_true", help="keep the CNN in --out and (re)train only its codec head")
    p.add_argument("--no-head", action="store_true", help="train the CNN alone, without the codec head")
    p.add_argument("--head-views", default=",".join(map(str, HEAD_VIEWS)), help="comma-separated view sizes of the codec head")
    a = p.parse_args(argv)
    if a.refit_threshold is not None and not a.no_head:
        p.error("--refit-threshold trains the CNN on val, where the codec head's threshold is calibrated: add --no-head")
    if not a.head_only:
        card = train_router(a.data, a.out, a.epochs, a.size, width=a.width, label_smoothing=a.label_smoothing, mixup=a.mixup,
                            refit_threshold=a.refit_threshold)
    if not a.no_head:
        card = train_codec_head(a.data, a.out, tuple(int(v) for v in a.head_views.split(",")))
    print(json.dumps({k: card.get(k) for k in ("threshold", "cnn_only", "val", "test")}, indent=1))


if __name__ == "__main__":
    main()
