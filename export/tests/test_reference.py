"""Pre-processing and color fixes of the reference pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from export.reference import adain_fix, color_fix, super_resolve, upscaled_input, wavelet_fix


def _photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size, process_size, expected", [
    ((16, 16), 0, (64, 64)),
    ((36, 20), 0, (144, 80)),
    ((37, 21), 0, (144, 80)),      # 148x84 -> multiples of 8
    ((20, 18), 128, (136, 128)),   # min-size rule: 35x32 -> 140x128 -> 136x128
    ((24, 18), 128, (168, 128)),   # 42x32 -> 168x128
    ((200, 150), 512, (800, 600)),  # rule not triggered
    ((100, 150), 512, (512, 768)),  # short side 100 < 128: 128x192
])
def test_upscaled_size(size, process_size, expected):
    assert upscaled_input(_photo(*size), 4, process_size).size == expected


def test_min_size_rule_steps_match_pillow():
    image = _photo(20, 18, 1)
    scale = 32 / 18
    step = image.resize((int(scale * 20), int(scale * 18)), Image.BICUBIC)
    step = step.resize((step.size[0] * 4, step.size[1] * 4), Image.BICUBIC)
    step = step.resize((step.size[0] - step.size[0] % 8, step.size[1] - step.size[1] % 8), Image.LANCZOS)
    assert np.array_equal(np.asarray(step), np.asarray(upscaled_input(image, 4, 128)))


def test_adain_matches_source_statistics():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 16, 24, generator=gen) * 0.5 + 0.2
    source = torch.rand(1, 3, 16, 24, generator=gen) * 0.3 + 0.4
    out = adain_fix(target, source)
    assert torch.allclose(out.mean(dim=(2, 3)), source.mean(dim=(2, 3)), atol=1e-5)
    # std uses the unbiased variance + 1e-5
    t_std = (target.reshape(1, 3, -1).var(dim=2, unbiased=True) + 1e-5).sqrt()
    s_std = (source.reshape(1, 3, -1).var(dim=2, unbiased=True) + 1e-5).sqrt()
    want = (target - target.mean(dim=(2, 3), keepdim=True)) / t_std[..., None, None] * s_std[..., None, None] \
        + source.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(out, want.clamp(0, 1), atol=1e-6)


def test_wavelet_keeps_source_low_band():
    gen = torch.Generator().manual_seed(1)
    source = torch.full((1, 3, 40, 48), 0.3)
    target = torch.full((1, 3, 40, 48), 0.7) + 0.01 * torch.randn(1, 3, 40, 48, generator=gen)
    out = wavelet_fix(target, source)
    # a constant target's high band is zero; the result is the source's (constant) low band
    assert torch.allclose(wavelet_fix(torch.full_like(source, 0.9), source), source, atol=1e-6)
    assert abs(float(out.mean()) - 0.3) < 0.01
    assert out.min() >= 0 and out.max() <= 1


def test_color_fix_none_only_clamps():
    x = torch.tensor([[[[-0.5, 0.5], [1.5, 0.25]]]]).repeat(1, 3, 1, 1)
    assert torch.equal(color_fix("none", x, x), x.clamp(0, 1))
    with pytest.raises(ValueError):
        color_fix("bogus", x, x)


def test_noise_sampling_changes_result(tiny_models):
    upscaled = _photo(8, 8, 2).resize((32, 32))
    mean_result = super_resolve(tiny_models, upscaled, 500, "none")
    zero_noise = np.zeros((1, 4, 4, 4), dtype=np.float32)
    assert np.array_equal(super_resolve(tiny_models, upscaled, 500, "none", noise=zero_noise), mean_result)
    noise = np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32)
    assert np.abs(super_resolve(tiny_models, upscaled, 500, "none", noise=noise) - mean_result).max() > 1e-4


def test_timestep_matters_end_to_end(tiny_models):
    upscaled = _photo(8, 8, 3).resize((32, 32))
    a = super_resolve(tiny_models, upscaled, 100, "none")
    b = super_resolve(tiny_models, upscaled, 900, "none")
    assert np.abs(a - b).max() > 1e-3
