"""ONNX Runtime's CUDA fusions for the three main graphs (``--fusions cuda``).

ONNX Runtime's own graph fuser (``onnxruntime.transformers.optimizer``, the
one its Stable Diffusion pipeline uses) rewrites a traced UNet or VAE into
com.microsoft operators with fused CUDA kernels: GroupNorm and SkipGroupNorm
(channels-last, SiLU folded in), NhwcConv, BiasSplitGelu, BiasAdd,
SkipLayerNormalization, packed-QKV MultiHeadAttention. Several of them exist
only in the CUDA provider: ONNX Runtime's CPU refuses such a graph at load
("Could not find an implementation for NhwcConv"), so a bundle written this
way runs on CUDA (and TensorRT, whose unsupported nodes fall to CUDA) only,
and the runtime says so before loading it on anything else.

The fuser recognizes GroupNorm in PyTorch's InstanceNormalization form and
works on float32 graphs, so the graphs are traced in float32 with
``--group-norm instance`` and converted to float16 after fusing (ONNX
Runtime's converter keeps GroupNorm's scale and shift in float32, and the
sinusoidal timestep embeddings stay float32 as in PyTorch).
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Dict, Set, Tuple

import onnx

FUSIONS = ("none", "cuda")

# The fuser's model type for each main graph.
MODEL_TYPES = {"unet": "unet", "vae_encoder": "vae", "vae_decoder": "vae"}

# The operators that ONNX Runtime implements for CUDA only (not on its CPU).
CUDA_ONLY_OPS = ("GroupNorm", "SkipGroupNorm", "NhwcConv", "BiasSplitGelu", "BiasAdd")


def fuse_for_cuda(trace: Path, component: str, fp16: bool) -> Tuple[onnx.ModelProto, Dict[str, int]]:
    """The fused graph of the float32 trace of ``component`` at ``trace`` and
    the fuser's count per fused operator; converted to float16 (inputs and
    outputs too, the timestep stays int64) when ``fp16``. The weights stay in
    the trace's external data until a fusion reads one (``_weights_read_from``):
    for an SD-2.1-size UNet the fuser would otherwise hold several copies of
    its 3.4 GB and need over 17 GB."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = MODEL_TYPES[component]
    options = FusionOptions(model_type)
    # packed QKV / KV pay off (and are only fused) for float16, as in ONNX Runtime's own pipeline
    options.enable_packed_qkv = fp16
    options.enable_packed_kv = fp16
    model = onnx.load(str(trace), load_external_data=False)
    with _quiet_fuser(), _weights_read_from(Path(trace).parent):
        fused = optimize_model(model, model_type=model_type, num_heads=0, hidden_size=0, opt_level=0,
                               optimization_options=options, use_gpu=True)
        counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
        # what no fusion read is still on disk: bring it in before the trace's folder goes (and before the
        # float16 converter, which retypes an external tensor without converting its bytes)
        onnx.load_external_data_for_model(fused.model, ".")
    return (float16_graph(fused.model) if fp16 else fused.model), counts


def float16_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (float32) in float16, inputs and outputs too, by ONNX
    Runtime's converter (it knows the fused operators), the sinusoidal
    timestep embeddings left in float32 (``sinusoid_nodes``)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    wrapped = OnnxModel(model)
    with _quiet_fuser():
        wrapped.convert_float_to_float16(keep_io_types=False, op_block_list=[],
                                         node_block_list=sorted(sinusoid_nodes(model)))
    return wrapped.model


def sinusoid_nodes(model: onnx.ModelProto) -> Set[str]:
    """The names of the Sin and Cos nodes and of every node they depend on:
    the sinusoidal timestep embeddings. They stay float32 in a float16 graph
    (as PyTorch computes them in a float16 model): the phase t * frequency
    reaches about 1000 radians, where float16's spacing is 0.5."""
    producer = {out: node for node in model.graph.node for out in node.output}
    wanted: Set[str] = set()
    stack = [node for node in model.graph.node if node.op_type in ("Sin", "Cos")]
    while stack:
        node = stack.pop()
        if node.name in wanted:
            continue
        wanted.add(node.name)
        stack.extend(producer[name] for name in node.input if name in producer)
    return wanted


@contextlib.contextmanager
def _weights_read_from(folder: Path):
    """The fuser reads a weight with ``numpy_helper.to_array(tensor)``, which
    opens an external tensor's file relative to the working directory: the
    trace's folder for the time of the fusing."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def operator_counts(model: onnx.ModelProto) -> Dict[str, int]:
    """How many nodes of each operator the graph has (``domain.op`` for non-standard domains)."""
    return dict(collections.Counter(f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in model.graph.node))


@contextlib.contextmanager
def _quiet_fuser():
    """The fuser logs every pattern it tries and shows a progress bar: errors only while it works."""
    loggers = [logging.getLogger(name) for name in ("onnxruntime.transformers", "fusion_base", "onnx_model",
                                                    "onnx_model_unet", "fusion_utils", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


__all__ = ["FUSIONS", "CUDA_ONLY_OPS", "MODEL_TYPES", "fuse_for_cuda", "float16_graph", "operator_counts",
           "sinusoid_nodes"]
