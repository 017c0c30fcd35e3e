"""export.quantize: the experimental int8 QDQ variant of the tiny bundle."""

from __future__ import annotations

import onnx
import pytest

from export.manifest import read_manifest, verify_bundle
from export.quantize import PRECISION, calibration_inputs, compare, quantize_bundle

# Measured 2026-11-26 (AMD EPYC, ORT 1.32): 28.9-29.9 dB for the int8 tiny decoder against fp32.
# 8-bit activations cost about that much on these random weights; the bound only catches breakage.
TINY_DECODER_MIN_PSNR = 26.0


@pytest.fixture(scope="module")
def tiny_int8(repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_int8")
    images = [repo / "examples" / "astronaut.png", repo / "examples" / "chelsea.png"]
    quantize_bundle(repo / "models" / "tiny", out, images, components=["vae_decoder"], quiet=True,
                    measure_memory=False)
    return out


def test_int8_bundle_manifest(repo, tiny_int8):
    m = read_manifest(tiny_int8)
    src = read_manifest(repo / "models" / "tiny")
    assert m["precision"] == PRECISION
    assert "memory" in src and "memory" not in m  # the fp32 figures do not hold for the int8 graphs
    assert verify_bundle(tiny_int8) == []
    assert m["quantization"]["components"]["vae_decoder"]["int8_nodes"] > 0
    for comp in ("vae_encoder", "unet", "vae_decoder"):
        assert m["components"][comp]["inputs"] == src["components"][comp]["inputs"]
        assert m["components"][comp]["outputs"] == src["components"][comp]["outputs"]
    assert m["components"]["unet"]["sha256"] == src["components"]["unet"]["sha256"]
    graph = onnx.load(str(tiny_int8 / "vae_decoder" / "model.onnx")).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in graph.input)


def test_int8_decoder_quality(repo, tiny_int8):
    image = calibration_inputs([repo / "examples" / "coffee.png"])[0]  # not among the calibration images
    assert compare(repo / "models" / "tiny", tiny_int8, image) >= TINY_DECODER_MIN_PSNR
