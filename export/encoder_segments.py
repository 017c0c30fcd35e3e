"""The tiled encoder graph cut at its GroupNorms: one graph per layer.

``--tiling latent`` reproduces the authors' tiled encoder (images longer than
1088 px): every tile runs up to a GroupNorm, the statistics that GroupNorm
sees are pooled over the tiles, every tile is normalized with the pooled
statistics and goes on to the next GroupNorm.  ``vae_encoder/tiled.onnx``
runs a tile whole, so without these graphs the runtime reaches the same
result with one pass of the whole encoder per layer (23 for SD-2.1's).

The segments are ``vae_encoder/tiled.onnx`` itself, cut by data dependency
(nothing is re-traced): segment ``s`` < K computes everything that what
GroupNorm ``s`` observes depends on and that no earlier segment computed,
and gives that layer's statistics; segment K gives the latent moments.
What a later segment needs from an earlier one (the activations, carried as
``state_NNN`` tensors) is an output of the segment that computes it.  What
depends only on the graph's other inputs (timestep embedding, constants,
``1 - group_norm_fixed``) and integer shape arithmetic is recomputed where it
is needed instead of carried.

Ports (names only in the manifest; dtypes and shapes are the graph's):

- inputs: ``image``, ``timestep``, ``group_norm_mean``, ``group_norm_var``,
  ``group_norm_fixed`` (those the segment uses; ``group_norm_fixed`` = 1 and
  the rows of the layers before ``s`` filled) and ``state_NNN``;
- outputs: ``state_NNN`` (for later segments), then for ``s`` < K
  ``group_norm_mean_layer`` / ``group_norm_var_layer`` [groups] (pooled over
  the batch, like the tiled graph's ``group_norm_*_out`` rows), for ``s`` = K
  ``latent_mean`` / ``latent_logvar``.

``python -m export.encoder_segments BUNDLE...`` adds them to bundles that
have ``vae_encoder/tiled.onnx``; ``export_bundle`` writes them with the tiled
graphs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

import numpy as np
import onnx
from onnx import TensorProto, helper

SEGMENTS_DIR = "vae_encoder/segments"
STATS_OUTPUTS = ("group_norm_mean_layer", "group_norm_var_layer")
MOMENTS = ("latent_mean", "latent_logvar")
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16}


@dataclass
class Segment:
    """One cut of the graph: its nodes (graph order) and its ports (original tensor names)."""

    layer: Optional[int]  # the statistics row this segment's GroupNorm observes (None: the last)
    nodes: List[int]
    graph_inputs: List[str]
    state_inputs: List[str] = field(default_factory=list)
    state_outputs: List[str] = field(default_factory=list)
    targets: List[str] = field(default_factory=list)


def _layer_stats(graph: onnx.GraphProto, producer: Dict[str, int], output: str) -> List[str]:
    """The per-layer tensors stacked into ``output`` (Concat of Unsqueeze)."""
    concat = graph.node[producer[output]]
    if concat.op_type != "Concat":
        raise ValueError(f"{output} is made by {concat.op_type}, expected Concat (a tiled encoder graph)")
    rows = []
    for name in concat.input:
        unsqueeze = graph.node[producer[name]]
        if unsqueeze.op_type != "Unsqueeze":
            raise ValueError(f"{output} row {name} is made by {unsqueeze.op_type}, expected Unsqueeze")
        rows.append(unsqueeze.input[0])
    return rows


def _elem_types(model: onnx.ModelProto) -> Dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def split(model: onnx.ModelProto) -> List[Segment]:
    """Cuts a tiled encoder graph (``vae_encoder/tiled.onnx``) into K + 1 segments."""
    graph = model.graph
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    initializers = {init.name for init in graph.initializer}
    graph_inputs = [value.name for value in graph.input if value.name not in initializers]
    means = _layer_stats(graph, producer, "group_norm_mean_out")
    variances = _layer_stats(graph, producer, "group_norm_var_out")
    if len(means) != len(variances):
        raise ValueError("group_norm_mean_out and group_norm_var_out stack different layer counts")
    types = _elem_types(model)

    # tensors that depend on the image: only those (when float) are carried
    from_image: Set[str] = {"image"}
    for node in graph.node:
        if any(name in from_image for name in node.input):
            from_image.update(node.output)

    def carried(name: str) -> bool:
        return name in from_image and types.get(name) in FLOAT_TYPES

    # in the order they run (the graph's node order is a topological one), which is not the order of
    # the statistics rows (``named_modules`` order: a mid block's attention before its first resnet)
    layers = sorted(range(len(means)), key=lambda k: max(producer[means[k]], producer[variances[k]]))
    targets = [[means[k], variances[k]] for k in layers] + [list(MOMENTS)]
    available: Set[str] = set()  # carried tensors computed by earlier segments
    segments = []
    for wanted in targets:
        members: Set[int] = set()
        inputs_used: Set[str] = set()
        state_in: Set[str] = set()
        stack = list(wanted)
        seen: Set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or name == "":
                continue
            seen.add(name)
            if name in initializers:
                continue
            if name in graph_inputs:
                inputs_used.add(name)
                continue
            if name in available:
                state_in.add(name)
                continue
            index = producer[name]
            if index not in members:
                members.add(index)
                stack.extend(graph.node[index].input)
                for attr in graph.node[index].attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        raise ValueError(f"node {graph.node[index].name} has a subgraph; cannot cut it")
        nodes = sorted(members)
        segment = Segment(layer=layers[len(segments)] if len(segments) < len(layers) else None,
                          nodes=nodes, graph_inputs=[n for n in graph_inputs if n in inputs_used],
                          state_inputs=sorted(state_in), targets=list(wanted))
        segments.append(segment)
        for index in nodes:
            available.update(name for name in graph.node[index].output if carried(name))
    # each carried tensor is an output of the segment that computes it
    made_in = {}
    for number, segment in enumerate(segments):
        for index in segment.nodes:
            for name in graph.node[index].output:
                made_in.setdefault(name, number)
    for segment in segments:
        for name in segment.state_inputs:
            outputs = segments[made_in[name]].state_outputs
            if name not in outputs:
                outputs.append(name)
    for segment in segments:
        segment.state_outputs.sort()
    return segments


def _value_info(name: str, like: str, types: Dict[str, int], rank: Dict[str, int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, types[like], [None] * rank[like] if like in rank else None)


def segment_models(model: onnx.ModelProto, segments: Sequence[Segment]) -> List[onnx.ModelProto]:
    """The segments as ONNX models, carried tensors renamed ``state_NNN`` and targets to their port names."""
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = _elem_types(model)
    rank = {}
    for value in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        if value.type.tensor_type.HasField("shape"):
            rank[value.name] = len(value.type.tensor_type.shape.dim)
    carried = sorted({name for segment in segments for name in segment.state_inputs})
    state_name = {name: f"state_{number:03d}" for number, name in enumerate(carried)}
    initializer = {init.name: init for init in graph.initializer}
    graph_input = {value.name: value for value in graph.input}
    last = len(segments) - 1
    models = []
    for number, segment in enumerate(segments):
        port_names = dict(state_name)
        port_names.update(zip(segment.targets, MOMENTS if number == last else STATS_OUTPUTS, strict=True))
        nodes = []
        used_inits = []
        for index in segment.nodes:
            node = onnx.NodeProto()
            node.CopyFrom(graph.node[index])
            node.input[:] = [port_names.get(name, name) for name in node.input]
            node.output[:] = [port_names.get(name, name) for name in node.output]
            nodes.append(node)
            used_inits.extend(name for name in graph.node[index].input if name in initializer)
        inputs = [graph_input[name] for name in segment.graph_inputs]
        inputs += [_value_info(state_name[name], name, types, rank) for name in segment.state_inputs]
        outputs = [_value_info(state_name[name], name, types, rank) for name in segment.state_outputs]
        outputs += [_value_info(port_names[name], name, types, rank) for name in segment.targets]
        inits = [initializer[name] for name in dict.fromkeys(used_inits)]
        seg_graph = helper.make_graph(nodes, f"vae_encoder_segment_{number:02d}", inputs, outputs, inits)
        seg_model = helper.make_model(seg_graph, opset_imports=model.opset_import, ir_version=model.ir_version)
        onnx.checker.check_model(seg_model)
        models.append(seg_model)
    return models


def run_segments(sessions, layers_of, image: np.ndarray, timestep: np.ndarray, tiles_of_image=None):
    """Runs the segments over the crops of ``image`` (``tiles_of_image``: list of (x0, x1, y0, y1);
    default the whole image) with statistics pooled over them by pixels, the authors' way.
    Returns each crop's (latent_mean, latent_logvar)."""
    crops = [image[:, :, y0:y1, x0:x1] for x0, x1, y0, y1 in (tiles_of_image or
                                                               [(0, image.shape[3], 0, image.shape[2])])]
    pixels = np.array([c.shape[2] * c.shape[3] for c in crops], np.float32)
    weights = (pixels / pixels.max()) / (pixels / pixels.max()).sum()
    layers = len(sessions) - 1
    (groups,) = next(out.shape for out in sessions[0].get_outputs() if out.name == STATS_OUTPUTS[0])
    mean = np.zeros((layers, groups), np.float32)
    var = np.ones((layers, groups), np.float32)
    states: List[Dict[str, np.ndarray]] = [{} for _ in crops]
    results = []
    for number, session in enumerate(sessions):
        names = [out.name for out in session.get_outputs()]
        observed = []
        for crop, state in zip(crops, states, strict=True):
            feeds = {}
            for port in session.get_inputs():
                if port.name == "image":
                    feeds[port.name] = np.ascontiguousarray(crop)
                elif port.name == "timestep":
                    feeds[port.name] = timestep
                elif port.name == "group_norm_mean":
                    feeds[port.name] = mean
                elif port.name == "group_norm_var":
                    feeds[port.name] = var
                elif port.name == "group_norm_fixed":
                    feeds[port.name] = np.ones(1, np.float32)
                else:
                    feeds[port.name] = state[port.name]
            values = dict(zip(names, session.run(names, feeds), strict=True))
            state.update({k: v for k, v in values.items() if k.startswith("state_")})
            if number < layers:
                observed.append((values[STATS_OUTPUTS[0]], values[STATS_OUTPUTS[1]]))
            else:
                results.append((values[MOMENTS[0]], values[MOMENTS[1]]))
        if number < layers:
            mean[layers_of[number]] = sum(w * o[0] for w, o in zip(weights, observed, strict=True))
            var[layers_of[number]] = sum(w * o[1] for w, o in zip(weights, observed, strict=True))
    return results


