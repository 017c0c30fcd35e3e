"""Each exported graph against the PyTorch model on random inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from export.onnx_export import max_abs_diff, ort_session

# (batch, latent height, latent width): squares, sides not divisible by 8, odd sides, batch 2.
SHAPES = [(1, 8, 8), (1, 18, 10), (1, 17, 16), (2, 33, 17), (1, 24, 40)]
FP32_TOL = 1e-4
FP16_TOL = 5e-2  # fp16 graphs: reported, and bounded loosely so a broken graph still fails


def _inputs(b, h, w, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, 8 * h, 8 * w, generator=gen) * 2 - 1
    t = torch.tensor([17 + 400 * i for i in range(b)], dtype=torch.int64)
    latent = torch.randn(b, 4, h, w, generator=gen)
    ehs = torch.randn(b, 77, dim, generator=gen)
    return image, t, latent, ehs


def _errors(models, bundle, np_dtype):
    enc = ort_session(bundle / "vae_encoder/model.onnx")
    unet = ort_session(bundle / "unet/model.onnx")
    dec = ort_session(bundle / "vae_decoder/model.onnx")
    worst = {"vae_encoder": 0.0, "unet": 0.0, "vae_decoder": 0.0}
    for i, (b, h, w) in enumerate(SHAPES):
        image, t, latent, ehs = _inputs(b, h, w, models.cross_attention_dim, i)
        with torch.no_grad():
            want_mean, want_logvar = models.encoder_graph()(image, t)
            want_res = models.unet_graph()(latent, t, ehs)
            want_img = models.decoder_graph()(latent)
        got_mean, got_logvar = enc.run(None, {"image": image.numpy().astype(np_dtype), "timestep": t.numpy()})
        (got_res,) = unet.run(None, {"latent": latent.numpy().astype(np_dtype), "timestep": t.numpy(),
                                     "encoder_hidden_states": ehs.numpy().astype(np_dtype)})
        (got_img,) = dec.run(None, {"latent": latent.numpy().astype(np_dtype)})
        assert got_mean.shape == (b, 4, h, w) and got_img.shape == (b, 3, 8 * h, 8 * w)
        assert got_mean.dtype == np_dtype and got_img.dtype == np_dtype
        worst["vae_encoder"] = max(worst["vae_encoder"], max_abs_diff(got_mean, want_mean),
                                   max_abs_diff(got_logvar, want_logvar))
        worst["unet"] = max(worst["unet"], max_abs_diff(got_res, want_res))
        worst["vae_decoder"] = max(worst["vae_decoder"], max_abs_diff(got_img, want_img))
    return worst


def test_fp32_graphs_match_pytorch(tiny_models, fresh_tiny_bundle):
    worst = _errors(tiny_models, fresh_tiny_bundle, np.float32)
    print("\nfp32 max abs error vs PyTorch:", {k: f"{v:.2e}" for k, v in worst.items()})
    for comp, err in worst.items():
        assert err <= FP32_TOL, f"{comp}: {err:.3e} > {FP32_TOL}"


def test_fp16_graphs_close_to_pytorch(tiny_models, fresh_tiny_fp16_bundle):
    worst = _errors(tiny_models, fresh_tiny_fp16_bundle, np.float16)
    print("\nfp16 max abs error vs fp32 PyTorch:", {k: f"{v:.2e}" for k, v in worst.items()})
    for comp, err in worst.items():
        assert err <= FP16_TOL, f"{comp}: {err:.3e} > {FP16_TOL}"


def test_fp16_manifest_and_graph_dtypes(fresh_tiny_fp16_bundle):
    from export.manifest import read_manifest

    manifest = read_manifest(fresh_tiny_fp16_bundle)
    assert manifest["precision"] == "fp16"
    unet = manifest["components"]["unet"]
    assert [i["dtype"] for i in unet["inputs"]] == ["float16", "int64", "float16"]
    assert manifest["prompt"]["dtype"] == "float32"
    model = onnx.load(str(fresh_tiny_fp16_bundle / "unet/model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert model.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_graph_io_names_and_shapes(fresh_tiny_bundle):
    expected = {
        "vae_encoder": ([("image", ["batch", 3, "height", "width"]), ("timestep", ["batch"])],
                        [("latent_mean", ["batch", 4, "latent_height", "latent_width"]),
                         ("latent_logvar", ["batch", 4, "latent_height", "latent_width"])]),
        "unet": ([("latent", ["batch", 4, "latent_height", "latent_width"]), ("timestep", ["batch"]),
                  ("encoder_hidden_states", ["batch", 77, 32])],
                 [("residual", ["batch", 4, "latent_height", "latent_width"])]),
        "vae_decoder": ([("latent", ["batch", 4, "latent_height", "latent_width"])],
                        [("image", ["batch", 3, "height", "width"])]),
    }

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    for comp, (inputs, outputs) in expected.items():
        model = onnx.load(str(fresh_tiny_bundle / comp / "model.onnx"))
        onnx.checker.check_model(model)
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
        assert [(v.name, dims(v)) for v in model.graph.input] == inputs
        assert [(v.name, dims(v)) for v in model.graph.output] == outputs
        assert not any(n.doc_string for n in model.graph.node)


def test_decoder_is_not_clamped_and_takes_scaled_latent(tiny_models, fresh_tiny_bundle):
    dec = ort_session(fresh_tiny_bundle / "vae_decoder/model.onnx")
    latent = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(9)) * 3
    (got,) = dec.run(None, {"latent": latent.numpy()})
    with torch.no_grad():
        raw = tiny_models.vae.decode_raw(latent / 0.18215)
    assert max_abs_diff(got, raw) <= FP32_TOL
    assert np.abs(got).max() > 1.0  # not clamped to [-1, 1]


@pytest.mark.parametrize("component", ["vae_encoder", "unet", "vae_decoder"])
def test_single_file_below_2gb(fresh_tiny_bundle, component):
    assert not (fresh_tiny_bundle / component / "model.onnx.data").exists()


def test_external_data_written_past_threshold(tmp_path, monkeypatch):
    """save_onnx writes one model.onnx.data when the weights pass the threshold."""
    from onnx import TensorProto, helper, numpy_helper

    from export import onnx_export

    weight = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 1000)
    files = onnx_export.save_onnx(model, tmp_path / "m" / "model.onnx")
    assert files == [tmp_path / "m" / "model.onnx.data"]
    assert files[0].stat().st_size == 4096 * 4
    sess = ort_session(tmp_path / "m" / "model.onnx")
    x = np.ones((1, 64), dtype=np.float32)
    assert np.allclose(sess.run(None, {"x": x})[0], x @ numpy_helper.to_array(weight))
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 2 ** 40)
    assert onnx_export.save_onnx(model, tmp_path / "m" / "model.onnx") == []
    assert not files[0].exists()
