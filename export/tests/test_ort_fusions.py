"""Bundles exported with --fusions cuda (export/ort_fusions.py): ONNX Runtime's fuser rewrote every GroupNorm,
convolution and attention of the three main graphs into its CUDA operators, the ports are still the bundle
format's, float16 bundles keep GroupNorm's scale and shift in float32, ONNX Runtime's CPU cannot open them, and
the binary refuses them on the CPU with a one-line reason (exit 2, nothing written).

Their numbers can only be checked on a GPU: scripts/gpu_quick_check.sh runs the golden cases of a tiny
--fusions cuda bundle on CUDA against the PyTorch references."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx_export import component_specs
from export.ort_fusions import CUDA_ONLY_OPS, operator_counts
from export.tests.binary import BIN, needs_binary

REPO = Path(__file__).resolve().parents[2]
MAIN_GRAPHS = ("vae_encoder", "unet", "vae_decoder")


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def fused_bundle(request, tmp_path_factory, tiny_models):
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp(f"tiny_fused_{request.param}")
    # fp32 is the whole export (tiled VAE graphs, memory figures); fp16 the main graphs, where the precisions differ
    whole = request.param == "fp32"
    export_bundle(tiny_models, out, precision=request.param, name="tiny-fused", quiet=True, tiled_vae=whole,
                  measure_memory=whole, group_norm="instance", attention="fused", fusions="cuda")
    return request.param, out


def _unfused_export(tmp_path_factory, tiny_models, precision: str):
    """The GPU forms (instance GroupNorm, fused attention) without the fuser, main graphs only."""
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp(f"tiny_unfused_{precision}")
    export_bundle(tiny_models, out, precision=precision, quiet=True, verify=False, tiled_vae=False,
                  measure_memory=False, group_norm="instance", attention="fused")
    return out


@pytest.fixture(scope="module")
def unfused_bundle(tmp_path_factory, tiny_models):
    """The nodes the fuser starts from."""
    return _unfused_export(tmp_path_factory, tiny_models, "fp32")


def test_every_group_norm_conv_and_attention_is_fused_or_kept(fused_bundle, unfused_bundle):
    _, bundle = fused_bundle
    for component in MAIN_GRAPHS:
        before = operator_counts(onnx.load(str(unfused_bundle / component / "model.onnx")))
        ops = operator_counts(onnx.load(str(bundle / component / "model.onnx")))
        fused_norms = ops.get("com.microsoft.GroupNorm", 0) + ops.get("com.microsoft.SkipGroupNorm", 0)
        # a GroupNorm the fuser could not match stays an InstanceNormalization: none is lost or doubled
        assert fused_norms + ops.get("InstanceNormalization", 0) == before["InstanceNormalization"], component
        assert fused_norms >= before["InstanceNormalization"] - 1, f"{component}: {ops}"
        assert ops.get("Conv", 0) == 0, f"{component}: a convolution was left in NCHW"
        assert ops["com.microsoft.NhwcConv"] == before["Conv"], component
        assert ops["com.microsoft.MultiHeadAttention"] == before["com.microsoft.MultiHeadAttention"], component
        if component == "unet":
            for op in ("BiasSplitGelu", "SkipLayerNormalization"):
                assert ops.get(f"com.microsoft.{op}", 0) > 0, op


@pytest.fixture(scope="module")
def torch_half_bundle(tmp_path_factory, tiny_models):
    """PyTorch's own float16 export in the same forms: the precision a float16 graph should keep."""
    return _unfused_export(tmp_path_factory, tiny_models, "fp16")


