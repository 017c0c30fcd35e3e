"""The tiled encoder cut at its GroupNorms (export/encoder_segments.py) against the uncut graph and PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")


def _sessions(bundle, entry):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    return [ort.InferenceSession(str(bundle / s["file"]), options, providers=["CPUExecutionProvider"])
            for s in entry["segments"]]


def _multi_pass(session, crops, weights, layers, groups, t):
    """The authors' pooled statistics by passes of the uncut graph (pass p makes layers 0..p theirs)."""
    mean = np.zeros((layers, groups), np.float32)
    var = np.ones((layers, groups), np.float32)
    fixed = np.zeros(1, np.float32)
    for _ in range(layers + 1):
        runs = [session.run(None, {"image": c, "timestep": t, "group_norm_mean": mean, "group_norm_var": var,
                                   "group_norm_fixed": fixed}) for c in crops]
        mean = sum(w * r[2] for w, r in zip(weights, runs, strict=True)).astype(np.float32)
        var = sum(w * r[3] for w, r in zip(weights, runs, strict=True)).astype(np.float32)
        fixed = np.ones(1, np.float32)
    return [(r[0], r[1]) for r in runs]


def test_the_exported_bundle_has_its_segments(fresh_tiny_bundle):
    from export.manifest import read_manifest, verify_bundle

    manifest = read_manifest(fresh_tiny_bundle)
    entry = manifest["vae_encoder_segments"]
    layers = manifest["components"]["vae_encoder_tiled"]["group_norm"]["layers"]
    assert entry["group_norm"] == manifest["components"]["vae_encoder_tiled"]["group_norm"]
    assert len(entry["segments"]) == layers + 1
    # every statistics row exactly once, the last segment gives the moments
    assert sorted(s["layer"] for s in entry["segments"][:-1]) == list(range(layers))
    assert "layer" not in entry["segments"][-1]
    assert entry["segments"][-1]["outputs"][-2:] == ["latent_mean", "latent_logvar"]
    # a carried state is made by an earlier segment than every one that takes it
    made = {}
    for number, segment in enumerate(entry["segments"]):
        for name in segment["inputs"]:
            if name.startswith("state_"):
                assert made[name] < number, name
        made.update({name: number for name in segment["outputs"] if name.startswith("state_")})
    assert verify_bundle(fresh_tiny_bundle) == []


def test_segments_over_tiles_equal_passes_of_the_uncut_graph(fresh_tiny_bundle):
    """Two overlapping crops of one image, statistics pooled by pixels: the segments (one run each) give
    what the uncut graph gives after layers + 1 passes, to float32 round-off."""
    from export.encoder_segments import run_segments
    from export.manifest import read_manifest

    manifest = read_manifest(fresh_tiny_bundle)
    entry = manifest["vae_encoder_segments"]
    layers, groups = entry["group_norm"]["layers"], entry["group_norm"]["groups"]
    rng = np.random.default_rng(5)
    image = rng.uniform(-1, 1, (1, 3, 96, 136)).astype(np.float32)
    tiles = [(0, 80, 0, 96), (48, 136, 0, 96)]  # (x0, x1, y0, y1), unequal widths
    t = np.array([300], np.int64)
    segmented = run_segments(_sessions(fresh_tiny_bundle, entry), [s.get("layer") for s in entry["segments"]],
                             image, t, tiles)
    crops = [np.ascontiguousarray(image[:, :, y0:y1, x0:x1]) for x0, x1, y0, y1 in tiles]
    pixels = np.array([c.shape[2] * c.shape[3] for c in crops], np.float32)
    weights = (pixels / pixels.max()) / (pixels / pixels.max()).sum()
    uncut = ort.InferenceSession(str(fresh_tiny_bundle / "vae_encoder/tiled.onnx"), providers=["CPUExecutionProvider"])
    passes = _multi_pass(uncut, crops, weights, layers, groups, t)
    # the same operators on the same inputs (equal here); ONNX Runtime may fuse a cut graph differently
    # on another CPU, which moves float32 results by ~1e-6 relative: 1e-4 holds that and fails on a wrong
    # statistics row (off by far more than the 1e-3 the tiles' own statistics give, checked below)
    for got, want in zip(segmented, passes, strict=True):
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    # and the pooling matters: the tiles' own statistics give something else
    own = [uncut.run(None, {"image": c, "timestep": t, "group_norm_mean": np.zeros((layers, groups), np.float32),
                            "group_norm_var": np.ones((layers, groups), np.float32),
                            "group_norm_fixed": np.zeros(1, np.float32)})[0] for c in crops]
    assert max(float(np.abs(o - s[0]).max()) for o, s in zip(own, segmented, strict=True)) > 1e-3


