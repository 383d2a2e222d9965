"""Rate-distortion training: a keras.Model with its own ``train_step``.

The loss of one sample at continuous rate level ``l`` is
``bpp + lambda(l) * MSE_255`` with ``bpp`` from the entropy model's
likelihoods (additive-noise proxy) and ``MSE_255`` the mean squared error on
the 0..255 scale. Levels are sampled uniformly over the continuous knob per
sample, so one model learns the whole rate range.

Training is resumable: :class:`Checkpointer` saves the weights, the optimizer
state (its step counter included) and the step every few minutes, atomically.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .transforms import CompressionModel, ModelConfig
from .atomic import save_weights_atomic, write_bytes_atomic
from .zoo import save_model

class PlateauCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Constant ``peak`` until ``hold`` of the steps, then cosine down to ``final``."""

    def __init__(self, total_steps, peak=3e-4, final=1e-5, hold=0.5, warmup=200):
        self.total_steps, self.peak, self.final, self.hold, self.warmup = total_steps, peak, final, hold, warmup

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start = self.hold * self.total_steps
        t = ops.clip((step - start) / max(self.total_steps - start, 1.0), 0.0, 1.0)
        lr = self.final + 0.5 * (self.peak - self.final) * (1 + ops.cos(math.pi * t))
        return lr * ops.minimum(1.0, (step + 1) / self.warmup)

    def get_config(self):
        return dict(total_steps=self.total_steps, peak=self.peak, final=self.final, hold=self.hold, warmup=self.warmup)


class RDTrainer(keras.Model):
    """Wraps a :class:`CompressionModel` for rate-distortion training."""

    def __init__(self, model: CompressionModel, **kw):
        super().__init__(**kw)
        self.model = model
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("loss", "bpp", "psnr")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def rd_terms(self, x, training):
        """Per-sample bpp, MSE (0..255 scale) and lambda at random levels."""
        b = ops.shape(x)[0]
        level = keras.random.uniform((b,), 0.0, self.model.config.num_levels - 1.0)
        x_hat, _, lik = self.model(x, level, training=training)
        pixels = ops.cast(ops.shape(x)[1] * ops.shape(x)[2], "float32")
        bpp = -ops.sum(ops.log(lik), axis=(1, 2, 3)) / (math.log(2.0) * pixels)
        mse = ops.mean(ops.square(x - x_hat), axis=(1, 2, 3)) * 255.0**2
        return bpp, mse, self.model.lambdas(level)

    def _update(self, loss, bpp, mse):
        self.trackers["loss"].update_state(loss)
        self.trackers["bpp"].update_state(ops.mean(bpp))
        self.trackers["psnr"].update_state(ops.mean(10.0 * ops.log(255.0**2 / ops.maximum(mse, 1e-6)) / math.log(10.0)))
        return {k: t.result() for k, t in self.trackers.items()}

    def train_step(self, x):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            bpp, mse, lam = self.rd_terms(x, training=True)
            loss = ops.mean(bpp + lam * mse)
        grads = tape.gradient(loss, variables)
        # A non-finite batch (rare GDN overflow) must not poison the weights.
        finite = tf.math.is_finite(loss)
        grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables))
        return self._update(loss, bpp, mse)

    def test_step(self, x):
        bpp, mse, lam = self.rd_terms(x, training=False)
        return self._update(ops.mean(bpp + lam * mse), bpp, mse)


# --- data ---------------------------------------------------------------------


def load_pool(arrays, crop, half_res_above=384):
    """Keep images with a side of at least ``crop``; add a half-size copy of large ones.

    Downscaled copies are cleaner (fewer JPEG artefacts, more detail per
    pixel), the usual trick for learned-compression training sets.
    """
    from data_prep.patches import downscale

    pool = []
    for rgb in arrays:
        if min(rgb.shape[:2]) >= crop:
            pool.append(rgb)
        if min(rgb.shape[:2]) >= half_res_above:
            pool.append(downscale(rgb, factor=2)[0])
    if not pool:
        raise ValueError(f"no usable training images (need a side of at least {crop} px)")
    return pool


def training_pool(data, crop, categories=None):
    """The ``train`` images of ``data``: HDF5 patch files (from data_prep) when
    the folder has them, else the image folders ``<category>/train/``.
    Returns the list of arrays and the number of source files."""
    from data_prep.pipeline import h5_files, load_patches
    from data_prep.sources import BadFile, open_source

    h5 = h5_files(data, "train", categories)
    if h5:
        return [p for p in load_patches(h5) if min(p.shape[:2]) >= crop], len(h5)
    records = [r for r in open_source(data) if r.split == "train" and (not categories or r.category in categories)]

    def arrays():
        for r in records:
            try:
                yield r.load()
            except BadFile:
                continue

    return load_pool(arrays(), crop), len(records)


