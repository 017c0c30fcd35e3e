"""export/train.py: a few steps on random tensors, the checkpoint round trip, the training math."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from export import train as T
from export.model import alphas_cumprod, get_config


def test_nano_config_has_8_latent_channels():
    cfg = get_config("nano")
    assert cfg.latent_channels == 8
    assert cfg.unet["in_channels"] == cfg.unet["out_channels"] == 8
    # the committed configs are untouched
    assert get_config("tiny").latent_channels == 4 and get_config("tiny").unet["in_channels"] == 4
    assert get_config("sd21").latent_channels == 4


def test_one_step_is_the_reference_path(tiny_models):
    """The training forward equals export.reference.super_resolve (before the color fix)."""
    from export.reference import super_resolve

    rng = np.random.default_rng(0)
    up = Image.fromarray((rng.random((32, 40, 3)) * 255).astype(np.uint8))
    _, inter = super_resolve(tiny_models, up, 321, "none", return_intermediates=True)
    x = torch.from_numpy(np.asarray(up, dtype=np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        y, _ = T.one_step(tiny_models.vae, tiny_models.unet, tiny_models.alphas_cumprod, x,
                          torch.tensor([321]), tiny_models.prompt_embeds)
    torch.testing.assert_close(y.clamp(-1, 1) * 0.5 + 0.5, inter["y"], atol=1e-5, rtol=1e-5)


def test_three_steps_and_checkpoint_round_trip(tmp_path):
    torch.set_num_threads(1)
    state = T.new_state("tiny", seed=3, lr=1e-3)
    data = T.RandomCrops(16)
    acp = alphas_cumprod()
    for _ in range(3):
        hr, up = T.make_batch(data, state.rng, 2)
        assert hr.shape == up.shape == (2, 3, 16, 16)
        parts = T.train_step(state, hr, up, acp, (1, 999), 1e-3, 0.5, 0.99)
        assert all(math.isfinite(v) for v in parts.values())
    assert state.step == 3
    path = tmp_path / "last.pt"
    T.save_checkpoint(state, path, {"test": True})
    back = T.load_checkpoint(path)
    assert back.step == 3 and back.config == "tiny"
    for a, b in zip(state.vae.state_dict().values(), back.vae.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(state.ema_unet.state_dict().values(), back.ema_unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # the data stream continues identically after a resume
    assert np.array_equal(state.rng.integers(0, 1 << 30, 4), back.rng.integers(0, 1 << 30, 4))
    models = T.models_from_checkpoint(path)
    assert models.latent_channels == 4 and models.source["kind"] == "checkpoint"


def test_cli_random_data(tmp_path):
    out = tmp_path / "run"
    assert T.main(["--out", str(out), "--config", "tiny", "--random-data", "--crop", "16", "--batch", "1",
                   "--steps", "2", "--no-export", "--log-every", "1"]) == 0
    assert T.main(["--out", str(out), "--config", "tiny", "--random-data", "--crop", "16", "--batch", "1",
                   "--steps", "3", "--no-export", "--log-every", "1"]) == 0
    lines = (out / T.LOG_NAME).read_text().splitlines()
    assert len(lines) == 3  # 2 steps, then resumed for the third
    with pytest.raises(SystemExit):
        T.main(["--out", str(out), "--config", "tiny", "--crop", "12", "--random-data"])