def test_segments_match_pytorch_on_the_authors_tiles(tiny_models, fresh_tiny_bundle):
    """The authors' encoder tiles on a 1120x768 image: segments vs export/reference.py (PyTorch)."""
    from export.encoder_segments import run_segments
    from export.manifest import read_manifest
    from export.reference import authors_encoder_tiles, authors_tiled_encode

    entry = read_manifest(fresh_tiny_bundle)["vae_encoder_segments"]
    rng = np.random.default_rng(7)
    # smooth content (the tiny model's statistics are those of images, not of noise)
    small = rng.uniform(-1, 1, (1, 3, 18, 17)).astype(np.float32)
    image = torch.nn.functional.interpolate(torch.from_numpy(small), size=(768, 1120), mode="bilinear",
                                            align_corners=False)
    tiles = authors_encoder_tiles(768, 1120)
    assert len(tiles) > 1
    t = torch.tensor([700], dtype=torch.int64)
    got = run_segments(_sessions(fresh_tiny_bundle, entry), [s.get("layer") for s in entry["segments"]],
                       image.numpy(), t.numpy(), [tile[0] for tile in tiles])
    with torch.no_grad():
        want_mean, _ = authors_tiled_encode(tiny_models, image, t)
    for ((ix0, _, iy0, _), (ox0, ox1, oy0, oy1)), (mean, _) in zip(tiles, got, strict=True):
        kept = mean[:, :, oy0 - iy0 // 8:oy1 - iy0 // 8, ox0 - ix0 // 8:ox1 - ix0 // 8]
        np.testing.assert_allclose(kept, want_mean[:, :, oy0:oy1, ox0:ox1].numpy(), rtol=0, atol=2e-3)


def test_adding_segments_to_a_bundle_and_refusing_one_without_the_tiled_encoder(tmp_path, fresh_tiny_bundle):
    import shutil

    from export.encoder_segments import add_to_bundle
    from export.manifest import read_manifest, verify_bundle

    bundle = tmp_path / "b"
    shutil.copytree(fresh_tiny_bundle, bundle)
    manifest = read_manifest(bundle)
    before = manifest.pop("vae_encoder_segments")
    shutil.rmtree(bundle / "vae_encoder/segments")
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    add_to_bundle(bundle, quiet=True)
    after = read_manifest(bundle)["vae_encoder_segments"]
    assert [s["sha256"] for s in after["segments"]] == [s["sha256"] for s in before["segments"]]
    assert verify_bundle(bundle) == []

    manifest = read_manifest(bundle)
    del manifest["components"]["vae_encoder_tiled"]
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ValueError, match="no vae_encoder_tiled"):
        add_to_bundle(bundle, quiet=True)


def test_fp16_segments_carry_float16_states(fresh_tiny_fp16_bundle):
    from export.manifest import read_manifest

    entry = read_manifest(fresh_tiny_fp16_bundle)["vae_encoder_segments"]
    sessions = _sessions(fresh_tiny_fp16_bundle, entry)
    states = [p for s in sessions for p in s.get_outputs() if p.name.startswith("state_")]
    # feature maps in float16; the GroupNorms' own statistics ([batch, groups]) stay float32
    maps = [p for p in states if len(p.shape) == 4]
    assert maps and all(p.type == "tensor(float16)" for p in maps)
    groups = entry["group_norm"]["groups"]
    own_stats = [p for p in states if len(p.shape) == 2 and p.shape[1] == groups]
    assert own_stats and all(p.type == "tensor(float)" for p in own_stats)
    stats = [p for s in sessions[:-1] for p in s.get_outputs() if p.name.startswith("group_norm_")]
    assert stats and all(p.type == "tensor(float)" for p in stats)
