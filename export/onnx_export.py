"""torch -> ONNX (opset 17) for the bundle's graphs.

Each graph is traced with ``torch.onnx.export(..., dynamo=False)`` and
``dynamic_axes`` for batch, height and width.  The UNet is traced at a latent
size whose sides are not divisible by 8 (diffusers decides at trace time
whether to pass explicit upsample sizes, and only that variant of the graph
runs every size).  The traced file is then normalized (doc strings and
metadata dropped, fixed producer fields) and written either as one file or,
when it would pass 2 GB, as ``model.onnx`` + ``model.onnx.data``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import torch

from .fused_attention import fused_attention
from .ort_fusions import fuse_for_cuda
from .precise_norm import rowwise_group_norms

OPSET = 17
# Protobuf refuses messages of 2 GiB and more; keep a margin for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2 ** 31 - 2 ** 26
PRODUCER_NAME = "tadsr-edge-export"
PRODUCER_VERSION = "1"

# Trace shapes (latent sides not divisible by 8).
TRACE_LATENT_HW = (40, 25)
TRACE_ENCODER_LATENT_HW = (17, 25)
TRACE_DECODER_LATENT_HW = (17, 25)

FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
ONNX_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64"}


def io_spec(name, dtype, shape, layout):
    return {"name": name, "dtype": ONNX_DTYPE_NAMES[dtype], "shape": list(shape), "layout": layout}


def component_specs(float_dtype: torch.dtype, cross_attention_dim: int, latent_channels: int = 4
                    ) -> Dict[str, Dict[str, List[Dict]]]:
    """Graph inputs/outputs as docs/bundle-format.md lists them."""
    lat = ["batch", latent_channels, "latent_height", "latent_width"]
    img = ["batch", 3, "height", "width"]
    return {
        "vae_encoder": {
            "inputs": [io_spec("image", float_dtype, img, "NCHW"),
                       io_spec("timestep", torch.int64, ["batch"], "N")],
            "outputs": [io_spec("latent_mean", float_dtype, lat, "NCHW"),
                        io_spec("latent_logvar", float_dtype, lat, "NCHW")],
        },
        "unet": {
            "inputs": [io_spec("latent", float_dtype, lat, "NCHW"),
                       io_spec("timestep", torch.int64, ["batch"], "N"),
                       io_spec("encoder_hidden_states", float_dtype, ["batch", 77, cross_attention_dim], "NLD")],
            "outputs": [io_spec("residual", float_dtype, lat, "NCHW")],
        },
        "vae_decoder": {
            "inputs": [io_spec("latent", float_dtype, lat, "NCHW")],
            "outputs": [io_spec("image", float_dtype, img, "NCHW")],
        },
    }


def text_encoder_spec(hidden_size: int, float_dtype: torch.dtype):
    return {
        "inputs": [io_spec("input_ids", torch.int64, ["batch", 77], "NL")],
        "outputs": [io_spec("last_hidden_state", float_dtype, ["batch", 77, hidden_size], "NLD")],
    }


def _dynamic_axes(spec: Dict[str, List[Dict]]) -> Dict[str, Dict[int, str]]:
    axes = {}
    for entry in spec["inputs"] + spec["outputs"]:
        dims = {i: d for i, d in enumerate(entry["shape"]) if isinstance(d, str)}
        if dims:
            axes[entry["name"]] = dims
    return axes


def trace_inputs(component: str, float_dtype: torch.dtype, cross_attention_dim: int, seed: int = 0,
                 latent_channels: int = 4):
    gen = torch.Generator().manual_seed(seed)
    if component == "vae_encoder":
        h, w = TRACE_ENCODER_LATENT_HW
        image = torch.rand(1, 3, 8 * h, 8 * w, generator=gen) * 2 - 1
        return (image.to(float_dtype), torch.tensor([500], dtype=torch.int64))
    if component == "unet":
        h, w = TRACE_LATENT_HW
        latent = torch.randn(1, latent_channels, h, w, generator=gen)
        ehs = torch.randn(1, 77, cross_attention_dim, generator=gen)
        return (latent.to(float_dtype), torch.tensor([500], dtype=torch.int64), ehs.to(float_dtype))
    if component == "vae_decoder":
        h, w = TRACE_DECODER_LATENT_HW
        return (torch.randn(1, latent_channels, h, w, generator=gen).to(float_dtype),)
    raise ValueError(component)


def _set_io_shapes(model: onnx.ModelProto, spec: Dict[str, List[Dict]]) -> None:
    """Make the graph's declared input/output shapes exactly the spec's (names of dynamic axes, fixed sizes)."""
    wanted = {e["name"]: e["shape"] for e in spec["inputs"] + spec["outputs"]}
    for value in list(model.graph.input) + list(model.graph.output):
        shape = wanted.get(value.name)
        if shape is None:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise RuntimeError(f"{value.name}: traced rank {len(dims)} differs from the spec {shape}")
        for dim, size in zip(dims, shape, strict=True):
            if isinstance(size, str):
                dim.Clear()
                dim.dim_param = size
            else:
                dim.Clear()
                dim.dim_value = int(size)


def _normalize(model: onnx.ModelProto) -> None:
    """Drop what varies between runs or machines; fix producer fields."""
    model.producer_name = PRODUCER_NAME
    model.producer_version = PRODUCER_VERSION
    model.doc_string = ""
    del model.metadata_props[:]
    model.graph.doc_string = ""

    def clean_graph(graph):
        for node in graph.node:
            node.doc_string = ""
            for attr in node.attribute:
                if attr.HasField("g"):
                    clean_graph(attr.g)
                for sub in attr.graphs:
                    clean_graph(sub)
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            value.doc_string = ""

    clean_graph(model.graph)


def _initializer_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for init in model.graph.initializer:
        if init.raw_data:
            total += len(init.raw_data)
        else:
            total += init.ByteSize()
    return total


def save_onnx(model: onnx.ModelProto, path: Path) -> List[Path]:
    """Write ``model`` to ``path``; external data file only when past 2 GB. Returns the data files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data_path = path.with_name(path.name + ".data")
    if data_path.exists():
        data_path.unlink()
    if _initializer_bytes(model) >= EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_path.name, size_threshold=1024, convert_attribute=False)
        os.chmod(data_path, 0o644)  # onnx creates it owner-only; the bundle is meant to be read by others
        return [data_path]
    onnx.save_model(model, str(path))
    return []


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            yield


