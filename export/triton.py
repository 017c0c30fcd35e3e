"""Write a Triton Inference Server model repository for a bundle.

    python -m export.triton --bundle models/nano --out triton-repo [--variant onnxruntime|python]
                            [--max-batch 8] [--instances 1] [--trt-cache /var/cache/tadsr-trt]

One Triton model per graph of the bundle (``vae_encoder``, ``unet``, ``vae_decoder`` and, where the bundle
has them, ``vae_encoder_tiled`` / ``vae_decoder_tiled``), named like the manifest's components, with the
graph's own port names, dtypes and dynamic dimensions (``-1``) taken from ``manifest.json``:

* ``--variant onnxruntime`` (production, a Triton GPU container): ``backend: "onnxruntime"``, the ONNX file
  (and its external data) in ``<model>/1/``, GPU instance groups, and the TensorRT accelerator (fp16, engine
  and timing cache under ``--trt-cache``) in ``optimization.execution_accelerators``.
* ``--variant python`` (machines whose Triton has no ONNX Runtime backend, like the ``nvidia-pytriton``
  wheel's): ``backend: "python"``; ``<model>/1/model.py`` runs the same ONNX file with the ``onnxruntime``
  package inside the server, on the CPU.

The graphs whose every port has a leading ``batch`` axis get ``max_batch_size: --max-batch`` and dynamic
batching (tiles of one shape from several requests run as one batch; ``timestep`` [batch] becomes one
value per request). The tiled-VAE graphs carry GroupNorm statistics without a batch axis, so they get
``max_batch_size: 0`` (no batching) and their full shapes. The client (``tadsr-edge run --server``) reads
the bundle's manifest and prompt embedding locally; the repository holds only graphs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Sequence

from .manifest import read_manifest

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
VARIANTS = ("onnxruntime", "python")
DEFAULT_QUEUE_DELAY_US = 2000
# A model-level parameter holding the sha256 of the ONNX file, from the bundle's manifest.
GRAPH_SHA256_KEY = "tadsr_graph_sha256"


def _dims(shape: Sequence, batched: bool) -> List[int]:
    dims = [d if isinstance(d, int) else -1 for d in shape]
    return dims[1:] if batched else dims


def is_batched(entry: Dict) -> bool:
    """Every input and output has the symbolic ``batch`` axis first."""
    ports = entry["inputs"] + entry["outputs"]
    return all(p["shape"] and p["shape"][0] == "batch" for p in ports)


def _port(port: Dict, batched: bool) -> str:
    dtype = TRITON_DTYPES.get(port["dtype"])
    if dtype is None:
        raise ValueError(f"port {port['name']}: dtype {port['dtype']} has no Triton type here")
    dims = _dims(port["shape"], batched)
    reshape = ""
    if not dims:  # a per-request scalar such as timestep [batch]: one element per request
        dims, reshape = [1], "\n    reshape: { shape: [ ] }"
    return (f"  {{\n    name: \"{port['name']}\"\n    data_type: {dtype}\n"
            f"    dims: [ {', '.join(str(d) for d in dims)} ]{reshape}\n  }}")


def config_pbtxt(name: str, entry: Dict, variant: str, max_batch: int, instances: int, trt_cache: str) -> str:
    """The text of ``<name>/config.pbtxt``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    batched = is_batched(entry) and max_batch > 0
    lines = [f'name: "{name}"', f'backend: "{variant}"', f"max_batch_size: {max_batch if batched else 0}"]
    if variant == "onnxruntime":
        lines.append('default_model_filename: "model.onnx"')
    lines.append("input [\n" + ",\n".join(_port(p, batched) for p in entry["inputs"]) + "\n]")
    lines.append("output [\n" + ",\n".join(_port(p, batched) for p in entry["outputs"]) + "\n]")
    if batched:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {DEFAULT_QUEUE_DELAY_US}\n}}")
    if entry.get("sha256"):
        # the client (tadsr-edge run --server) checks it against its bundle's manifest
        value = f'{{ string_value: "{entry["sha256"]}" }}'
        lines.append(f'parameters {{\n  key: "{GRAPH_SHA256_KEY}"\n  value: {value}\n}}')
    kind = "KIND_GPU" if variant == "onnxruntime" else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    if variant == "onnxruntime":
        params = [("precision_mode", "FP16"), ("max_workspace_size_bytes", str(4 << 30)),
                  ("trt_engine_cache_enable", "1"), ("trt_engine_cache_path", f"{trt_cache}/{name}"),
                  ("trt_timing_cache_enable", "1"), ("trt_timing_cache_path", f"{trt_cache}/{name}")]
        body = "\n".join(f'          parameters {{ key: "{k}" value: "{v}" }}' for k, v in params)
        lines.append("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [\n"
                     f'      {{\n          name : "tensorrt"\n{body}\n      }}\n    ]\n  }}\n}}')
    return "\n".join(lines) + "\n"


