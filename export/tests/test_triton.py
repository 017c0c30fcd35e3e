"""export/triton.py: the model repository written for models/tiny (the config text; serving it is the
Rust client's test against a real tritonserver)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export import triton as T

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"


@pytest.mark.parametrize("variant", T.VARIANTS)
def test_repository_has_one_model_per_graph_with_the_manifest_ports(tmp_path, variant):
    names = T.write_repository(TINY, tmp_path / "repo", variant=variant)
    manifest = json.loads((TINY / "manifest.json").read_text())
    assert sorted(names) == sorted(manifest["components"])
    for name in names:
        text = (tmp_path / "repo" / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in text and f'backend: "{variant}"' in text
        assert (tmp_path / "repo" / name / "1" / "model.onnx").read_bytes() == \
            (TINY / manifest["components"][name]["file"]).read_bytes()
        for port in manifest["components"][name]["inputs"] + manifest["components"][name]["outputs"]:
            assert f'name: "{port["name"]}"' in text
        sha256 = manifest["components"][name]["sha256"]
        assert f'key: "{T.GRAPH_SHA256_KEY}"' in text and f'string_value: "{sha256}"' in text
        if variant == "python":
            assert (tmp_path / "repo" / name / "1" / "model.py").is_file()
            assert "KIND_CPU" in text and "tensorrt" not in text
        else:
            assert "KIND_GPU" in text and 'name : "tensorrt"' in text and "FP16" in text


def test_batched_graphs_batch_tiles_and_stats_graphs_do_not(tmp_path):
    T.write_repository(TINY, tmp_path / "repo", max_batch=4)
    unet = (tmp_path / "repo" / "unet" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in unet and "dynamic_batching" in unet
    # latent [batch, 4, h, w] -> dims without the batch axis; timestep [batch] -> one value per request
    assert "dims: [ 4, -1, -1 ]" in unet and "dims: [ 77, 32 ]" in unet
    assert "dims: [ 1 ]\n    reshape: { shape: [ ] }" in unet
    tiled = (tmp_path / "repo" / "vae_decoder_tiled" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in tiled and "dynamic_batching" not in tiled
    assert "dims: [ -1, 4, -1, -1 ]" in tiled and "dims: [ 30, 8 ]" in tiled


def test_refuses_a_non_empty_folder_and_a_missing_bundle(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "x").write_text("x")
    with pytest.raises(SystemExit):
        T.write_repository(TINY, tmp_path / "repo")
    assert T.main(["--bundle", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