def test_the_float16_conversion_keeps_pytorchs_float16_precision(tiny_models, unfused_bundle, torch_half_bundle,
                                                                  tmp_path):
    """The converter the fused graphs go through (float16_graph), applied to the same graphs unfused (which the
    CPU can run): against the float32 PyTorch model, at most twice the error of PyTorch's own float16 export, at
    every timestep. Without the float32 timestep embeddings the encoder is 2.9x off at t = 999 (measured)."""
    import numpy as np

    from export.onnx_export import max_abs_diff, ort_session
    from export.ort_fusions import float16_graph, sinusoid_nodes

    sessions = {}
    for component in ("vae_encoder", "unet"):
        fp32 = onnx.load(str(unfused_bundle / component / "model.onnx"))
        assert {n.op_type for n in fp32.graph.node if n.name in sinusoid_nodes(fp32)} >= {"Sin", "Cos"}
        onnx.save(float16_graph(fp32), str(tmp_path / f"{component}.onnx"))
        sessions[component] = (ort_session(tmp_path / f"{component}.onnx"),
                               ort_session(torch_half_bundle / component / "model.onnx"))
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 96, 72, generator=gen) * 2 - 1
    latent = torch.randn(1, 4, 12, 9, generator=gen)
    ehs = torch.randn(1, 77, tiny_models.cross_attention_dim, generator=gen)
    half = {"image": image.numpy().astype(np.float16), "latent": latent.numpy().astype(np.float16),
            "encoder_hidden_states": ehs.numpy().astype(np.float16)}
    with torch.no_grad():
        for t in (1, 250, 500, 750, 999):
            timestep = torch.tensor([t])
            wants = {"vae_encoder": tiny_models.encoder_graph()(image, timestep)[0].numpy(),
                     "unet": tiny_models.unet_graph()(latent, timestep, ehs).numpy()}
            for component, (converted, torch_half) in sessions.items():
                feeds = {i.name: half.get(i.name, timestep.numpy()) for i in converted.get_inputs()}
                ours = max_abs_diff(converted.run(None, feeds)[0], wants[component])
                theirs = max_abs_diff(torch_half.run(None, feeds)[0], wants[component])
                assert ours <= 2 * theirs, f"{component} t={t}: {ours:.2e} vs PyTorch float16 {theirs:.2e}"