PYTHON_MODEL = '''"""Triton Python-backend model: one ONNX graph of a tadsr-edge bundle, run by onnxruntime (CPU)."""

import json
import os

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "ports.json"), encoding="utf-8") as handle:
            ports = json.load(handle)
        self.inputs = [p["name"] for p in ports["inputs"]]
        self.outputs = [p["name"] for p in ports["outputs"]]
        self.batched = ports["batched"]
        options = onnxruntime.SessionOptions()
        threads = int(os.environ.get("TADSR_TRITON_THREADS", "1"))
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(os.path.join(here, "model.onnx"), options,
                                                    providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {}
                for name in self.inputs:
                    value = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                    if self.batched and name == "timestep":
                        value = value.reshape(-1)
                    feeds[name] = value
                results = self.session.run(self.outputs, feeds)
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(r)) for n, r in zip(self.outputs, results)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as error:  # one bad request must not take the model down
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
        return responses
'''


def write_repository(bundle: Path, out: Path, variant: str = "onnxruntime", max_batch: int = 8,
                     instances: int = 1, trt_cache: str = "/var/cache/tadsr-trt") -> List[str]:
    """Write the repository; returns the model names. ``out`` must not exist or be empty."""
    bundle, out = Path(bundle), Path(out)
    manifest = read_manifest(bundle)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty; give a new folder")
    if variant == "python" and manifest.get("provenance", {}).get("fusions") == "cuda":
        raise SystemExit(f"{bundle} was exported with --fusions cuda (CUDA-only graphs); the python variant runs "
                         "them on ONNX Runtime's CPU: use --variant onnxruntime, or a bundle exported without "
                         "--fusions")
    names = []
    for name, entry in manifest["components"].items():
        if name == "text_encoder":
            continue  # the client embeds the prompt itself
        model_dir = out / name
        version = model_dir / "1"
        version.mkdir(parents=True)
        shutil.copyfile(bundle / entry["file"], version / "model.onnx")
        for data in entry.get("external_data", []):
            shutil.copyfile(bundle / data["file"], version / Path(data["file"]).name)
        (model_dir / "config.pbtxt").write_text(
            config_pbtxt(name, entry, variant, max_batch, instances, trt_cache), encoding="utf-8")
        if variant == "python":
            (version / "model.py").write_text(PYTHON_MODEL, encoding="utf-8")
            ports = {"inputs": entry["inputs"], "outputs": entry["outputs"],
                     "batched": is_batched(entry) and max_batch > 0}
            (version / "ports.json").write_text(json.dumps(ports, indent=2) + "\n", encoding="utf-8")
        names.append(name)
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.triton", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--variant", choices=VARIANTS, default="onnxruntime")
    parser.add_argument("--max-batch", type=int, default=8, help="largest dynamic batch of tiles (0: none)")
    parser.add_argument("--instances", type=int, default=1, help="instances of each model per GPU (or CPU)")
    parser.add_argument("--trt-cache", default="/var/cache/tadsr-trt", help="TensorRT engine/timing cache folder")
    args = parser.parse_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        print(f"error: {args.bundle}/manifest.json not found (not a bundle folder)", file=sys.stderr)
        return 2
    names = write_repository(args.bundle, args.out, args.variant, args.max_batch, args.instances, args.trt_cache)
    print(f"wrote {len(names)} models ({', '.join(names)}) to {args.out} ({args.variant} variant)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