def write_encoder_segments(bundle: Path, check: bool = True) -> Dict:
    """Writes ``vae_encoder/segments/NN.onnx`` from the bundle's ``vae_encoder/tiled.onnx``; returns the
    manifest entry ``vae_encoder_segments``.  ``check``: the segments over one tile must give what the
    tiled graph gives with each GroupNorm's own statistics."""
    import shutil

    from .manifest import read_manifest, sha256_file

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    tiled = manifest["components"].get("vae_encoder_tiled")
    if tiled is None:
        raise ValueError(f"{bundle}: no vae_encoder_tiled component (exported with --no-tiled-vae?)")
    model = onnx.load(str(bundle / tiled["file"]), load_external_data=True)
    segments = split(model)
    models = segment_models(model, segments)
    out_dir = bundle / SEGMENTS_DIR
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    entries = []
    for number, (segment_model, segment) in enumerate(zip(models, segments, strict=True)):
        rel = f"{SEGMENTS_DIR}/{number:02d}.onnx"
        onnx.save_model(segment_model, str(bundle / rel))
        entries.append({
            **({"layer": segment.layer} if segment.layer is not None else {}),
            "file": rel,
            "sha256": sha256_file(bundle / rel),
            "inputs": [i.name for i in segment_model.graph.input],
            "outputs": [o.name for o in segment_model.graph.output],
        })
    entry = {"group_norm": dict(tiled["group_norm"]), "segments": entries}
    if check:
        error = check_segments(bundle, entry, tiled)
        if not error <= (1e-2 if manifest["precision"] == "fp16" else 1e-4):
            raise ValueError(f"{bundle}: encoder segments differ from vae_encoder_tiled by {error:.3g}")
    return entry