def test_ports_are_the_bundle_formats(fused_bundle, tiny_models):
    precision, bundle = fused_bundle
    from export.onnx_export import FLOAT_DTYPES

    specs = component_specs(FLOAT_DTYPES[precision], tiny_models.cross_attention_dim, tiny_models.latent_channels)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["provenance"]["fusions"] == "cuda"
    assert manifest["provenance"]["group_norm"] == "instance" and manifest["provenance"]["attention"] == "fused"
    for component in MAIN_GRAPHS:
        model = onnx.load(str(bundle / component / "model.onnx"))
        ports = [(v.name, onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                  [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                 for v in [*model.graph.input, *model.graph.output]]
        want = [(e["name"], e["dtype"], e["shape"]) for e in specs[component]["inputs"] + specs[component]["outputs"]]
        assert ports == want, component
        assert [(e["name"], e["dtype"]) for e in manifest["components"][component]["inputs"]] == \
            [(e["name"], e["dtype"]) for e in specs[component]["inputs"]]


@pytest.mark.parametrize("fused_bundle", ["fp32"], indirect=True)
def test_memory_figures_come_from_the_unfused_twin(fused_bundle):
    """--tile auto plans with the manifest's memory figures; the fused graphs cannot be measured on the CPU."""
    _, bundle = fused_bundle
    memory = json.loads((bundle / "manifest.json").read_text())["memory"]
    assert set(memory["components"]) == set(MAIN_GRAPHS)
    assert "without --fusions" in memory["measured_with"]
    for component in MAIN_GRAPHS:
        figures = memory["components"][component]
        assert figures["weights_bytes"] > 0 and all(b > 0 for _, b in figures["activations"]), component


def test_fp16_keeps_group_norm_scale_and_shift_in_float32(fused_bundle):
    precision, bundle = fused_bundle
    if precision != "fp16":
        pytest.skip("float16 bundles only")
    model = onnx.load(str(bundle / "unet" / "model.onnx"))
    initializers = {init.name: init.data_type for init in model.graph.initializer}
    norms = [n for n in model.graph.node if n.op_type in ("GroupNorm", "SkipGroupNorm")]
    assert norms
    for node in norms:
        assert [initializers.get(name) for name in node.input[1:3]] == [onnx.TensorProto.FLOAT] * 2, node.name
    weights = [init for init in model.graph.initializer if len(init.dims) == 4]
    assert weights and all(init.data_type == onnx.TensorProto.FLOAT16 for init in weights)


def test_onnx_runtime_cpu_cannot_open_them(fused_bundle):
    """Why the runtime checks the manifest before opening: the CPU provider has no kernel for these operators."""
    _, bundle = fused_bundle
    model = onnx.load(str(bundle / "unet" / "model.onnx"))
    assert {n.op_type for n in model.graph.node if n.domain == "com.microsoft"} & set(CUDA_ONLY_OPS)
    with pytest.raises(Exception, match="NOT_IMPLEMENTED|Could not find an implementation"):
        ort.InferenceSession(str(bundle / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])


@needs_binary
def test_the_binary_refuses_them_on_the_cpu_with_the_reason(fused_bundle, tmp_path):
    _, bundle = fused_bundle
    info = json.loads(subprocess.run([str(BIN), "info", "--model", str(bundle), "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["model"]["graph_forms"]["fusions"] == "cuda"
    out = tmp_path / "out"
    # auto runs it where CUDA is usable: the refusal is a machine's without one
    cuda_usable = any(p["name"] == "cuda" and p["usable"] for p in info["providers"])
    for provider in ("cpu",) if cuda_usable else ("cpu", "auto"):
        run = subprocess.run([str(BIN), "run", str(REPO / "examples" / "coffee.png"), "-o", f"{out}/",
                              "--model", str(bundle), "--provider", provider], capture_output=True, text=True)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "exported with --fusions cuda" in lines[0], run.stderr
        assert "run it with --provider cuda" in lines[0]
        assert "panicked" not in run.stderr
        assert not out.exists() or not any(out.iterdir())


def test_cpu_only_tools_refuse_them_by_name(fused_bundle, tmp_path, capsys):
    """export.memory measures and export.quantize calibrates with ONNX Runtime's CPU: both say why they cannot."""
    precision, bundle = fused_bundle
    from export.memory import main as memory_main
    from export.quantize import quantize_bundle

    assert memory_main(["--bundle", str(bundle), "--dry-run"]) == 2
    assert "exported with --fusions cuda" in capsys.readouterr().err
    if precision == "fp32":
        with pytest.raises(SystemExit, match="--fusions cuda"):
            quantize_bundle(bundle, tmp_path / "int8", calibration_images=[])
    from export.triton import write_repository

    with pytest.raises(SystemExit, match="--fusions cuda"):
        write_repository(bundle, tmp_path / "triton-python", variant="python")
    assert not (tmp_path / "triton-python").exists()


def test_a_graph_the_fuser_does_not_recognize_is_refused(repo):
    """models/tiny's decoder has row-by-row GroupNorms: the fuser can make its convolutions NHWC but fuses no
    GroupNorm. A bundle marked CUDA-only without its fusions would be the worst of both: refused."""
    from export.ort_fusions import FusionError, fuse_for_cuda

    with pytest.raises(FusionError, match="did not recognize.*0 GroupNorms fused.*export without --fusions"):
        fuse_for_cuda(repo / "models/tiny/vae_decoder/model.onnx", "vae_decoder", fp16=False)


def test_the_fp16_conversion_leaves_the_inputs_and_outputs_alone_but_the_embedding(fused_bundle):
    """Only the timestep embedding stays float32: no full-size input is cast up (a Shape of it needs no float32),
    and the Sin and Cos read float32."""
    precision, bundle = fused_bundle
    if precision != "fp16":
        pytest.skip("float16 bundles only")
    for component in ("vae_encoder", "unet"):
        model = onnx.load(str(bundle / component / "model.onnx"))
        float_ports = {v.name for v in model.graph.input if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
        assert float_ports
        casts = [n for n in model.graph.node if n.op_type == "Cast" and set(n.input) & float_ports]
        assert not casts, f"{component}: {[n.name for n in casts]}"
        assert all(n.name for n in model.graph.node), f"{component}: unnamed nodes"


def test_the_forms_it_needs_are_asked_for():
    from export.__main__ import main as export_main

    with pytest.raises(SystemExit) as exit_info:
        export_main(["--synthetic", "tiny", "--out", "/nonexistent/x", "--fusions", "cuda", "--group-norm", "rowwise"])
    assert exit_info.value.code == 2
