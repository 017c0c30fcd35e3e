"""export/train.py: a few steps on random tensors, the checkpoint round trip, the training math."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from export import train as T
from export.model import TimeAwareAutoencoderKL, alphas_cumprod, get_config


def test_nano_config_has_16_latent_channels_and_our_two_vae_additions():
    cfg = get_config("nano")
    assert cfg.latent_channels == 16
    assert cfg.unet["in_channels"] == cfg.unet["out_channels"] == 16
    assert cfg.vae["latent_time_scale"] and cfg.vae["patch_shortcuts"]
    # the committed configs are untouched (the authors' time_vae has neither addition)
    for name in ("tiny", "sd21"):
        assert get_config(name).latent_channels == 4 and get_config(name).unet["in_channels"] == 4
        assert "latent_time_scale" not in get_config(name).vae and "patch_shortcuts" not in get_config(name).vae


def _tiny_vae(**extras) -> TimeAwareAutoencoderKL:
    torch.manual_seed(0)
    return TimeAwareAutoencoderKL(**{**get_config("tiny").vae, **extras}).eval()


def test_latent_time_scale_multiplies_the_mean_by_sqrt_alphas_cumprod():
    plain, scaled = _tiny_vae(), _tiny_vae(latent_time_scale=True)
    scaled.load_state_dict(plain.state_dict())  # no new parameters
    image = torch.rand(1, 3, 32, 48) * 2 - 1
    acp = alphas_cumprod()
    with torch.no_grad():
        for t in (1, 500, 999):
            mean, logvar = plain.encode_moments(image, torch.tensor([t]))
            mean_t, logvar_t = scaled.encode_moments(image, torch.tensor([t]))
            torch.testing.assert_close(mean_t, mean * acp[t].sqrt(), rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(logvar_t, logvar)


def test_patch_shortcuts_encode_blocks_and_decode_from_neighbouring_cells():
    """encode: tiles aligned to latent cells see exactly what the whole image does. decode (3x3, nano's):
    a tile's output equals the whole image's one latent cell away from the tile's edges."""
    vae = _tiny_vae(patch_shortcuts=True)
    image = torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        whole = vae.shortcuts.encode(image)
        part = vae.shortcuts.encode(image[..., 16:40, 8:56])
        torch.testing.assert_close(part, whole[..., 2:5, 1:7])
        latent = torch.randn(1, 4, 6, 8)
        torch.testing.assert_close(vae.shortcuts.decode(latent[..., 1:4, 2:6]),
                                   vae.shortcuts.decode(latent)[..., 8:32, 16:48])
        wide = _tiny_vae(patch_shortcuts=True, shortcut_decode_kernel=3)
        tile = wide.shortcuts.decode(latent[..., 1:5, 2:7])  # cells 1..4 x 2..6
        full = wide.shortcuts.decode(latent)
        torch.testing.assert_close(tile[..., 8:24, 8:32], full[..., 16:32, 24:48])  # interior cells 2..3 x 3..5
        assert not torch.allclose(tile[..., :8, :], full[..., 8:16, 16:56])  # the edge row sees zero padding
    assert get_config("nano").vae["shortcut_decode_kernel"] == 3


def test_decode_head_adds_to_the_linear_map_and_reaches_depth_plus_one_cells():
    """nano's decode head: latent-resolution convolutions summed with the 3x3 linear map before the pixel
    shuffle. A tile's output equals the whole image's (depth + 1) latent cells away from its edges."""
    plain = _tiny_vae(patch_shortcuts=True, shortcut_decode_kernel=3)
    headed = _tiny_vae(patch_shortcuts=True, shortcut_decode_kernel=3, shortcut_decode_head=(8, 2))
    missing, unexpected = headed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".decode_head." in key for key in missing)
    torch.manual_seed(1)
    latent = torch.randn(1, 4, 10, 12)
    with torch.no_grad():
        linear = plain.shortcuts.decode(latent)
        whole = headed.shortcuts.decode(latent)
        assert whole.shape == linear.shape == (1, 3, 80, 96)
        assert not torch.allclose(whole, linear, atol=1e-3)  # a random head adds something
        for p in headed.shortcuts.decode_head[-1].parameters():
            p.zero_()
        torch.testing.assert_close(headed.shortcuts.decode(latent), linear)  # a zero last layer adds nothing
        for p in headed.shortcuts.decode_head[-1].parameters():
            p.normal_(0, 0.1)
        whole = headed.shortcuts.decode(latent)
        tile = headed.shortcuts.decode(latent[..., 1:9, 2:11])  # cells 1..8 x 2..10
        reach = 3  # 2 hidden layers + the last 3x3 convolution
        torch.testing.assert_close(tile[..., reach * 8:-reach * 8, reach * 8:-reach * 8],
                                   whole[..., (1 + reach) * 8:(9 - reach) * 8, (2 + reach) * 8:(11 - reach) * 8])
        assert not torch.allclose(tile[..., (reach - 1) * 8:reach * 8, :],
                                  whole[..., reach * 8:(1 + reach) * 8, 16:88])  # one cell nearer: padding shows
    with pytest.raises(ValueError, match="shortcut_decode_head"):
        _tiny_vae(patch_shortcuts=True, shortcut_decode_head=(0, 2))
    assert get_config("nano").vae["shortcut_decode_head"] == [64, 4]
    assert "shortcut_decode_head" not in get_config("nano-v1").vae


