"""Image quality metrics on uint8 RGB arrays (0..255), computed correctly.

MSE, PSNR and L1 are plain numpy; SSIM comes from scikit-image (Gaussian
window, sigma 1.5, as in Wang et al. 2004) and MS-SSIM from TensorFlow.
Differentiable copies of SSIM and MS-SSIM in Keras ops serve the training
and refinement losses.
"""

from __future__ import annotations

import numpy as np


#: MS-SSIM's five scales need both sides of at least this many pixels.
MS_SSIM_MIN_SIDE = 161


def _pair(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return a, b


def mse(a, b) -> float:
    a, b = _pair(a, b)
    return float(np.mean((a - b) ** 2))


def psnr(a, b, peak=255.0) -> float:
    """PSNR over all pixels and channels; ``inf`` for identical images."""
    m = mse(a, b)
    return float("inf") if m == 0 else float(10 * np.log10(peak**2 / m))


def l1(a, b) -> float:
    a, b = _pair(a, b)
    return float(np.mean(np.abs(a - b)))


def ssim(a, b) -> float:
    from skimage.metrics import structural_similarity

    a, b = _pair(a, b)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def ms_ssim(a, b) -> float:
    """MS-SSIM (5 scales, standard weights); needs a short side of at least 161 px."""
    import tensorflow as tf

    a, b = _pair(a, b)
    return float(tf.image.ssim_multiscale(a[None].astype(np.float32), b[None].astype(np.float32), max_val=255.0)[0])


def hf_energy_ratio(original, reconstruction, sigma=1.5) -> float:
    """High-frequency energy of ``reconstruction`` over that of ``original``.

    High frequencies = luma minus its Gaussian blur. Blurry codecs score
    below 1; a GAN-trained decoder should bring it back towards 1.
    """
    from scipy.ndimage import gaussian_filter

    def energy(x):
        y = np.asarray(x, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
        return float(np.sum((y - gaussian_filter(y, sigma)) ** 2))

    return energy(reconstruction) / max(energy(original), 1e-12)


def all_metrics(a, b) -> dict:
    out = {"mse": mse(a, b), "psnr": psnr(a, b), "l1": l1(a, b), "ssim": ssim(a, b)}
    if min(np.shape(a)[:2]) >= MS_SSIM_MIN_SIDE:
        out["ms_ssim"] = ms_ssim(a, b)
    return out


def bd_rate(rate_a, quality_a, rate_b, quality_b) -> float:
    """Bjontegaard delta rate of curve B against reference A, in percent.

    Negative means B needs fewer bits for the same quality. Log-rate is
    interpolated as a function of quality with monotone piecewise-cubic
    (PCHIP) curves -- the robust variant used by current VCEG/JVET tools --
    and averaged over the overlapping quality interval. Returns NaN when the
    curves do not overlap or either has fewer than two distinct points.
    """
    from scipy.interpolate import PchipInterpolator
    from scipy.integrate import quad

    def curve(r, q):
        r, q = np.asarray(r, float), np.asarray(q, float)
        order = np.argsort(q)
        q, lr = q[order], np.log(r[order])
        keep = np.concatenate([[True], np.diff(q) > 0])
        if keep.sum() < 2:
            return None, np.inf, -np.inf
        return PchipInterpolator(q[keep], lr[keep]), q[keep].min(), q[keep].max()

    fa, a0, a1 = curve(rate_a, quality_a)
    fb, b0, b1 = curve(rate_b, quality_b)
    lo, hi = max(a0, b0), min(a1, b1)
    if hi <= lo:
        return float("nan")
    diff = (quad(fb, lo, hi, limit=200)[0] - quad(fa, lo, hi, limit=200)[0]) / (hi - lo)
    return float((np.exp(diff) - 1) * 100)


def quality_at_rate(rate, quality, target_rate) -> float:
    """Quality of a curve at ``target_rate`` (linear in log-rate); NaN outside it."""
    r, q = np.log(np.asarray(rate, float)), np.asarray(quality, float)
    order = np.argsort(r)
    t = np.log(target_rate)
    if not r[order][0] <= t <= r[order][-1]:
        return float("nan")
    return float(np.interp(t, r[order], q[order]))


def rate_at_quality(rate, quality, target_quality) -> float:
    """Rate a curve needs for ``target_quality`` (log-rate linear in quality); NaN outside it."""
    q, lr = np.asarray(quality, float), np.log(np.asarray(rate, float))
    order = np.argsort(q)
    if not q[order][0] <= target_quality <= q[order][-1]:
        return float("nan")
    return float(np.exp(np.interp(target_quality, q[order], lr[order])))


# --- the same SSIM and MS-SSIM as differentiable Keras ops, for training and refinement losses ---

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _ssim_maps(x, y, max_val):
    """(contrast-structure, luminance) maps of two NHWC batches over an 11-px Gaussian window (sigma 1.5), valid padding."""
    from keras import ops

    g = np.exp(-0.5 * ((np.arange(11) - 5.0) / 1.5) ** 2)
    kernel = np.tile(np.outer(g, g)[:, :, None, None] / g.sum() ** 2, (1, 1, x.shape[-1], 1)).astype("float32")
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2

    def blur(t):
        return ops.depthwise_conv(t, kernel, padding="valid")

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return (2 * sxy + c2) / (sxx + syy + c2), (2 * mx * my + c1) / (mx * mx + my * my + c1)


def differentiable_ssim(x, y, max_val=1.0):
    """SSIM of each image in a batch (NHWC, mean over channels and window positions)
    in Keras ops: :func:`ssim`'s definition (its Gaussian window, constants and
    valid-window mean), for losses."""
    from keras import ops

    cs, lum = _ssim_maps(x, y, max_val)
    return ops.mean(cs * lum, axis=(1, 2, 3))


def differentiable_ms_ssim(x, y, max_val=1.0, floor=1e-6):
    """MS-SSIM of each image in a batch (NHWC, mean over channels) in Keras ops, for
    the training loss. It equals ``tf.image.ssim_multiscale`` (11-px Gaussian window,
    sigma 1.5, five scales, the standard weights) on even-sized images wherever every
    scale's contrast-structure term is positive; TensorFlow clips those at 0, whose
    fractional power has an infinite gradient (NaN losses), so here they stop at ``floor``.
    """
    from keras import ops

    terms = []
    for i, w in enumerate(_MS_SSIM_WEIGHTS):
        cs, lum = _ssim_maps(x, y, max_val)
        if i == len(_MS_SSIM_WEIGHTS) - 1:  # the coarsest scale adds luminance: full SSIM
            cs = cs * lum
        else:
            x, y = ops.average_pool(x, 2, 2), ops.average_pool(y, 2, 2)
        terms.append(ops.power(ops.maximum(ops.mean(cs, axis=(1, 2)), floor), w))
    return ops.mean(ops.prod(ops.stack(terms, -1), axis=-1), axis=-1)
