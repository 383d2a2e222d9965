"""Metrics agree with scikit-image; BD-rate gives known answers on synthetic curves."""

import numpy as np
import pytest
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from catcomp.metrics import bd_rate, l1, mse, ms_ssim, psnr, quality_at_rate, ssim

from .conftest import photo


@pytest.fixture
def pair():
    a = photo(200, 180, seed=1)
    noise = np.random.default_rng(2).normal(0, 6, a.shape)
    return a, np.clip(a + noise, 0, 255).astype(np.uint8)


def test_mse_psnr_l1_match_definitions_and_skimage(pair):
    a, b = pair
    assert mse(a, b) == pytest.approx(mean_squared_error(a, b))
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255))
    assert l1(a, b) == pytest.approx(np.abs(a.astype(float) - b).mean())
    assert psnr(a, a) == float("inf")


def test_ssim_matches_skimage_gaussian_window(pair):
    a, b = pair
    ref = structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(a, b) == pytest.approx(ref)
    assert ssim(a, a) == pytest.approx(1.0)


def test_differentiable_ssim_is_the_metric(pair):
    from catcomp.metrics import differentiable_ssim

    a, b = pair
    worse = np.clip(a + np.random.default_rng(3).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    x = np.stack([a, a]).astype("float32") / 255.0
    got = np.asarray(differentiable_ssim(x, np.stack([b, worse]).astype("float32") / 255.0))
    assert got == pytest.approx([ssim(a, b), ssim(a, worse)], abs=1e-5)  # the losses' SSIM is the reported one


def test_ms_ssim_orders_quality(pair):
    a, b = pair
    worse = np.clip(a + np.random.default_rng(3).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert 1.0 > ms_ssim(a, b) > ms_ssim(a, worse) > 0


def test_bd_rate_known_answers():
    rate = np.array([0.25, 0.5, 1.0, 2.0])
    q = np.array([28.0, 31.0, 34.0, 37.0])
    assert bd_rate(rate, q, rate * 0.8, q) == pytest.approx(-20.0, abs=1e-6)
    assert bd_rate(rate, q, rate * 1.5, q) == pytest.approx(50.0, abs=1e-6)
    assert bd_rate(rate, q, rate, q) == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(bd_rate(rate, q, rate, q + 100))  # no overlap
    assert np.isnan(bd_rate(rate, q, rate[:1], q[:1]))  # one point is no curve


def test_quality_at_rate_interpolates_in_log_rate():
    assert quality_at_rate([0.25, 1.0], [30.0, 34.0], 0.5) == pytest.approx(32.0)
    assert np.isnan(quality_at_rate([0.25, 1.0], [30.0, 34.0], 4.0))
