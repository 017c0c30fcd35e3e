"""The PyTorch model definitions: parameter layout, time awareness, schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from export.model import alphas_cumprod, build_vae, get_config


def _time_keys(vae_cfg):
    keys = {f"encoder.time_embedding.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}
    n_blocks = len(vae_cfg["block_out_channels"])
    for i in range(n_blocks):
        for j in range(vae_cfg["layers_per_block"]):
            keys |= {f"encoder.down_blocks.{i}.resnets.{j}.time_emb_proj.{p}" for p in ("weight", "bias")}
    keys |= {f"encoder.mid_block.resnets.{j}.time_emb_proj.{p}" for j in (0, 1) for p in ("weight", "bias")}
    return keys


@pytest.mark.parametrize("config", ["tiny", "sd21"])
def test_vae_keys_are_stock_sd_vae_plus_time_modules(config):
    """The authors' time_vae = the stock SD VAE layout + time_embedding + time_emb_proj in the encoder."""
    from diffusers import AutoencoderKL

    cfg = get_config(config)
    with torch.device("meta"):
        ours = build_vae(cfg)
        stock_kwargs = {k: cfg.vae[k] for k in ("in_channels", "out_channels", "down_block_types", "up_block_types",
                                                 "block_out_channels", "layers_per_block", "act_fn",
                                                 "latent_channels", "norm_num_groups", "sample_size")}
        stock = AutoencoderKL(**stock_kwargs)
    ours_sd = ours.state_dict()
    stock_sd = stock.state_dict()
    missing = set(stock_sd) - set(ours_sd)
    assert not missing, f"keys of the stock SD VAE absent here: {sorted(missing)[:5]}"
    extra = set(ours_sd) - set(stock_sd)
    assert extra == _time_keys(cfg.vae)
    for key in stock_sd:
        assert tuple(ours_sd[key].shape) == tuple(stock_sd[key].shape), key
    # temb 256, sinusoid width max(128, C0), scale_shift doubles the projection.
    linear_1 = ours_sd["encoder.time_embedding.linear_1.weight"]
    assert tuple(linear_1.shape) == (256, max(128, cfg.vae["block_out_channels"][0]))
    assert tuple(ours_sd["encoder.time_embedding.linear_2.weight"].shape) == (256, 256)
    c0 = cfg.vae["block_out_channels"][0]
    assert tuple(ours_sd["encoder.down_blocks.0.resnets.0.time_emb_proj.weight"].shape) == (2 * c0, 256)


def test_sd21_sizes_match_published_counts():
    cfg = get_config("sd21")
    with torch.device("meta"):
        vae = build_vae(cfg)
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel(**cfg.unet)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(unet) / 1e6 - 866) < 1
    assert abs(count(vae.decoder) / 1e6 - 49.5) < 0.5
    time_params = sum(p.numel() for n, p in vae.encoder.named_parameters() if "time" in n)
    assert abs((count(vae.encoder) - time_params) / 1e6 - 34.2) < 0.5


def test_time_projection_is_flipped_sinusoid(tiny_models):
    enc = tiny_models.vae.encoder
    feats = enc.time_proj(torch.tensor([0, 7], dtype=torch.int64))
    half = feats.shape[1] // 2
    assert feats.shape[1] == 128
    # flip_sin_to_cos: cos first. At t=0: cos = 1, sin = 0.
    assert torch.allclose(feats[0, :half], torch.ones(half))
    assert torch.allclose(feats[0, half:], torch.zeros(half))
    # downscale_freq_shift = 0: frequency k is exp(-ln(10000) * k / half)
    k = 5
    freq = math.exp(-math.log(10000.0) * k / half)
    assert feats[1, k].item() == pytest.approx(math.cos(7 * freq), abs=1e-5)
    assert feats[1, half + k].item() == pytest.approx(math.sin(7 * freq), abs=1e-5)


def test_timestep_changes_encoder_output(tiny_models):
    image = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    graph = tiny_models.encoder_graph()
    with torch.no_grad():
        outs = [graph(image, torch.tensor([t]))[0] for t in (100, 500, 900)]
    assert (outs[0] - outs[1]).abs().max() > 1e-3
    assert (outs[1] - outs[2]).abs().max() > 1e-3
    with torch.no_grad():
        again = graph(image, torch.tensor([500]))[0]
    assert torch.equal(again, outs[1])


def test_logvar_is_clamped(tiny_models):
    vae = tiny_models.vae
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        saved = vae.quant_conv.bias.clone()
        vae.quant_conv.bias[4:] = 100.0
        try:
            _, logvar = vae.encode_moments(image, torch.tensor([500]))
        finally:
            vae.quant_conv.bias.copy_(saved)
    assert float(logvar.max()) == 20.0


def test_schedule_matches_diffusers_ddpm():
    from diffusers import DDPMScheduler

    ours = alphas_cumprod()
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                        beta_schedule="scaled_linear").alphas_cumprod
    assert ours.dtype == torch.float32 and ours.shape == (1000,)
    assert torch.equal(ours, ref.to(torch.float32))
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    assert np.allclose(ours.numpy(), np.cumprod(1 - betas), rtol=1e-5)
    assert 0.004 < float(ours[999]) < 0.005
