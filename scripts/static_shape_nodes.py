"""Node counts of a bundle's graphs after ONNX Runtime's basic optimizations,
with free dimensions (as the CPU opens them) and pinned to one shape (as
`--static-shapes` opens them on GPU providers): what the pinning folds away.

    python scripts/static_shape_nodes.py --bundle models/sd21 --size 512
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort


def optimized_counts(model: Path, overrides: dict[str, int]) -> collections.Counter:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        for name, value in overrides.items():
            options.add_free_dimension_override_by_name(name, value)
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
        return collections.Counter(node.op_type for node in graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512, help="model input side in pixels")
    args = parser.parse_args()
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    side = args.size
    pinned = {"batch": 1, "height": side, "width": side, "latent_height": side // 8, "latent_width": side // 8}
    shape_ops = ("Shape", "Gather", "Unsqueeze", "Concat")
    for name in ("vae_encoder", "unet", "vae_decoder"):
        model = args.bundle / manifest["components"][name]["file"]
        free, fixed = optimized_counts(model, {}), optimized_counts(model, pinned)
        print(
            f"{name}: {sum(free.values())} nodes free, {sum(fixed.values())} pinned to "
            f"{side}x{side}; " + ", ".join(f"{op} {free[op]} -> {fixed[op]}" for op in shape_ops)
        )


if __name__ == "__main__":
    main()
