"""Encoder-side latent refinement: more encoding time for a better file.

The analysis transform maps every image to a latent in one pass, trained to
be good on average. For one image, a few steps of gradient descent on its
latent against the loss the model was trained with -- rate from the entropy
model plus lambda(level) x MSE through the synthesis transform -- find a
latent that decodes better at about the same rate (Campos et al. 2019,
"Content adaptive optimization for neural image compression"). Only the
encoder changes: the file format and the decoder stay as they are, so
refined files decode with the same model.

``Refinement(steps, ssim=W)`` adds ``W x (1 - SSIM)`` to the distortion, for
files that must meet an SSIM target (``--refine-for ssim`` on the CLI,
:data:`SSIM_WEIGHT`): the latent then spends its bits where SSIM sees them,
mostly fine structure in flat and dark areas (on astronomy's ``test`` split
it still raised PSNR over the plain encoder; README, "Refinement aimed at SSIM").

Rate uses additive uniform noise and the decoder sees straight-through
rounding, as in training (:meth:`catcomp.transforms.CompressionModel.from_latent`).
The noise is seeded, so refinement is deterministic on a given machine.
Large images are refined in tiles of latent with a margin of context around
each. Where the CPU computes in bfloat16 natively, the gradients are taken
through a bfloat16 copy of the transforms (about 1.7x faster here; the
final latent is still quantized and checked by the float32 model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .entropy import LEVEL_STEP
from .metrics import differentiable_ssim
from .transforms import CompressionModel

#: Adam's peak learning rate (cosine-decayed to 0 over the steps).
LR = 3e-3
#: Weight of ``1 - SSIM`` beside MSE (0..255 scale) for ``--refine-for ssim``, chosen on astronomy's ``val`` split.
SSIM_WEIGHT = 1000.0
TILE = 32  # latent positions per tile side (512 px); the codec's tiler adds 4 (64 px) of context around each
_copies: dict = {}  # model checksum -> its bfloat16 copy


@dataclass(frozen=True)
class Refinement:
    """How hard the encoder works on each latent: ``steps`` Adam steps against
    rate + lambda(level) x (MSE + ``ssim`` x (1 - SSIM)). Falsy when ``steps`` is 0;
    everywhere a ``refine`` argument is taken, a plain int N means ``Refinement(N)``."""

    steps: int = 0
    ssim: float = 0.0

    def __post_init__(self):
        if self.steps < 0 or not self.ssim >= 0:
            raise ValueError(f"refinement needs steps >= 0 and an SSIM weight >= 0, not {self.steps} and {self.ssim}")

    def __bool__(self):
        return self.steps > 0

    @classmethod
    def of(cls, refine) -> "Refinement":
        return refine if isinstance(refine, cls) else cls(int(refine or 0))

    @classmethod
    def aiming_at(cls, steps: int, metric: str = "mse") -> "Refinement":
        """``steps`` of refinement for ``metric``: "mse" (and so PSNR) or "ssim"."""
        weights = {"mse": 0.0, "ssim": SSIM_WEIGHT}
        if metric not in weights:
            raise ValueError(f"refinement aims at one of {sorted(weights)}, not {metric!r}")
        return cls(steps, weights[metric])


def _native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: stay with float32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16 = _native_bf16()


def gradient_model(lm) -> CompressionModel:
    """The model the refinement differentiates: a bfloat16 copy where that is fast."""
    if not BF16:
        return lm.model
    if lm.checksum not in _copies:
        copy = CompressionModel(lm.model.config, transform_dtype="mixed_bfloat16")
        copy.set_weights(lm.model.get_weights())
        _copies[lm.checksum] = copy
    return _copies[lm.checksum]


@tf.function(reduce_retracing=True)
def _gradient(model, y, x, level, seed, ssim_weight):
    with tf.GradientTape() as tape:
        tape.watch(y)
        x_hat, _, likelihood = model.from_latent(y, level, tf.random.stateless_uniform(tf.shape(y), seed, -0.5, 0.5))
        bits = -tf.reduce_sum(tf.math.log(likelihood)) / np.log(2.0)
        pixels = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
        distortion = tf.reduce_mean(tf.square(x - x_hat)) * 255.0**2
        if ssim_weight:  # a Python float: each objective traces its own graph
            distortion += ssim_weight * (1.0 - differentiable_ssim(x + 0.5, tf.clip_by_value(x_hat + 0.5, 0.0, 1.0))[0])
        loss = bits / pixels + model.lambdas(level)[0] * distortion
    return tape.gradient(loss, y)


def refine_tile(y: np.ndarray, rgb: np.ndarray, lm, j: int, refine) -> np.ndarray:
    """A better float latent than ``y`` (h, w, M) for padded ``rgb`` (16h, 16w, 3)
    at knob grid index ``j``, after ``refine`` (a :class:`Refinement` or a step
    count). Images larger than :data:`TILE` go through it tile by tile
    (:func:`catcomp.codec.refined`)."""
    r = Refinement.of(refine)
    var = tf.Variable(y[None])
    x = tf.constant(rgb[None].astype(np.float32) / 255.0 - 0.5)
    level = tf.constant([j * LEVEL_STEP], tf.float32)
    model = gradient_model(lm)
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(LR, r.steps))
    for i in range(r.steps):
        opt.apply_gradients([(_gradient(model, tf.convert_to_tensor(var), x, level, tf.constant([i, 0]), r.ssim), var)])
    return var.numpy()[0]
