"""The shared architecture builder.

Every catcomp model -- each category's and the general one -- is built here
from one small :class:`ModelConfig`: an analysis transform (image -> latent,
downsampling 16), a synthesis transform (latent -> image), per-level gain
vectors that give one model a continuous rate knob (Cui et al. 2021,
asymmetric gained), a factorized entropy model (see :mod:`catcomp.entropy`),
and a conditional patch discriminator used only in GAN training.
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
from keras import layers, ops

from .entropy import FactorizedDensity

#: MSE weights (on the 0..255 scale) of the discrete rate levels, low to high
#: rate. Training samples a continuous level and interpolates log-lambda, so
#: every point of the knob between levels is trained, not only the levels.
DEFAULT_LAMBDAS = (0.0018, 0.0045, 0.011, 0.028, 0.07, 0.18)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes a model. Stored in each model's card."""

    N: int = 128  # channels of the hidden layers
    M: int = 192  # channels of the latent
    lambdas: tuple = DEFAULT_LAMBDAS
    density_filters: tuple = (3, 3, 3)
    disc_channels: tuple = (64, 128, 256)
    disc_latent_channels: int = 12
    # Residual blocks in the synthesis at 1/4 resolution (extra decoder
    # capacity; 0 in every model trained before session 25).
    res_blocks: int = 0

    @property
    def num_levels(self) -> int:
        return len(self.lambdas)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


class GDN(layers.Layer):
    """Generalized divisive normalization (Balle et al. 2016), or its inverse.

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``; the inverse multiplies.
    beta and gamma are kept non-negative by squaring a bounded parameter.
    """

    def __init__(self, inverse=False, **kw):
        super().__init__(**kw)
        self.inverse = inverse

    def build(self, shape):
        c = shape[-1]
        self.beta = self.add_weight(shape=(c,), initializer="ones", name="beta")
        # gamma = raw**2: off-diagonals start small but not at 0, where the
        # square's gradient would vanish and they could never be learned.
        init = np.sqrt(0.1) * np.eye(c) + 1e-3 * (1 - np.eye(c))
        self.gamma = self.add_weight(shape=(c, c), initializer=keras.initializers.Constant(init), name="gamma")

    def call(self, x):
        beta = ops.square(ops.maximum(self.beta, 1e-3)) + 1e-6
        gamma = ops.square(self.gamma)
        norm = ops.sqrt(ops.matmul(ops.square(x), gamma) + beta)
        return x * norm if self.inverse else x / norm

    def get_config(self):
        return {**super().get_config(), "inverse": self.inverse}


