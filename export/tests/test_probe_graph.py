"""src/runtime/probe.onnx (the graph `tadsr-edge info` runs on a GPU provider
to prove it usable) is what its script writes, and computes what numpy says."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnxruntime as ort


def _script(repo):
    path = repo / "src" / "runtime" / "make_probe_graph.py"
    spec = importlib.util.spec_from_file_location("make_probe_graph", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_probe_graph_is_reproducible(repo):
    module = _script(repo)
    assert module.OUT.read_bytes() == module.build().SerializeToString()


def test_probe_graph_computes_conv_matmul_and_centered_sigmoid(repo):
    module = _script(repo)
    x = np.linspace(-1, 1, 4 * 16 * 16, dtype=np.float32).reshape(1, 4, 16, 16)
    w = module.pattern((8, 4, 3, 3), 23).astype(np.float64)
    b = module.pattern((8,), 7).astype(np.float64)
    mix = module.pattern((16, 16), 13).astype(np.float64)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((1, 8, 16, 16))
    for dy in range(3):
        for dx in range(3):
            conv += np.einsum("oc,nchw->nohw", w[:, :, dy, dx], padded[:, :, dy:dy + 16, dx:dx + 16])
    conv += b.reshape(1, 8, 1, 1)
    mixed = conv @ mix
    centered = mixed - mixed.mean(axis=(2, 3), keepdims=True)
    expected = 1 / (1 + np.exp(-centered))
    session = ort.InferenceSession(str(module.OUT), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    assert np.abs(y - expected).max() < 1e-5