GROUP_NORMS = ("rowwise", "instance")
ATTENTIONS = ("onnx", "fused")


def export_graph(module: torch.nn.Module, args: Tuple, spec: Dict[str, List[Dict]], out_path: Path,
                 group_norm: str = "rowwise", attention: str = "onnx", cuda_fusions: Optional[str] = None,
                 fp16_after_fusing: bool = False, fused_counts: Optional[Dict[str, int]] = None) -> List[Path]:
    """Trace ``module`` on ``args`` and write it to ``out_path`` (normalized).
    ``group_norm``: ``rowwise`` traces GroupNorms with row-by-row statistics
    (``precise_norm``: exact on the CPU at any size); ``instance`` as PyTorch
    exports them (Reshape, InstanceNormalization, Reshape, Mul, Add: fewer
    kernels for GPU bundles, but ONNX Runtime's CPU kernel sums each group in
    one float32 run, off by about 3e-4 on multi-megapixel groups).
    ``attention``: ``onnx`` writes attention in standard ONNX operators;
    ``fused`` as one com.microsoft.MultiHeadAttention node per attention
    (``fused_attention``: fused kernels on CUDA).
    ``cuda_fusions``: the component name (``unet``, ``vae_encoder``,
    ``vae_decoder``) to rewrite the traced float32 graph with ONNX Runtime's
    CUDA fusions (``ort_fusions``; needs the instance and fused forms), then
    converted to float16 when ``fp16_after_fusing``; None leaves the trace as
    it is. ``fused_counts``: a dict that receives the fuser's count per fused
    operator."""
    if group_norm not in GROUP_NORMS:
        raise ValueError(f"group_norm must be one of {GROUP_NORMS}, not {group_norm!r}")
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, not {attention!r}")
    fused = fused_attention(module) if attention == "fused" else contextlib.nullcontext(0)
    traced_norms = rowwise_group_norms(module) if group_norm == "rowwise" else contextlib.nullcontext(module)
    out_path = Path(out_path)
    input_names = [e["name"] for e in spec["inputs"]]
    output_names = [e["name"] for e in spec["outputs"]]
    tmp = Path(tempfile.mkdtemp(prefix="tadsr-onnx-"))
    try:
        tmp_file = tmp / "model.onnx"
        with torch.no_grad(), _quiet(), traced_norms, fused:
            torch.onnx.export(
                module,
                args,
                str(tmp_file),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=_dynamic_axes(spec),
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        if cuda_fusions is None:
            model = onnx.load(str(tmp_file), load_external_data=True)
        else:
            if group_norm != "instance" or attention != "fused":
                raise ValueError("the CUDA fusions need group_norm='instance' and attention='fused'")
            model, counts = fuse_for_cuda(tmp_file, cuda_fusions, fp16_after_fusing)
            if fused_counts is not None:
                fused_counts.update(counts)
        _normalize(model)
        _set_io_shapes(model, spec)
        data_files = save_onnx(model, out_path)
        del model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_files


def ort_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_ort(session, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    return session.run(None, feeds)


def max_abs_diff(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


__all__ = [
    "OPSET", "FLOAT_DTYPES", "component_specs", "text_encoder_spec", "trace_inputs", "export_graph",
    "save_onnx", "ort_session", "run_ort", "max_abs_diff",
]