class ResBlock(layers.Layer):
    """``x + conv(relu(conv(x)))`` with 3 x 3 convolutions. The second
    convolution starts at zero, so a block added to a trained synthesis
    leaves its output unchanged until training moves it."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.conv_a = self.conv_b = None

    def build(self, shape):
        c = shape[-1]
        self.conv_a = layers.Conv2D(c, 3, padding="same", activation="relu", name="conv_a", dtype=self.dtype_policy)
        self.conv_b = layers.Conv2D(c, 3, padding="same", kernel_initializer="zeros", name="conv_b", dtype=self.dtype_policy)
        self.conv_a.build(shape)
        self.conv_b.build(shape)

    def call(self, x):
        return x + self.conv_b(self.conv_a(x))


def _conv(filters, transpose=False, name=None, dtype=None):
    cls = layers.Conv2DTranspose if transpose else layers.Conv2D
    return cls(filters, 5, strides=2, padding="same", name=name, dtype=dtype)


def build_analysis(cfg: ModelConfig, dtype=None) -> keras.Sequential:
    """Centred image in [-0.5, 0.5] (B, H, W, 3) -> latent (B, H/16, W/16, M).

    ``dtype`` is a Keras dtype policy for the layers (``"mixed_bfloat16"``
    speeds up CPU training; weights stay float32 either way).
    """
    seq = []
    for i in range(3):
        seq += [_conv(cfg.N, name=f"conv{i}", dtype=dtype), GDN(name=f"gdn{i}", dtype=dtype)]
    seq.append(_conv(cfg.M, name="conv3", dtype=dtype))
    return keras.Sequential([keras.Input((None, None, 3))] + seq, name="analysis")


def build_synthesis(cfg: ModelConfig, dtype=None) -> keras.Sequential:
    """Latent (B, h, w, M) -> centred image (B, 16h, 16w, 3), roughly in [-0.5, 0.5]."""
    seq = []
    for i in range(3):
        seq += [_conv(cfg.N, transpose=True, name=f"deconv{i}", dtype=dtype), GDN(inverse=True, name=f"igdn{i}", dtype=dtype)]
        if i == 1:
            seq += [ResBlock(name=f"res{k}", dtype=dtype) for k in range(cfg.res_blocks)]
    seq.append(_conv(3, transpose=True, name="deconv3", dtype=dtype))
    return keras.Sequential([keras.Input((None, None, cfg.M))] + seq, name="synthesis")


HIGHPASS_GAIN = 10.0


def build_discriminator(cfg: ModelConfig, dtype=None) -> keras.Model:
    """Conditional patch discriminator (HiFiC style): (image, latent) -> logits.

    The latent is reduced to a few channels, upsampled to image size and
    concatenated with the image; strided convolutions give one logit per patch.
    """
    image = keras.Input((None, None, 3))
    latent = keras.Input((None, None, cfg.M))
    cond = layers.Conv2D(cfg.disc_latent_channels, 3, padding="same", activation="leaky_relu", dtype=dtype)(latent)
    cond = layers.UpSampling2D(16, interpolation="nearest", dtype=dtype)(cond)
    # Besides the image (as -1..1), D sees its high-pass residual amplified:
    # blur from a lossy decoder is then a first-layer feature, not something
    # D must discover from near-identical inputs.
    centred = layers.Rescaling(2.0, -1.0, dtype=dtype)(image)
    blurred = layers.AveragePooling2D(3, strides=1, padding="same", dtype=dtype)(centred)
    highpass = layers.Rescaling(HIGHPASS_GAIN, dtype=dtype)(layers.Subtract(dtype=dtype)([centred, blurred]))
    h = layers.Concatenate(dtype=dtype)([centred, highpass, cond])
    for c in cfg.disc_channels:
        h = layers.Conv2D(c, 4, strides=2, padding="same", dtype=dtype)(h)
        h = layers.LeakyReLU(0.2, dtype=dtype)(h)
    logits = layers.Conv2D(1, 1, dtype="float32")(h)
    return keras.Model([image, latent], logits, name="discriminator")


class CompressionModel(keras.Model):
    """Transforms + gains + entropy model: the part of a codec that is shipped.

    ``call(x, level)`` is the training-time forward pass and returns the
    reconstruction, the quantized latent and the latent likelihoods. The
    coding path (:mod:`catcomp.codec`) uses :meth:`encode_latent` and
    :meth:`decode_latent` with integer symbols in between.
    """

    def __init__(self, config: ModelConfig | None = None, transform_dtype=None, **kw):
        super().__init__(**kw)
        self.config = config or ModelConfig()
        cfg = self.config
        # Only the transforms may run in reduced precision; gains, rounding
        # and the entropy model always stay float32.
        self.analysis = build_analysis(cfg, transform_dtype)
        self.synthesis = build_synthesis(cfg, transform_dtype)
        self.density = FactorizedDensity(cfg.M, cfg.density_filters, name="density")
        init = np.linspace(np.log(0.5), np.log(8.0), cfg.num_levels)[:, None] * np.ones((1, cfg.M))
        self.log_gain = self.add_weight(shape=(cfg.num_levels, cfg.M), initializer=keras.initializers.Constant(init), name="log_gain")
        self.log_inv_gain = self.add_weight(
            shape=(cfg.num_levels, cfg.M), initializer=keras.initializers.Constant(-init), name="log_inv_gain"
        )
        self.build_all()

    def build_all(self):
        """Create every weight so that weights can be loaded before first use."""
        x = ops.zeros((1, 16, 16, 3))
        y = self.analysis(x)
        self.synthesis(y)
        self.density.build(None)
        self.built = True

    def gains(self, level):
        """Encoder and decoder gain vectors for continuous ``level`` (shape (B,)).

        Exponential interpolation between neighbouring discrete levels.
        Returns two tensors of shape (B, 1, 1, M).
        """
        return tuple(ops.exp(lerp_rows(t, level))[:, None, None, :] for t in (self.log_gain, self.log_inv_gain))

    def lambdas(self, level):
        """Distortion weight for continuous ``level`` (log-linear between levels)."""
        loglam = np.log(np.asarray(self.config.lambdas, dtype="float32"))[:, None]
        return ops.exp(lerp_rows(loglam, level))[:, 0]

    def call(self, x, level, training=False, seed=None):
        y = ops.cast(self.analysis(x - 0.5), "float32")
        noise = keras.random.uniform(ops.shape(y), -0.5, 0.5, seed=seed) if training else None
        x_hat, z_hat, likelihood = self.from_latent(y, level, noise)
        return x_hat + 0.5, z_hat, likelihood

    def from_latent(self, y, level, noise=None):
        """(reconstruction - 0.5, quantized latent, likelihoods) of float latent ``y``.

        With ``noise`` (uniform in [-0.5, 0.5), the shape of ``y``): mixed
        quantization (Minnen & Singh 2020), noise for the rate term and
        straight-through rounding for what the decoder sees. Without: rounding.
        """
        g, inv_g = self.gains(level)
        z = y * g
        if noise is not None:
            z_noisy = z + noise
            z_hat = z + ops.stop_gradient(ops.round(z) - z)
        else:
            z_noisy = z_hat = ops.round(z)
        likelihood = self.density.likelihood(z_noisy, g)
        return ops.cast(self.synthesis(z_hat * inv_g), "float32"), z_hat, likelihood


def transfer_weights(src: CompressionModel, dst: CompressionModel):
    """Copy every weight of ``src`` into ``dst``, a model of the same config
    except for more synthesis blocks, which keep their initial values."""
    for part in ("analysis", "synthesis"):
        for layer in getattr(src, part).layers:
            getattr(dst, part).get_layer(layer.name).set_weights(layer.get_weights())
    dst.density.set_weights(src.density.get_weights())
    dst.log_gain.assign(src.log_gain)
    dst.log_inv_gain.assign(src.log_inv_gain)


def lerp_rows(table, level):
    """Rows of ``table`` (L, C) linearly interpolated at continuous ``level`` (B,)."""
    n = ops.shape(table)[0]
    level = ops.clip(ops.cast(level, "float32"), 0.0, n - 1.0)
    lo = ops.minimum(ops.floor(level), n - 2.0)
    a = (level - lo)[:, None]
    lo = ops.cast(lo, "int32")
    table = ops.convert_to_tensor(table, "float32")
    return (1.0 - a) * ops.take(table, lo, axis=0) + a * ops.take(table, lo + 1, axis=0)
