"""Writes src/runtime/probe.onnx, the graph `tadsr-edge info` and `auto` run
on a GPU provider to prove it usable (run from the repository root with the
export venv: `python src/runtime/make_probe_graph.py`).

probe.onnx: x [1, 4, 16, 16] float32 -> y [1, 8, 16, 16] float32 through a
3x3 Conv (cuDNN), a MatMul over the width (cuBLAS), a ReduceMean and Sigmoid:
the kinds of kernel every TADSR graph needs. Weights are exact multiples of
1/64 from a fixed pattern, so the file does not depend on the machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent / "probe.onnx"


def pattern(shape, modulus: int) -> np.ndarray:
    count = int(np.prod(shape))
    values = (np.arange(count, dtype=np.int64) * 37 % modulus) - modulus // 2
    return (values.astype(np.float32) / 64.0).reshape(shape)


def build() -> onnx.ModelProto:
    conv_w = numpy_helper.from_array(pattern((8, 4, 3, 3), 23), "conv_w")
    conv_b = numpy_helper.from_array(pattern((8,), 7), "conv_b")
    mix = numpy_helper.from_array(pattern((16, 16), 13), "width_mix")
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["conv", "width_mix"], ["mixed"]),
        helper.make_node("ReduceMean", ["mixed"], ["mean"], axes=[2, 3], keepdims=1),
        helper.make_node("Sub", ["mixed", "mean"], ["centered"]),
        helper.make_node("Sigmoid", ["centered"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tadsr-edge provider probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        initializer=[conv_w, conv_b, mix],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tadsr-edge")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> int:
    OUT.write_bytes(build().SerializeToString())
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