def crop_dataset(pool, crop, batch, seed=0):
    """Infinite tf.data stream of random crops + flips from an in-memory pool."""
    sizes = np.array([p.shape[0] * p.shape[1] for p in pool], dtype=np.float64)
    weights = np.sqrt(sizes) / np.sqrt(sizes).sum()  # big images give more crops

    def gen():
        rng = np.random.default_rng(seed)
        while True:
            img = pool[rng.choice(len(pool), p=weights)]
            y = rng.integers(0, img.shape[0] - crop + 1)
            x = rng.integers(0, img.shape[1] - crop + 1)
            patch = img[y : y + crop, x : x + crop]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            yield patch

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec((crop, crop, 3), tf.uint8))
    return ds.batch(batch).map(lambda b: tf.cast(b, tf.float32) / 255.0).prefetch(4)


# --- checkpoints ----------------------------------------------------------------


class Checkpointer(keras.callbacks.Callback):
    """Saves weights + optimizer state every ``every_s`` seconds and at the end."""

    def __init__(self, ckpt_dir, every_s=300):
        super().__init__()
        self.dir = Path(ckpt_dir)
        self.every_s = every_s
        self.last = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if time.time() - self.last >= self.every_s:
            self.save(logs)

    def on_train_end(self, logs=None):
        self.save(logs)

    def save(self, logs=None):
        self.dir.mkdir(parents=True, exist_ok=True)
        trainer = self.model
        save_weights_atomic(trainer.model, self.dir / "ckpt.weights.h5")
        opt = {f"v{i}": np.asarray(v) for i, v in enumerate(trainer.optimizer.variables)}
        buf = io.BytesIO()
        np.savez(buf, **opt)
        write_bytes_atomic(self.dir / "optimizer.npz", buf.getvalue())
        step = int(np.asarray(trainer.optimizer.iterations))
        state = {"step": step, "time": time.time(), "logs": {k: float(v) for k, v in (logs or {}).items()}}
        write_bytes_atomic(self.dir / "state.json", json.dumps(state).encode())
        self.last = time.time()


def restore(trainer: RDTrainer, ckpt_dir: Path) -> int:
    """Load a checkpoint written by :class:`Checkpointer`; returns its step."""
    ckpt_dir = Path(ckpt_dir)
    trainer.model.load_weights(ckpt_dir / "ckpt.weights.h5")
    trainer.optimizer.build(trainer.model.trainable_variables)
    with np.load(ckpt_dir / "optimizer.npz", allow_pickle=False) as z:
        for i, v in enumerate(trainer.optimizer.variables):
            v.assign(z[f"v{i}"])
    return int(np.asarray(trainer.optimizer.iterations))


def train(
    data,
    out_dir,
    config: ModelConfig | None = None,
    steps=100_000,
    crop=128,
    batch=8,
    lr=3e-4,
    categories=None,
    init=None,
    resume=False,
    ckpt_every_s=300,
    seed=0,
    card=None,
):
    """Train (or resume) a model on ``data`` and save it to ``out_dir``."""
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    model = CompressionModel(config or ModelConfig())
    if init:
        model.load_weights(Path(init) / "model.weights.h5")
    trainer = RDTrainer(model)
    schedule = PlateauCosine(steps, peak=lr)
    trainer.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0))
    start = restore(trainer, ckpt_dir) if resume and (ckpt_dir / "state.json").is_file() else 0
    pool, n_sources = training_pool(data, crop, categories)
    ds = crop_dataset(pool, crop, batch, seed=seed + start)
    per_epoch = max(1, min(500, steps - start))
    epochs = math.ceil((steps - start) / per_epoch)
    t0 = time.time()
    if epochs > 0:
        trainer.fit(
            ds,
            epochs=epochs,
            steps_per_epoch=per_epoch,
            callbacks=[Checkpointer(ckpt_dir, ckpt_every_s), keras.callbacks.CSVLogger(str(out_dir / "train_log.csv"), append=True)],
            verbose=2,
            shuffle=False,
        )
    info = {"steps": int(np.asarray(trainer.optimizer.iterations)), "crop": crop, "batch": batch, "lr_peak": lr,
            "train_sources": n_sources, "train_pool": len(pool), "data": str(data), "categories": categories or "all",
            "seconds_this_run": round(time.time() - t0)}
    return save_model(model, out_dir, {**(card or {}), "training": info})


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="Rate-distortion training of a catcomp model.")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--N", type=int, default=128)
    p.add_argument("--M", type=int, default=192)
    p.add_argument("--category", action="append")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    train(a.data, a.out, ModelConfig(N=a.N, M=a.M), a.steps, a.crop, a.batch, a.lr, a.category, resume=a.resume)


if __name__ == "__main__":
    main()
