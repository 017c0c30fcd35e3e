"""The tiled VAE graphs (shared GroupNorm statistics) against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from export.manifest import read_manifest
from export.onnx_export import max_abs_diff, ort_session
from export.tiled_vae import fixed_stats, no_stats, tiled_graphs

T = torch.tensor([321], dtype=torch.int64)


@pytest.fixture(scope="module")
def tiny_dir(repo):
    return repo / "models" / "tiny"


@pytest.fixture(scope="module")
def graphs(tiny_models):
    return tiled_graphs(tiny_models)


def _inputs(seed=0, latent_hw=(11, 14)):
    gen = torch.Generator().manual_seed(seed)
    h, w = latent_hw
    image = torch.rand(1, 3, 8 * h, 8 * w, generator=gen) * 2 - 1
    latent = torch.randn(1, 4, h, w, generator=gen)
    return image, latent


def _group_norm_stats(module: nn.Module, run):
    """Per GroupNorm (named_modules order): float64 mean and biased variance per group of its input."""
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    seen = {}

    def hook(norm, args):
        x = args[0].double()
        grouped = x.reshape(x.shape[0], norm.num_groups, -1)
        seen[id(norm)] = (grouped.mean(dim=2)[0], grouped.var(dim=2, unbiased=False)[0])

    handles = [n.register_forward_pre_hook(hook) for n in norms]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return torch.stack([seen[id(n)][0] for n in norms]), torch.stack([seen[id(n)][1] for n in norms])


def _normalize_with(module: nn.Module, mean: torch.Tensor, var: torch.Tensor, run):
    """Run with every GroupNorm using row k of (mean, var): an independent reference of the fixed mode."""
    norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]

    def make_hook(k):
        def hook(norm, args, output):
            x = args[0].double()
            b, c = x.shape[:2]
            grouped = x.reshape(b, norm.num_groups, -1)
            y = (grouped - mean[k].double()[None, :, None]) / torch.sqrt(var[k].double()[None, :, None] + norm.eps)
            shape = (1, c) + (1,) * (x.dim() - 2)
            return (y.reshape(x.shape) * norm.weight.double().reshape(shape)
                    + norm.bias.double().reshape(shape)).to(output.dtype)
        return hook

    handles = [n.register_forward_hook(make_hook(k)) for k, n in enumerate(norms)]
    try:
        return run()
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def test_own_statistics_give_the_main_graphs_math(tiny_models, graphs):
    image, latent = _inputs()
    enc, dec = graphs["vae_encoder_tiled"], graphs["vae_decoder_tiled"]
    assert (enc.layers, dec.layers, enc.groups, dec.groups) == (22, 30, 8, 8)
    got = enc(image, T, *no_stats(enc))
    want = tiny_models.encoder_graph()(image, T)
    assert max_abs_diff(got[0], want[0]) < 1e-5 and max_abs_diff(got[1], want[1]) < 1e-5
    mean, var = _group_norm_stats(tiny_models.vae.encoder, lambda: tiny_models.encoder_graph()(image, T))
    assert max_abs_diff(got[2], mean) < 1e-5
    assert float(((got[3] - var).abs() / var).max()) < 1e-4

    got = dec(latent, *no_stats(dec))
    want = tiny_models.decoder_graph()(latent)
    assert max_abs_diff(got[0], want) < 1e-5
    mean, var = _group_norm_stats(tiny_models.vae.decoder, lambda: tiny_models.decoder_graph()(latent))
    assert max_abs_diff(got[1], mean) < 1e-5
    assert float(((got[2] - var).abs() / var).max()) < 1e-4


@torch.no_grad()
def test_fixed_statistics_normalize_every_layer_alike(tiny_models, graphs):
    image, latent = _inputs(seed=1)
    other_image, other_latent = _inputs(seed=2)
    enc, dec = graphs["vae_encoder_tiled"], graphs["vae_decoder_tiled"]
    # statistics of another input, applied to this one
    *_, mean, var = enc(other_image, T, *no_stats(enc))
    got = enc(image, T, *fixed_stats(mean, var))
    want = _normalize_with(tiny_models.vae.encoder, mean, var, lambda: tiny_models.encoder_graph()(image, T))
    assert max_abs_diff(got[0], want[0]) < 1e-4 and max_abs_diff(got[1], want[1]) < 1e-4
    assert max_abs_diff(got[0], tiny_models.encoder_graph()(image, T)[0]) > 1e-3

    _, mean, var = dec(other_latent, *no_stats(dec))
    got = dec(latent, *fixed_stats(mean, var))
    want = _normalize_with(tiny_models.vae.decoder, mean, var, lambda: tiny_models.decoder_graph()(latent))
    assert max_abs_diff(got[0], want) < 1e-4
    # a tile cut from a larger input, normalized with the whole input's statistics, is that input's crop
    # up to the border effects of its convolutions: its middle agrees better than with its own statistics
    _, mean, var = dec(latent, *no_stats(dec))
    whole = dec(latent, *no_stats(dec))[0]
    tile = latent[:, :, :8, :8]
    shared = dec(tile, *fixed_stats(mean, var))[0][:, :, 16:48, 16:48]
    own = dec(tile, *no_stats(dec))[0][:, :, 16:48, 16:48]
    target = whole[:, :, 16:48, 16:48]
    assert max_abs_diff(shared, target) < max_abs_diff(own, target)


@torch.no_grad()
@pytest.mark.parametrize("component", ["vae_encoder_tiled", "vae_decoder_tiled"])
def test_onnx_tiled_graphs_match_pytorch(fresh_tiny_bundle, graphs, component):
    image, latent = _inputs(seed=3, latent_hw=(9, 13))
    graph = graphs[component]
    feeds = {"image": image, "timestep": T} if component == "vae_encoder_tiled" else {"latent": latent}
    entry = read_manifest(fresh_tiny_bundle)["components"][component]
    sess = ort_session(fresh_tiny_bundle / entry["file"])
    output_names = [o["name"] for o in entry["outputs"]]
    assert [o.name for o in sess.get_outputs()] == output_names
    own = no_stats(graph)
    want_own = graph(*feeds.values(), *own)
    stats_in = dict(zip(["group_norm_mean", "group_norm_var", "group_norm_fixed"], own, strict=True))
    got_own = sess.run(None, {k: v.numpy() for k, v in {**feeds, **stats_in}.items()})
    for g, w in zip(got_own, want_own, strict=True):
        assert max_abs_diff(g, w) < 1e-4
    mean, var = want_own[-2:]
    fixed = fixed_stats(mean * 0.9 + 0.05, var * 1.5)
    want_fixed = graph(*feeds.values(), *fixed)
    stats_in = dict(zip(["group_norm_mean", "group_norm_var", "group_norm_fixed"], fixed, strict=True))
    got_fixed = sess.run(None, {k: v.numpy() for k, v in {**feeds, **stats_in}.items()})
    for g, w in zip(got_fixed, want_fixed, strict=True):
        assert max_abs_diff(g, w) < 1e-4
    assert max_abs_diff(got_fixed[0], got_own[0]) > 1e-3


def test_manifest_lists_the_tiled_graphs(tiny_dir):
    m = read_manifest(tiny_dir)
    expect = {"vae_encoder_tiled": ("vae_encoder/tiled.onnx", 22), "vae_decoder_tiled": ("vae_decoder/tiled.onnx", 30)}
    for component, (file, layers) in expect.items():
        entry = m["components"][component]
        assert entry["file"] == file and entry["external_data"] == []
        assert entry["group_norm"] == {"layers": layers, "groups": 8}
        inputs = {p["name"]: p for p in entry["inputs"]}
        outputs = {p["name"]: p for p in entry["outputs"]}
        for name in ("group_norm_mean", "group_norm_var"):
            assert inputs[name]["shape"] == [layers, 8] and inputs[name]["dtype"] == "float32"
            assert outputs[name + "_out"]["shape"] == [layers, 8] and outputs[name + "_out"]["dtype"] == "float32"
        assert inputs["group_norm_fixed"]["shape"] == [1]
    assert m["components"]["vae_decoder_tiled"]["latent_input"] == "scaled"
    main = m["components"]
    assert [p["name"] for p in main["vae_encoder_tiled"]["inputs"]][:2] == ["image", "timestep"]
    assert [p["name"] for p in main["vae_encoder_tiled"]["outputs"]][:2] == ["latent_mean", "latent_logvar"]


def test_fp16_tiled_graphs_keep_float32_statistics(fresh_tiny_fp16_bundle):
    m = read_manifest(fresh_tiny_fp16_bundle)
    entry = m["components"]["vae_decoder_tiled"]
    assert {p["name"]: p["dtype"] for p in entry["inputs"]} == {
        "latent": "float16", "group_norm_mean": "float32", "group_norm_var": "float32", "group_norm_fixed": "float32"}
    sess = ort_session(fresh_tiny_fp16_bundle / entry["file"])
    latent = np.random.default_rng(0).standard_normal((1, 4, 6, 7)).astype(np.float16)
    k, g = entry["group_norm"]["layers"], entry["group_norm"]["groups"]
    image, mean, var = sess.run(None, {"latent": latent, "group_norm_mean": np.zeros((k, g), np.float32),
                                       "group_norm_var": np.ones((k, g), np.float32),
                                       "group_norm_fixed": np.zeros(1, np.float32)})
    assert image.dtype == np.float16 and mean.dtype == np.float32 and var.dtype == np.float32
    assert np.isfinite(image).all() and (var >= 0).all()
