"""Rate-distortion training: a keras.Model with its own ``train_step``.

The loss of one sample at continuous rate level ``l`` is
``bpp + lambda(l) * MSE_255`` with ``bpp`` from the entropy model's
likelihoods (additive-noise proxy) and ``MSE_255`` the mean squared error on
the 0..255 scale. Levels are sampled uniformly over the continuous knob per
sample, so one model learns the whole rate range.

Training is resumable: :class:`Checkpointer` saves the weights, the optimizer
state (its step counter included) and the step every few minutes, atomically.

The shipped path is TensorFlow (``tf.data`` input, ``tf.distribute`` for
several GPUs or workers). The same ``Trainer`` also runs under Keras' PyTorch
backend (``KERAS_BACKEND=torch``, one device, plain NumPy input), which is how
a GPU machine that has PyTorch but no TensorFlow trains the same models into
the same weight files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from .transforms import CompressionModel, ModelConfig, build_discriminator, transfer_weights
from .atomic import save_weights_atomic, write_bytes_atomic
from .categories import models_dir
from .metrics import MS_SSIM_MIN_SIDE, differentiable_ms_ssim, differentiable_ssim
from .container import model_id
from .zoo import read_card, save_model

# Structural terms the distortion can add to the MSE: name -> differentiable metric.
SIMILARITY_TERMS = {"ms_ssim": differentiable_ms_ssim, "ssim": differentiable_ssim}


def gan_losses(d_real, d_fake):
    """Non-saturating GAN losses from discriminator logits: (generator's adversarial loss, discriminator loss)."""
    d_real, d_fake = ops.cast(d_real, "float32"), ops.cast(d_fake, "float32")
    return ops.mean(ops.softplus(-d_fake)), ops.mean(ops.softplus(-d_real)) + ops.mean(ops.softplus(d_fake))


def discriminator_optimizer(lr=3e-4):
    """The discriminator's Adam (DCGAN's beta_1 = 0.5), for the warm-up and the adversarial phase alike."""
    return keras.optimizers.Adam(lr, beta_1=0.5)


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


class Trainer(keras.Model):
    """Trains a :class:`CompressionModel`, the keras-io DCGAN pattern extended to
    rate-distortion.

    Generator loss per sample: ``bpp + lambda(level) * D`` with distortion
    ``D = MSE_255 + ms_ssim * (1 - MS-SSIM) + ssim * (1 - SSIM)`` (both 0: MSE only) plus,
    when a discriminator is given and ``beta > 0``, ``beta * softplus(-D(x_hat, z))``
    (non-saturating GAN loss). ``D`` is conditioned on the quantized latent
    (HiFiC) and learns ``softplus(-D(x, z)) + softplus(D(x_hat, z))`` with its
    own optimizer: ``compile(optimizer=..., d_optimizer=...)``.

    ``d_only=True`` is the discriminator's warm-up: the model stays frozen and
    ``optimizer`` trains the discriminator alone (no ``d_optimizer``).
    ``decoder_only=True`` trains only the synthesis and its gains: the latents,
    the entropy model and so every file's bytes stay exactly as they were.
    """

    def __init__(self, model: CompressionModel, discriminator=None, beta=0.0, ms_ssim=0.0, ssim=0.0, d_only=False, decoder_only=False, **kw):
        super().__init__(**kw)
        self.model = model
        self.discriminator = discriminator
        self.beta = float(beta)
        self.d_only = bool(d_only)
        self.decoder_only = bool(decoder_only)
        if d_only and not self.gan:
            raise ValueError("a discriminator warm-up needs a discriminator and beta > 0")
        self.similarity = {k: float(w) for k, w in (("ms_ssim", ms_ssim), ("ssim", ssim)) if w}  # term -> weight
        names = ("loss", "bpp", "psnr") + tuple(self.similarity) + (("adv", "d_loss") if self.gan else ())
        self.trackers = {k: keras.metrics.Mean(name=k) for k in names}
        self.built = True  # the parts are built; fit must not trace a call()
        # Created here, not lazily inside the traced step (tf.distribute needs that).
        self.seed = keras.random.SeedGenerator(int(np.random.randint(2**31)))

    @property
    def gan(self) -> bool:
        return self.discriminator is not None and self.beta > 0

    def compile(self, optimizer, d_optimizer=None, **kw):
        super().compile(optimizer=optimizer, **kw)
        self.d_optimizer = optimizer if self.d_only else d_optimizer
        # Built here, on exactly the variables each one updates, so that
        # checkpoints hold the same slots on every run.
        if not self.d_only:
            optimizer.build(self.g_variables)
        if self.gan:
            self.d_optimizer.build(self.discriminator.trainable_variables)

    @property
    def g_variables(self):
        """The model variables the generator's optimizer updates."""
        m = self.model
        return m.synthesis.trainable_variables + [m.log_inv_gain] if self.decoder_only else m.trainable_variables

    @property
    def optimizers(self):
        return {"g": self.optimizer} | ({"d": self.d_optimizer} if self.gan and not self.d_only else {})

    @property
    def parts(self):
        # The warm-up's frozen model is not checkpointed again: it is phase 1's.
        return ({} if self.d_only else {"model": self.model}) | ({"disc": self.discriminator} if self.gan else {})

    @property
    def metrics(self):
        return list(self.trackers.values())

    def losses_of(self, x, training):
        """Generator loss, discriminator loss (or None) and per-sample bpp, MSE."""
        x = ops.convert_to_tensor(x, "float32")
        b = ops.shape(x)[0]
        level = keras.random.uniform((b,), 0.0, self.model.config.num_levels - 1.0, seed=self.seed)
        x_hat, z_hat, lik = self.model(x, level, training=training, seed=self.seed)
        pixels = ops.cast(ops.shape(x)[1] * ops.shape(x)[2], "float32")
        bpp = -ops.sum(ops.log(lik), axis=(1, 2, 3)) / (math.log(2.0) * pixels)
        mse = ops.mean(ops.square(x - x_hat), axis=(1, 2, 3)) * 255.0**2
        distortion, extra = mse, {}
        shown = ops.cast(ops.clip(x_hat, 0.0, 1.0), "float32") if self.similarity else None  # what a decoder outputs
        for name, w in self.similarity.items():
            sim = SIMILARITY_TERMS[name](x, shown)
            distortion, extra[name] = distortion + w * (1.0 - sim), ops.mean(sim)
        loss = ops.mean(bpp + self.model.lambdas(level) * distortion)
        if not self.gan:
            return loss, None, bpp, mse, extra
        cond = ops.stop_gradient(z_hat)
        adv, d_loss = gan_losses(self.discriminator([x, cond], training=training), self.discriminator([x_hat, cond], training=training))
        return loss + self.beta * adv, d_loss, bpp, mse, extra | {"adv": adv, "d_loss": d_loss}

    def train_step(self, x):
        if keras.backend.backend() == "torch":
            return self._torch_train_step(x)
        import tensorflow as tf

        # Per-replica losses are divided by the replica count: the optimizer
        # sums gradients over replicas (tf.distribute convention).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            loss, d_loss, bpp, mse, extra = self.losses_of(x, training=True)
            g_scaled = loss / replicas
            d_scaled = d_loss / replicas if self.gan else None
        if not self.d_only:
            _apply(self.optimizer, g_tape, g_scaled, self.g_variables)
        if self.gan:
            _apply(self.d_optimizer, d_tape, d_scaled, self.discriminator.trainable_variables)
        return self._update(loss, bpp, mse, extra)

    def _torch_train_step(self, x):
        import torch

        x, _, _ = keras.utils.unpack_x_y_sample_weight(x)  # the generator yields (x,)
        loss, d_loss, bpp, mse, extra = self.losses_of(x, training=True)
        if not self.d_only:
            _apply_torch(self.optimizer, loss, self.g_variables, keep_graph=self.gan)
        if self.gan:
            _apply_torch(self.d_optimizer, d_loss, self.discriminator.trainable_variables)
        with torch.no_grad():
            return self._update(loss.detach(), bpp.detach(), mse.detach(), {k: v.detach() for k, v in extra.items()})

    def test_step(self, x):
        loss, _, bpp, mse, extra = self.losses_of(x, training=False)
        return self._update(loss, bpp, mse, extra)

    def _update(self, loss, bpp, mse, extra):
        self.trackers["loss"].update_state(loss)
        self.trackers["bpp"].update_state(ops.mean(bpp))
        self.trackers["psnr"].update_state(ops.mean(10.0 * ops.log(255.0**2 / ops.maximum(mse, 1e-6)) / math.log(10.0)))
        for k, v in extra.items():
            self.trackers[k].update_state(v)
        return {k: t.result() for k, t in self.trackers.items()}


def _apply(optimizer, tape, loss, variables):
    import tensorflow as tf

    grads = tape.gradient(loss, variables)
    # A non-finite batch (rare GDN overflow) must not poison the weights.
    finite = tf.math.is_finite(loss)
    optimizer.apply_gradients(zip([tf.where(finite, g, tf.zeros_like(g)) for g in grads], variables))


def _apply_torch(optimizer, loss, variables, keep_graph=False):
    """:func:`_apply` under the PyTorch backend."""
    import torch

    params = [v.value for v in variables]
    grads = torch.autograd.grad(loss, params, retain_graph=keep_graph, allow_unused=True)
    finite = torch.isfinite(loss)
    grads = [torch.where(finite, g, 0.0) if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    with torch.no_grad():
        optimizer.apply(grads, variables)


class _OneDevice:
    """What :func:`train` needs of a strategy, for backends without tf.distribute."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def make_strategy(kind="auto"):
    """The tf.distribute strategy to train under.

    ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set,
    ``MirroredStrategy`` when there are several GPUs, else the default
    (single-device) strategy. ``mirrored`` on a machine without GPUs mirrors
    over the logical CPU devices (how the tests exercise this path). The
    PyTorch backend trains on one device: ``auto`` and ``default`` only.
    """
    if keras.backend.backend() not in ("tensorflow", "torch"):
        raise ValueError(f"catcomp trains under the tensorflow or torch Keras backend, not {keras.backend.backend()!r}")
    if keras.backend.backend() == "torch":
        if kind not in ("auto", "default"):
            raise ValueError(f"strategy {kind!r} needs the TensorFlow backend (KERAS_BACKEND={keras.backend.backend()})")
        return _OneDevice()
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if kind == "auto":
        kind = "multiworker" if os.environ.get("TF_CONFIG") else "mirrored" if len(gpus) > 1 else "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy([d.name for d in gpus or tf.config.list_logical_devices("CPU")])
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {kind!r} (auto, default, mirrored, multiworker)")


# --- data ---------------------------------------------------------------------


def load_pool(arrays, crop, half_res_above=384):
    """Keep images with a side of at least ``crop``; add a half-size copy of large ones
    (those whose half still holds a crop).

    Downscaled copies are cleaner (fewer JPEG artefacts, more detail per
    pixel), the usual trick for learned-compression training sets.
    """
    from data_prep.patches import downscale

    pool = []
    for rgb in arrays:
        if min(rgb.shape[:2]) >= crop:
            pool.append(rgb)
        if min(rgb.shape[:2]) >= max(half_res_above, 2 * crop):
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
    """Infinite stream of batches of random crops + flips (float32 in 0..1) from an
    in-memory pool: a ``tf.data.Dataset`` under TensorFlow, else a generator."""
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

    if keras.backend.backend() != "tensorflow":

        def batches():
            crops = gen()
            while True:
                yield (np.stack([next(crops) for _ in range(batch)]).astype(np.float32) / 255.0,)

        return batches()
    import tensorflow as tf

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec((crop, crop, 3), tf.uint8))
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch).map(lambda b: tf.cast(b, tf.float32) / 255.0).prefetch(4).with_options(opts)


# --- checkpoints ----------------------------------------------------------------


class Checkpointer(keras.callbacks.Callback):
    """Saves weights + optimizer states + step every ``every_s`` seconds and at the end.

    ``<part>.weights.h5`` for the model (and discriminator), ``optimizer.npz``
    with every optimizer variable (step counters and Adam moments included)
    and ``state.json``; each written atomically, state last.
    """

    def __init__(self, ckpt_dir, every_s=300, seconds_before=0.0):
        super().__init__()
        self.dir = Path(ckpt_dir)
        self.every_s = every_s
        self.t0 = time.time() - seconds_before
        self.last = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if time.time() - self.last >= self.every_s:
            self.save(logs)

    def on_train_end(self, logs=None):
        self.save(logs)

    def save(self, logs=None):
        self.dir.mkdir(parents=True, exist_ok=True)
        trainer = self.model
        for name, part in trainer.parts.items():
            save_weights_atomic(part, self.dir / f"{name}.weights.h5")
        arrays = {f"{k}{i}": ops.convert_to_numpy(v) for k, opt in trainer.optimizers.items() for i, v in enumerate(opt.variables)}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_bytes_atomic(self.dir / "optimizer.npz", buf.getvalue())
        state = {
            "step": int(ops.convert_to_numpy(trainer.optimizer.iterations)),
            "seconds": round(time.time() - self.t0, 1),
            "logs": {k: float(v) for k, v in (logs or {}).items()},
        }
        write_bytes_atomic(self.dir / "state.json", json.dumps(state).encode())
        self.last = time.time()


def restore(trainer: Trainer, ckpt_dir: Path) -> dict:
    """Load a checkpoint written by :class:`Checkpointer`; returns its state."""
    ckpt_dir = Path(ckpt_dir)
    for name, part in trainer.parts.items():
        part.load_weights(ckpt_dir / f"{name}.weights.h5")
    with np.load(ckpt_dir / "optimizer.npz", allow_pickle=False) as z:
        for k, opt in trainer.optimizers.items():
            for i, v in enumerate(opt.variables):
                v.assign(z[f"{k}{i}"])
    return json.loads((ckpt_dir / "state.json").read_text())


# --- the two-phase run ------------------------------------------------------------


def _phase(name, trainer, data, total, out_dir, resume, ckpt_every_s, verbose):
    """Fit ``trainer`` up to ``total`` optimizer steps, resuming its checkpoint."""
    ckpt = out_dir / "checkpoint" / name
    state = restore(trainer, ckpt) if resume and (ckpt / "state.json").is_file() else {"step": 0, "seconds": 0.0}
    todo = total - state["step"]
    if todo > 0:
        callbacks = [
            Checkpointer(ckpt, ckpt_every_s, state["seconds"]),
            keras.callbacks.CSVLogger(str(out_dir / f"train_log_{name}.csv"), append=True),
        ]
        if importlib.util.find_spec("tensorflow"):  # Keras writes TensorBoard logs through tf.summary
            callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "logs" / name), update_freq=50, write_graph=False))
        # A resumed run draws new crops rather than replaying the first ones.
        ds = crop_dataset(*data, seed=2 * state["step"] + (name == "gan"))
        # Log "epochs" of 500 steps, then the remainder: exactly ``total`` steps.
        for epochs, per_epoch in ((todo // 500, 500), (1, todo % 500)):
            if epochs and per_epoch:
                trainer.fit(ds, epochs=epochs, steps_per_epoch=per_epoch, callbacks=callbacks, verbose=verbose, shuffle=False)
        state = json.loads((ckpt / "state.json").read_text())
    return state


class OptionError(ValueError):
    """An option :func:`train` cannot run with; ``option`` names it as the CLI spells it."""

    def __init__(self, option, reason):
        super().__init__(reason)
        self.option = option


def check_options(crop, ms_ssim=0.0, disc_warmup=0, gan_steps=0, beta=0.0, gan_decoder_only=False):
    """Raise :class:`OptionError` for options :func:`train` cannot run with."""
    if ms_ssim and crop < MS_SSIM_MIN_SIDE:
        raise OptionError("--crop", f"the MS-SSIM term needs crops of at least {MS_SSIM_MIN_SIDE} px (its five scales); got {crop}")
    for option, value in (("--disc-warmup", disc_warmup), ("--gan-decoder-only", gan_decoder_only)):  # phase 2's own options
        if value and not (gan_steps and beta > 0):
            raise OptionError(option, "it applies to the adversarial phase, and there is none (gan_steps > 0 and beta > 0)")


def train(
    data,
    out_dir,
    config: ModelConfig | None = None,
    steps=3000,
    gan_steps=0,
    beta=0.0,
    crop=128,
    batch=8,
    lr=1e-4,
    gan_lr=3e-5,
    categories=None,
    init=None,
    resume=False,
    ckpt_every_s=300,
    seed=0,
    card=None,
    bf16=False,
    strategy="auto",
    ms_ssim=0.0,
    ssim=0.0,
    disc_warmup=0,
    gan_decoder_only=False,
    verbose=None,
):
    """Train (or resume) a model on the ``train`` split of ``data``; save it to ``out_dir``.

    Phase 1 is rate-distortion only (``steps`` steps, peak ``lr``). With
    ``gan_steps > 0`` the phase-1 model is saved to ``out_dir/beta0`` and
    phase 2 fine-tunes it with the adversarial term (``beta``) against a
    fresh conditional discriminator, first trained alone for ``disc_warmup``
    steps against the frozen phase-1 model (a fresh one stays at chance for
    about 800 steps: ``bench/disc_probe.py``); ``gan_decoder_only`` trains only
    the synthesis in phase 2, so that it cannot change the rate. ``init`` is a model directory to start
    from (fine-tuning); ``ms_ssim`` and ``ssim`` weigh ``1 - MS-SSIM`` and
    ``1 - SSIM`` terms in the distortion of both phases (see :class:`Trainer`); ``resume`` continues from the checkpoints in
    ``out_dir/checkpoint`` exactly where they stopped. The card's ``training``
    holds the total steps and every run, the starting model's first (see
    :func:`lineage`). Returns the card.
    """
    check_options(crop, ms_ssim, disc_warmup, gan_steps, beta, gan_decoder_only)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)
    keras.utils.set_random_seed(seed)
    init_config = start_config(init) if init else None
    config = config or init_config or ModelConfig()  # a fine-tune keeps its starting model's architecture by default
    pool, n_sources = training_pool(data, crop, categories)
    ds = (pool, crop, batch)
    dtype = "mixed_bfloat16" if bf16 else None
    t0 = time.time()
    with strategy.scope():
        model = CompressionModel(config, transform_dtype=dtype)
        if init:  # a config that grows the starting model's keeps its weights and adds fresh blocks
            start = model if init_config == config else CompressionModel(init_config)
            start.load_weights(Path(init) / "model.weights.h5")
            if start is not model:
                transfer_weights(start, model)
        rd = Trainer(model, ms_ssim=ms_ssim, ssim=ssim)
        rd.compile(keras.optimizers.Adam(PlateauCosine(steps, peak=lr), global_clipnorm=1.0))
    prior_steps, prior_runs, init_checksum = _run_lineage(init, out_dir / "checkpoint", resume)
    state = _phase("rd", rd, ds, steps, out_dir, resume, ckpt_every_s, verbose)
    info = {"init": init_label(init), "init_checksum": init_checksum, "rd_steps": steps, "gan_steps": gan_steps, "beta": beta if gan_steps else 0.0, "ms_ssim": ms_ssim, "ssim": ssim,
            "crop": crop, "batch": batch, "lr_peak": lr, "bf16": bf16, "replicas": strategy.num_replicas_in_sync,
            "train_sources": n_sources, "train_pool": len(pool), "data": str(data), "categories": categories or "all"}
    info["rd_seconds"] = state["seconds"]
    if gan_steps:
        beta0 = {"steps": prior_steps + steps, "runs": prior_runs + [{**info, "gan_steps": 0, "beta": 0.0}]}
        # A resumed run whose phase 1 was saved already does not save it again.
        if not (resume and (out_dir / "beta0" / "card.json").is_file() and read_card(out_dir / "beta0").get("training") == json.loads(json.dumps(beta0))):
            save_model(model, out_dir / "beta0", {**(card or {}), "name": model_id((card or {}).get("name", out_dir.name))[:10] + "-beta0", "training": beta0}, pool)
        with strategy.scope():
            disc = build_discriminator(config, dtype)
            gan = Trainer(model, disc, beta=beta, ms_ssim=ms_ssim, ssim=ssim, decoder_only=gan_decoder_only)
            gan.compile(
                keras.optimizers.Adam(PlateauCosine(gan_steps, peak=gan_lr, warmup=100), global_clipnorm=1.0),
                d_optimizer=discriminator_optimizer(),
            )
            if disc_warmup:
                warm = Trainer(model, disc, beta=beta, d_only=True)
                warm.compile(discriminator_optimizer())
        if disc_warmup:
            state = _phase("disc", warm, ds, disc_warmup, out_dir, resume, ckpt_every_s, verbose)
            info |= {"disc_warmup": disc_warmup, "disc_warmup_seconds": state["seconds"], "disc_warmup_d_loss": state["logs"].get("d_loss")}
        info["gan_seconds"] = _phase("gan", gan, ds, gan_steps, out_dir, resume, ckpt_every_s, verbose)["seconds"]
        info["gan_lr_peak"] = gan_lr
        if gan_decoder_only:
            info["gan_decoder_only"] = True
    info["seconds_this_run"] = round(time.time() - t0)
    training = {"steps": prior_steps + steps + gan_steps, "runs": prior_runs + [info]}
    return save_model(model, out_dir, {**(card or {}), "training": training}, pool)


def lineage(init=None) -> tuple[int, list, str | None]:
    """The training behind the model at ``init`` (None: from scratch): its total
    steps, its runs (oldest first) and its checksum. A run's card extends these,
    so a model fine-tuned round after round keeps its whole history."""
    if not init:
        return 0, [], None
    card = read_card(init)
    t = card.get("training") or {}
    runs = t.get("runs", [t] if t else [])
    return t.get("steps", sum(r.get("rd_steps", 0) + r.get("gan_steps", 0) for r in runs)), runs, card.get("checksum")


def _run_lineage(init, ckpt_dir, resume):
    """:func:`lineage` of ``init`` as it was when this run started, kept beside its
    checkpoints: resumed after saving over its own ``init`` (``--out`` = ``--init``),
    a run must not find itself in its starting model's history."""
    path = Path(ckpt_dir) / "lineage.json"
    if resume and path.is_file():
        return tuple(json.loads(path.read_text()))
    found = lineage(init)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(found).encode())
    return found


