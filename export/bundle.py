"""Write a bundle folder (docs/bundle-format.md) from a :class:`TadsrModels`."""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from .manifest import PROMPT_EMBEDS_NAME, build_manifest, component_entry, sha256_file, write_manifest
from .model import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS, TadsrModels
from .onnx_export import (
    FLOAT_DTYPES,
    component_specs,
    export_graph,
    max_abs_diff,
    ort_session,
    trace_inputs,
)
from .ort_fusions import FUSIONS
from .tiled_vae import no_stats

COMPONENT_DIRS = ("vae_encoder", "unet", "vae_decoder", "text_encoder", "tokenizer")


def _clear_bundle(out: Path) -> None:
    """Remove what an earlier export wrote (golden/ and anything else stay)."""
    for name in COMPONENT_DIRS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in ("manifest.json", PROMPT_EMBEDS_NAME):
        if (out / name).exists():
            (out / name).unlink()


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _graph_module(models: TadsrModels, component: str, dtype: torch.dtype):
    if component == "vae_encoder":
        module = models.encoder_graph()
    elif component == "unet":
        module = models.unet_graph()
    else:
        module = models.decoder_graph()
    if dtype != torch.float32:
        module = copy.deepcopy(module).to(dtype)
    return module.eval()


def export_bundle(models: TadsrModels, out: Path, precision: str = "fp32", name: Optional[str] = None,
                  text_encoder: bool = False, verify: bool = True, quiet: bool = False,
                  tiled_vae: bool = True, measure_memory: bool = True, group_norm: str = "rowwise",
                  attention: str = "onnx", fusions: str = "none") -> Dict:
    """Export the graphs, the prompt embedding and the manifest into ``out``. Returns the manifest.

    ``tiled_vae``: also write the optional VAE graphs with shared GroupNorm
    statistics (vae_encoder/tiled.onnx, vae_decoder/tiled.onnx) for tiled runs.
    ``measure_memory``: measure each graph's memory with ONNX Runtime and record
    it in the manifest's ``memory`` (export/memory.py; a few seconds for tiny).
    ``group_norm``: how the three main graphs' GroupNorms are written
    (``onnx_export.export_graph``; recorded in the manifest's provenance). The
    tiled VAE graphs always take row-by-row statistics (they share them).
    ``attention``: ``onnx`` or ``fused`` (one com.microsoft.MultiHeadAttention
    node per attention, ``fused_attention``) in the three main graphs; recorded
    in the provenance too.
    ``fusions``: ``none``, or ``cuda``: the three main graphs rewritten with
    ONNX Runtime's CUDA fusions (``ort_fusions``; needs the instance and fused
    forms): traced in float32, fused, then converted to ``precision``. Such
    graphs run on CUDA only, so the ONNX Runtime CPU check against PyTorch and
    the memory measurement leave them out (``tadsr-edge golden --provider
    cuda`` checks them on a GPU); recorded in the provenance.
    """
    if precision not in FLOAT_DTYPES:
        raise ValueError(f"precision must be one of {sorted(FLOAT_DTYPES)}, not {precision!r}")
    dtype = FLOAT_DTYPES[precision]
    if fusions not in FUSIONS:
        raise ValueError(f"fusions must be one of {FUSIONS}, not {fusions!r}")
    cuda_fused = fusions == "cuda"
    if cuda_fused and (group_norm != "instance" or attention != "fused"):
        raise ValueError("--fusions cuda needs --group-norm instance --attention fused (the forms ONNX Runtime's "
                         f"fuser recognizes), not --group-norm {group_norm} --attention {attention}")
    trace_dtype = torch.float32 if cuda_fused else dtype
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_bundle(out)
    latent_channels = models.latent_channels
    specs = component_specs(dtype, models.cross_attention_dim, latent_channels)

    components = {}
    for component in ("vae_encoder", "unet", "vae_decoder"):
        started = time.time()
        module = _graph_module(models, component, trace_dtype)
        rel = f"{component}/model.onnx"
        fused_counts: Dict[str, int] = {}
        data_files = export_graph(module, trace_inputs(component, trace_dtype, models.cross_attention_dim,
                                                       latent_channels=latent_channels),
                                  specs[component], out / rel, group_norm=group_norm,
                                  attention=attention, cuda_fusions=component if cuda_fused else None,
                                  fp16_after_fusing=dtype == torch.float16, fused_counts=fused_counts)
        extra = {"latent_input": "scaled"} if component == "vae_decoder" else None
        components[component] = component_entry(out, rel, data_files, specs[component], extra)
        size = sum(p.stat().st_size for p in [out / rel, *data_files])
        _log(f"  {component}: {size / 1e6:.1f} MB in {time.time() - started:.1f} s"
             + (f"; fused: {', '.join(f'{n} {op}' for op, n in fused_counts.items())}" if fused_counts else ""), quiet)
        del module

    if tiled_vae:
        from .tiled_vae import export_tiled_vae

        started = time.time()
        components.update(export_tiled_vae(models, out, dtype))
        _log(f"  vae_encoder_tiled, vae_decoder_tiled: {time.time() - started:.1f} s", quiet)

    if text_encoder:
        if models.text_encoder is None or models.tokenizer is None:
            raise SystemExit("--text-encoder: the checkpoint has no text_encoder/ and tokenizer/")
        from .text_encoder import export_text_encoder

        started = time.time()
        components["text_encoder"] = export_text_encoder(models, out, dtype)
        _log(f"  text_encoder: {time.time() - started:.1f} s", quiet)

    embeds = models.prompt_embeds.detach().to(torch.float32).cpu().numpy()
    expected = (1, 77, models.cross_attention_dim)
    if tuple(embeds.shape) != expected:
        raise SystemExit(f"prompt embeds have shape {list(embeds.shape)}, expected {list(expected)}")
    np.save(out / PROMPT_EMBEDS_NAME, np.ascontiguousarray(embeds), allow_pickle=False)

    schedule = models.schedule or {"type": "scaled_linear", "beta_start": BETA_START, "beta_end": BETA_END,
                                   "num_train_timesteps": NUM_TRAIN_TIMESTEPS}
    manifest = build_manifest(
        name=name or models.config_name,
        precision=precision,
        components=components,
        cross_attention_dim=models.cross_attention_dim,
        scaling_factor=models.scaling_factor,
        schedule=schedule,
        alphas_cumprod=models.alphas_cumprod.to(torch.float32).tolist(),
        prompt_sha256=sha256_file(out / PROMPT_EMBEDS_NAME),
        prompt_shape=embeds.shape,
        prompt_text=models.prompt_text,
        source=models.source,
        latent_channels=latent_channels,
    )
    manifest["provenance"]["group_norm"] = group_norm
    manifest["provenance"]["attention"] = attention
    manifest["provenance"]["fusions"] = fusions
    if cuda_fused:
        import onnxruntime

        # the fuser's version decides the fused graph
        manifest["provenance"]["onnxruntime"] = onnxruntime.__version__
    write_manifest(out, manifest)
    if tiled_vae:
        from .encoder_segments import write_encoder_segments

        started = time.time()
        manifest["vae_encoder_segments"] = write_encoder_segments(out)
        write_manifest(out, manifest)
        _log(f"  vae_encoder_segments: {len(manifest['vae_encoder_segments']['segments'])} in "
             f"{time.time() - started:.1f} s", quiet)
    if cuda_fused and verify:
        _log("  the CUDA-fused graphs have operators ONNX Runtime runs on CUDA only: no CPU check against PyTorch "
             "for them (check them on a GPU: tadsr-edge golden --provider cuda)", quiet)
    if verify:
        errors = verify_against_torch(models, out, precision, main_graphs=not cuda_fused)
        for comp, err in errors.items():
            _log(f"  check {comp}: max abs error vs PyTorch {err:.2e}", quiet)
    if measure_memory:
        from .memory import memory_lines, record_bundle_memory

        started = time.time()
        if cuda_fused:
            manifest["memory"] = _unfused_twin_memory(models, precision)
            write_manifest(out, manifest)
        else:
            manifest["memory"] = record_bundle_memory(out, quiet=True)
        for line in memory_lines(manifest["memory"]):
            _log(f"  memory {line}", quiet)
        _log(f"  memory measured in {time.time() - started:.1f} s", quiet)
    return manifest