def check_segments(bundle: Path, entry: Dict, tiled: Dict, size: int = 64, seed: int = 0) -> float:
    """Largest difference between the segments and the tiled graph (own statistics) on one image."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(bundle / s["file"]), options, providers=["CPUExecutionProvider"])
                for s in entry["segments"]]
    whole = ort.InferenceSession(str(bundle / tiled["file"]), options, providers=["CPUExecutionProvider"])
    float_type = np.float16 if whole.get_inputs()[0].type == "tensor(float16)" else np.float32
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (1, 3, size, size)).astype(float_type)
    timestep = np.array([500], np.int64)
    layers, groups = entry["group_norm"]["layers"], entry["group_norm"]["groups"]
    expected = whole.run(["latent_mean", "latent_logvar"], {
        "image": image, "timestep": timestep, "group_norm_mean": np.zeros((layers, groups), np.float32),
        "group_norm_var": np.ones((layers, groups), np.float32), "group_norm_fixed": np.zeros(1, np.float32)})
    (got,) = run_segments(sessions, [s.get("layer") for s in entry["segments"]], image, timestep)
    return max(float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())
               for a, b in zip(got, expected, strict=True))


def add_to_bundle(bundle: Path, quiet: bool = False) -> Dict:
    """Writes the segments into ``bundle`` and its manifest."""
    from .manifest import read_manifest, write_manifest

    entry = write_encoder_segments(bundle)
    manifest = read_manifest(bundle)
    manifest["vae_encoder_segments"] = entry
    write_manifest(bundle, manifest)
    if not quiet:
        print(f"{bundle}: {len(entry['segments'])} encoder segments written")
    return entry


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.encoder_segments", description=__doc__.split("\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle folders with vae_encoder/tiled.onnx")
    args = parser.parse_args(argv)
    for bundle in args.bundles:
        add_to_bundle(bundle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