def test_pretrain_head_moves_only_the_head_and_resets_the_ema():
    torch.set_num_threads(1)
    state = T.new_state("nano", seed=2, lr=1e-3)
    data = T.RandomCrops(32)
    T.init_from_data(state, data, crops=8)
    shortcuts = state.vae.shortcuts
    assert all(float(p.detach().abs().max()) == 0 for p in shortcuts.decode_head[-1].parameters())
    others = {k: v.clone() for k, v in state.vae.state_dict().items() if ".decode_head." not in k}
    result = T.pretrain_head(state, data, steps=3, batch=2)
    assert math.isfinite(result["loss"]) and result["seconds"] > 0
    assert float(shortcuts.decode_head[-1].weight.detach().abs().max()) > 0
    for key, value in state.vae.state_dict().items():
        if key in others:
            assert torch.equal(value, others[key]), key
    assert all(p.requires_grad for p in shortcuts.parameters())
    for a, b in zip(state.ema_vae.state_dict().values(), state.vae.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert T.pretrain_head(T.new_state("tiny", seed=0, lr=1e-3), data, steps=3) == {}  # no head: nothing


def test_a_resumed_nano_run_keeps_the_record_of_its_head_pretraining(tmp_path):
    out = tmp_path / "run"
    common = ["--out", str(out), "--config", "nano", "--random-data", "--crop", "32", "--batch", "1",
              "--no-export", "--threads", "1"]
    assert T.main(common + ["--head-steps", "2", "--steps", "1"]) == 0
    first = torch.load(out / T.CHECKPOINT_NAME, map_location="cpu", weights_only=False)["recipe"]
    assert first["head_steps"] == 2 and first["head_pretraining"]["loss"] > 0
    assert T.main(common + ["--steps", "2"]) == 0  # resumed: no second pretraining, the record stays
    second = torch.load(out / T.CHECKPOINT_NAME, map_location="cpu", weights_only=False)["recipe"]
    assert second["head_steps"] == 2 and second["head_pretraining"] == first["head_pretraining"]


def test_checkpoints_from_before_the_decode_head_load_as_nano_v1():
    v1 = {"config": "nano", "vae": {"shortcuts.decode_proj.weight": None}}
    v2 = {"config": "nano", "vae": {"shortcuts.decode_head.0.weight": None}}
    assert T.checkpoint_config(v1) == "nano-v1"
    assert T.checkpoint_config(v2) == "nano"
    assert T.checkpoint_config({"config": "tiny", "vae": {}}) == "tiny"


def test_init_from_data_starts_at_the_linear_block_prediction():
    torch.set_num_threads(1)
    state = T.new_state("nano", seed=1, lr=1e-3)
    fit = T.init_from_data(state, T.RandomCrops(32), crops=8, deep_scale=0.0)
    assert math.isfinite(fit["linear_psnr"]) and math.isfinite(fit["bicubic_psnr"])
    _, up = T.make_batch(T.RandomCrops(32), np.random.default_rng(5), 2)
    shortcuts = state.vae.shortcuts
    with torch.no_grad():
        y, _ = T.one_step(state.vae, state.unet, alphas_cumprod(), up, torch.tensor([10, 900]), state.embeds)
        linear = shortcuts.decode(shortcuts.encode(up))
    # deep paths and the UNet's output at zero: the whole pipeline is the linear map, at every t
    torch.testing.assert_close(y, linear, rtol=1e-4, atol=1e-4)
    for ema, model in ((state.ema_vae, state.vae), (state.ema_unet, state.unet)):
        for a, b in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b)


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


def test_init_from_data_keeps_the_deep_paths_small_but_alive():
    torch.set_num_threads(1)
    state = T.new_state("nano", seed=1, lr=1e-3)
    before = state.vae.decoder.conv_out.weight.clone()
    T.init_from_data(state, T.RandomCrops(32), crops=8)
    torch.testing.assert_close(state.vae.decoder.conv_out.weight, before * 0.1)
    assert float(state.unet.conv_out.weight.detach().abs().mean()) > 0


def test_a_resume_with_other_settings_records_the_earlier_phase(tmp_path):
    ckpt = tmp_path / "last.pt"
    first = {k: None for k in T.PHASE_KEYS} | {"clean_prob": 0.8, "steps": 2800, "lr": 6e-4}
    torch.save({"recipe": first}, ckpt)
    assert T.earlier_phases(ckpt, dict(first), 2800) == [], "same settings: no phase"
    second = dict(first) | {"clean_prob": 1.0, "steps": 3330}
    phases = T.earlier_phases(ckpt, second, 2800)
    assert phases == [{**{k: first[k] for k in T.PHASE_KEYS}, "until_step": 2800}]
    # a third session keeps the first phase and adds the second
    torch.save({"recipe": {**second, "phases": phases}}, ckpt)
    third = dict(second) | {"lr": 1e-4}
    later = T.earlier_phases(ckpt, third, 3311)
    assert [p["until_step"] for p in later] == [2800, 3311]
    assert later[1]["clean_prob"] == 1.0