def _unfused_twin_memory(models: TadsrModels, precision: str) -> Dict:
    """Memory figures for a --fusions cuda bundle, whose graphs ONNX Runtime's
    CPU cannot open: measured on the same graphs exported without the fusions
    (same forms and precision) in a temporary folder, and said so in
    ``measured_with``. The runtime's --tile auto then plans these bundles as
    it plans the others."""
    import tempfile

    from .memory import measure_bundle_memory

    with tempfile.TemporaryDirectory(prefix="tadsr-unfused-twin-") as tmp:
        export_bundle(models, Path(tmp), precision=precision, quiet=True, verify=False, tiled_vae=False,
                      measure_memory=False, group_norm="instance", attention="fused")
        memory = measure_bundle_memory(Path(tmp), quiet=True)
    memory["measured_with"] += "; on the same graphs exported without --fusions (the CPU cannot open the fused ones)"
    return memory


@torch.no_grad()
def _verify_main_graphs(models: TadsrModels, bundle: Path, np_dtype, image, t, latent, ehs) -> Dict[str, float]:
    """The three main graphs on ONNX Runtime's CPU against the fp32 PyTorch model: max abs error each."""
    errors = {}
    sess = ort_session(bundle / "vae_encoder/model.onnx")
    got = sess.run(None, {"image": image.numpy().astype(np_dtype), "timestep": t.numpy()})
    want = models.encoder_graph()(image, t)
    errors["vae_encoder"] = max(max_abs_diff(g, w_) for g, w_ in zip(got, want, strict=True))
    sess = ort_session(bundle / "unet/model.onnx")
    got = sess.run(None, {"latent": latent.numpy().astype(np_dtype), "timestep": t.numpy(),
                          "encoder_hidden_states": ehs.numpy().astype(np_dtype)})
    errors["unet"] = max_abs_diff(got[0], models.unet_graph()(latent, t, ehs))
    sess = ort_session(bundle / "vae_decoder/model.onnx")
    got = sess.run(None, {"latent": latent.numpy().astype(np_dtype)})
    errors["vae_decoder"] = max_abs_diff(got[0], models.decoder_graph()(latent))
    return errors