def init_label(init) -> str:
    """How a card records the model a run started from: ``models/NAME`` for one in
    the models directory (not this machine's absolute path), else the path as given."""
    if not init:
        return "scratch"
    try:
        return f"models/{Path(init).resolve().relative_to(models_dir().resolve()).as_posix()}"
    except ValueError:
        return str(init)


def start_config(init=None, res_blocks=None) -> ModelConfig:
    """The architecture of a run started from ``init`` (a model directory; None: from
    scratch): its own, with ``res_blocks`` synthesis blocks where given. A trained
    model can be grown by blocks, not shrunk."""
    cfg = ModelConfig.from_dict(read_card(init)["config"]) if init else ModelConfig()
    if res_blocks is None:
        return cfg
    if res_blocks < cfg.res_blocks:
        raise ValueError(f"{init} has {cfg.res_blocks} residual blocks; a fine-tune can add blocks, not remove them")
    return dataclasses.replace(cfg, res_blocks=res_blocks)


def refit_tables(model_dir, data, categories=None, crop=128) -> dict:
    """Rebuild a trained model's coding tables and refit their context choice on
    the ``train`` split of ``data``; the weights stay as they are."""
    from .zoo import load_weights, save_tables

    model = load_weights(model_dir)
    pool, _ = training_pool(data, crop, categories)
    return save_tables(model, model_dir, None, pool)


def main(argv=None):
    """``python -m catcomp.train``: the same as ``catcomp train``."""
    from .cli import train_cmd

    train_cmd.main(argv, standalone_mode=True)


if __name__ == "__main__":
    main()
