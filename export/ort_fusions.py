"""ONNX Runtime's CUDA fusions for the three main graphs (``--fusions cuda``).

ONNX Runtime's own graph fuser (``onnxruntime.transformers.optimizer``, the
one its Stable Diffusion pipeline uses) rewrites a traced UNet or VAE into
com.microsoft operators with fused CUDA kernels: GroupNorm and SkipGroupNorm
(channels-last, SiLU folded in), NhwcConv, BiasSplitGelu, BiasAdd,
SkipLayerNormalization (the attention is already one MultiHeadAttention
node each, from ``--attention fused``). Several of them exist
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
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

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
    its 3.4 GB and need over 17 GB. Raises ``FusionError`` when the fuser
    left a convolution or every GroupNorm unfused (patterns it did not
    recognize: a bundle marked CUDA-only without the fusions would be worse
    than none); prints the fuser's own warnings."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = MODEL_TYPES[component]
    options = FusionOptions(model_type)
    model = onnx.load(str(trace), load_external_data=False)
    with _quiet_fuser() as warnings, _weights_read_from(Path(trace).parent):
        fused = optimize_model(model, model_type=model_type, num_heads=0, hidden_size=0, opt_level=0,
                               optimization_options=options, use_gpu=True)
        counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
        # what no fusion read is still on disk: bring it in before the trace's folder goes (and before the
        # float16 converter, which retypes an external tensor without converting its bytes)
        onnx.load_external_data_for_model(fused.model, ".")
    _report(component, warnings)
    _check_fused(component, fused.model, counts)
    return (float16_graph(fused.model, component) if fp16 else fused.model), counts


class FusionError(RuntimeError):
    """ONNX Runtime's fuser did not recognize what it should have fused."""


def _check_fused(component: str, model: onnx.ModelProto, counts: Dict[str, int]) -> None:
    ops = operator_counts(model)
    norms = counts.get("GroupNorm", 0) + counts.get("SkipGroupNorm", 0)
    if ops.get("Conv", 0) or not ops.get("com.microsoft.NhwcConv", 0) or not norms:
        raise FusionError(
            f"{component}: ONNX Runtime's fuser did not recognize this graph's patterns ({ops.get('Conv', 0)} "
            f"convolutions left unfused, {norms} GroupNorms fused; all it fused: {counts}); export without --fusions")


def _report(component: str, warnings: List[str]) -> None:
    for line in warnings:
        print(f"  {component}: ONNX Runtime's fuser: {line}", file=sys.stderr, flush=True)


def float16_graph(model: onnx.ModelProto, component: str = "graph") -> onnx.ModelProto:
    """``model`` (float32) in float16, inputs and outputs too, by ONNX
    Runtime's converter (it knows the fused operators), the sinusoidal
    timestep embeddings left in float32 (``sinusoid_nodes``). Unnamed nodes
    get names first: the converter keeps nodes float32 by name."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    taken = {node.name for node in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_unnamed_{index}"
            while node.name in taken:
                node.name += "_"
            taken.add(node.name)
    wrapped = OnnxModel(model)
    with _quiet_fuser() as warnings:
        wrapped.convert_float_to_float16(keep_io_types=False, op_block_list=[],
                                         node_block_list=sorted(sinusoid_nodes(model)))
    _report(component, warnings)
    return wrapped.model


# Their outputs are integers: what produced their input needs no float32.
_SHAPE_OPS = ("Shape", "Size")


def sinusoid_nodes(model: onnx.ModelProto) -> Set[str]:
    """The names of the Sin and Cos nodes and of every node their values
    depend on (not through Shape or Size): the sinusoidal timestep
    embeddings. They stay float32 in a float16 graph (as PyTorch computes
    them in a float16 model): the phase t * frequency reaches about 1000
    radians, where float16's spacing is 0.5."""
    producer = {out: node for node in model.graph.node for out in node.output}
    seen: Set[int] = set()
    wanted: Set[str] = set()
    stack = [node for node in model.graph.node if node.op_type in ("Sin", "Cos")]
    while stack:
        node = stack.pop()
        if id(node) in seen or node.op_type in _SHAPE_OPS:
            continue
        seen.add(id(node))
        if node.name:
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


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: List[str] = []

    def emit(self, record):
        message = record.getMessage()
        if "producer not matched" not in message:  # our graphs' producer is ours, not "pytorch"
            self.lines.append(message.splitlines()[0] if message else record.levelname)


@contextlib.contextmanager
def _quiet_fuser():
    """The fuser logs every pattern it tries at INFO and draws a progress bar:
    those are dropped; its warnings and errors are collected (the list
    yielded) for the caller to print."""
    collect = _Collect()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    root.addHandler(collect)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield collect.lines
    finally:
        root.removeHandler(collect)
        root.setLevel(level)


__all__ = ["FUSIONS", "CUDA_ONLY_OPS", "MODEL_TYPES", "FusionError", "fuse_for_cuda", "float16_graph",
           "operator_counts", "sinusoid_nodes"]