@torch.no_grad()
def verify_against_torch(models: TadsrModels, bundle: Path, precision: str, latent_hw=(12, 9), seed: int = 0,
                         main_graphs: bool = True) -> Dict[str, float]:
    """Run each graph once on random inputs (ORT, CPU) and compare with the fp32 PyTorch model
    (``main_graphs`` False: the tiled VAE graphs only)."""
    np_dtype = np.float32 if precision == "fp32" else np.float16
    gen = torch.Generator().manual_seed(seed)
    h, w = latent_hw
    image = torch.rand(1, 3, 8 * h, 8 * w, generator=gen) * 2 - 1
    t = torch.tensor([321], dtype=torch.int64)
    latent = torch.randn(1, models.latent_channels, h, w, generator=gen)
    ehs = torch.randn(1, 77, models.cross_attention_dim, generator=gen)
    errors = {}
    sess = None
    if main_graphs:
        errors.update(_verify_main_graphs(models, bundle, np_dtype, image, t, latent, ehs))
    if (bundle / "vae_encoder/tiled.onnx").is_file():
        from .tiled_vae import tiled_graphs

        graphs = tiled_graphs(models)
        for component, feeds in (("vae_encoder_tiled", {"image": image, "timestep": t}),
                                 ("vae_decoder_tiled", {"latent": latent})):
            graph = graphs[component]
            own_mean, own_var = graph(*feeds.values(), *no_stats(graph))[-2:]
            # fixed statistics other than the input's own, so that the check differs from the main graph's
            stats = {"group_norm_mean": own_mean * 0.5 + 0.1, "group_norm_var": own_var * 2.0,
                     "group_norm_fixed": torch.ones(1)}
            want = graph(*feeds.values(), *stats.values())
            sess = ort_session(bundle / f"{component[:-len('_tiled')]}/tiled.onnx")
            ort_feeds = {k: v.numpy() for k, v in {**feeds, **stats}.items()}
            for key in ("image", "latent"):
                if key in ort_feeds:
                    ort_feeds[key] = ort_feeds[key].astype(np_dtype)
            got = sess.run(None, ort_feeds)
            errors[component] = max(max_abs_diff(g, w_) for g, w_ in zip(got, want, strict=True))
    del sess
    return errors
