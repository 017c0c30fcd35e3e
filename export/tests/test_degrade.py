"""export/degrade.py: shapes, determinism, range, and that every stage does something."""

from __future__ import annotations

import numpy as np
import pytest

from export import degrade as D


def _photo_like(h=64, w=48, seed=0) -> np.ndarray:
    """Smooth gradients plus edges plus texture, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0)], axis=2)
    base[h // 3: h // 2, :, :] = 0.9
    base += rng.normal(0, 0.02, base.shape).astype(np.float32)
    return np.clip(base, 0, 1).astype(np.float32)


def _changed(a, b, atol=1e-3) -> bool:
    return a.shape != b.shape or float(np.abs(a - b).max()) > atol


def test_shape_range_dtype():
    hr = _photo_like()
    for seed in range(6):
        lr = D.degrade(hr, np.random.default_rng(seed))
        assert lr.shape == (16, 12, 3)
        assert lr.dtype == np.float32
        assert lr.min() >= 0.0 and lr.max() <= 1.0
        assert np.isfinite(lr).all()


def test_deterministic_per_seed():
    hr = _photo_like()
    a = D.degrade(hr, np.random.default_rng(7))
    b = D.degrade(hr, np.random.default_rng(7))
    c = D.degrade(hr, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert _changed(a, c)


def test_input_not_modified():
    hr = _photo_like()
    copy = hr.copy()
    D.degrade(hr, np.random.default_rng(0))
    np.testing.assert_array_equal(hr, copy)


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        D.degrade(_photo_like(63, 48), np.random.default_rng(0))


def test_kernels():
    k = D.gaussian_kernel(7, 1.5, 1.5, 0.0)
    assert k.shape == (7, 7)
    assert abs(float(k.sum()) - 1.0) < 1e-5
    np.testing.assert_allclose(k, k.T, atol=1e-7)  # isotropic: symmetric
    aniso = D.gaussian_kernel(9, 3.0, 0.5, 0.3)
    assert not np.allclose(aniso, aniso.T)
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = D.random_kernel(rng, D.DEFAULT.first)
        assert k.shape[0] % 2 == 1 and abs(float(k.sum()) - 1.0) < 1e-4 and (k >= 0).all()


def test_each_stage_changes_the_image():
    hr = _photo_like()
    rng = np.random.default_rng(0)
    blurred = D.blur(hr, D.gaussian_kernel(9, 2.0, 2.0, 0.0))
    assert blurred.shape == hr.shape and _changed(hr, blurred)
    # blur lowers the high frequencies
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(hr, axis=1)).mean()
    resized = D.random_resize(hr, rng, (0.5, 0.5))
    assert resized.shape == (32, 24, 3)
    same_size = D.resize(hr, (48, 64), "bicubic")
    np.testing.assert_allclose(same_size, hr, atol=1e-6)
    noisy = D.gaussian_noise(hr, rng, 10.0, gray=False)
    assert _changed(hr, noisy) and 0.02 < float(np.std(noisy - hr)) < 0.06
    gray = D.gaussian_noise(hr, rng, 10.0, gray=True)
    diff = gray - hr
    inner = (hr > 0.1) & (hr < 0.9)  # away from clipping the noise is equal across channels
    mask = inner.all(axis=2)
    np.testing.assert_allclose(diff[mask][:, 0], diff[mask][:, 1], atol=1e-6)
    shot = D.poisson_noise(hr, rng, 2.0, gray=False)
    assert _changed(hr, shot)
    assert _changed(hr, D.poisson_noise(hr, rng, 2.0, gray=True))
    compressed = D.jpeg(hr, 30)
    assert compressed.shape == hr.shape and _changed(hr, compressed, atol=0.01)
    assert float(np.abs(D.jpeg(hr, 95) - hr).mean()) < float(np.abs(compressed - hr).mean())
    staged = D.degrade_stage(hr, np.random.default_rng(1), D.DEFAULT.first)
    assert staged.ndim == 3 and staged.shape[2] == 3


def test_degraded_is_worse_than_clean():
    """The pipeline's LR is further from the clean bicubic LR than zero, and both have the LR size."""
    hr = _photo_like(128, 128)
    clean = D.clean_downscale(hr)
    assert clean.shape == (32, 32, 3)
    lr = D.degrade(hr, np.random.default_rng(3))
    assert lr.shape == clean.shape
    assert float(np.abs(lr - clean).mean()) > 0.005
