"""VAE graphs for tiled runs that share one set of GroupNorm statistics.

Run over tiles, every GroupNorm of the VAE normalizes with the mean and
variance of its tile instead of those of the whole image, so neighbouring
tiles disagree (tile-wise color and contrast shifts).  The graphs here take
the statistics as inputs instead, so that every tile of an image is
normalized alike, and they also give the statistics their own input produced:

``vae_encoder/tiled.onnx``
    image [B,3,H,W], timestep [B] int64, group_norm_mean [K,G] float32,
    group_norm_var [K,G] float32, group_norm_fixed [1] float32
    -> latent_mean, latent_logvar, group_norm_mean_out [K,G] float32,
    group_norm_var_out [K,G] float32

``vae_decoder/tiled.onnx``
    latent [B,4,h,w] (scaled, like the main decoder), group_norm_mean,
    group_norm_var, group_norm_fixed -> image, group_norm_mean_out,
    group_norm_var_out

``group_norm_fixed`` = 0: every GroupNorm uses the statistics of its own input
(the math of the main graph; the ``group_norm_mean``/``group_norm_var`` inputs
are ignored).  ``group_norm_fixed`` = 1: every GroupNorm uses row k of the
inputs.  ``group_norm_*_out`` hold, per layer k (in the graph's own fixed
order) and group g, the mean and biased variance of what that GroupNorm got,
over the spatial positions and channels of the group (pooled over the batch).

The runtime (src/pipeline.rs) runs a tiled graph once with
``group_norm_fixed = 0`` on a nearest-neighbour subsample of the whole input
that fits one tile, then over every tile with ``group_norm_fixed = 1`` and
those statistics (the "fast" estimate of the Tiled VAE of the
multidiffusion-upscaler project, from a subsample rather than an area
average).  Statistics are computed in float32 whatever the graph's dtype.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .model import TimeAwareAutoencoderKL, finish_decode, finish_encode
from .precise_norm import rowwise_group_stats


class _Context:
    """State shared by the GroupNorms of one graph during a forward pass."""

    def __init__(self, layers: int):
        self.layers = layers
        self.mean: Optional[torch.Tensor] = None
        self.var: Optional[torch.Tensor] = None
        self.fixed: Optional[torch.Tensor] = None
        self.observed: List[Optional[Tuple[torch.Tensor, torch.Tensor]]] = [None] * layers

    def begin(self, mean: torch.Tensor, var: torch.Tensor, fixed: torch.Tensor) -> None:
        self.mean, self.var, self.fixed = mean, var, fixed
        self.observed = [None] * self.layers

    def end(self) -> Tuple[torch.Tensor, torch.Tensor]:
        missing = [k for k, seen in enumerate(self.observed) if seen is None]
        if missing:
            raise RuntimeError(f"GroupNorm layers {missing} did not run")
        means = torch.stack([seen[0] for seen in self.observed])
        variances = torch.stack([seen[1] for seen in self.observed])
        self.mean = self.var = self.fixed = None
        return means, variances


class SharedStatsGroupNorm(nn.Module):
    """``nn.GroupNorm`` whose statistics can come from outside (layer ``index`` of the context)."""

    def __init__(self, norm: nn.GroupNorm, index: int, context: _Context):
        super().__init__()
        if not norm.affine:
            raise ValueError("SharedStatsGroupNorm needs an affine GroupNorm")
        self.num_groups = norm.num_groups
        self.num_channels = norm.num_channels
        self.eps = norm.eps
        self.weight = norm.weight
        self.bias = norm.bias
        self.index = index
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        groups = self.num_groups
        per_group = self.num_channels // groups
        grouped = x.reshape(x.shape[0], groups, per_group, -1)
        # row by row, as precise_norm explains (ONNX Runtime's long float32 sums)
        row_mean, row_var, _ = rowwise_group_stats(x, groups)
        own_mean, own_var = row_mean[:, :, 0, 0], row_var[:, :, 0, 0]
        pooled_mean = own_mean.mean(dim=0)
        pooled_var = own_var.mean(dim=0) + (own_mean - pooled_mean).square().mean(dim=0)
        ctx.observed[self.index] = (pooled_mean, pooled_var)

        fixed = ctx.fixed
        mean = fixed * ctx.mean[self.index] + (1.0 - fixed) * own_mean
        var = fixed * ctx.var[self.index] + (1.0 - fixed) * own_var
        # y = x * scale + shift per (group, channel), from float32 statistics and affine parameters
        weight = self.weight.reshape(groups, per_group, 1)
        bias = self.bias.reshape(groups, per_group, 1)
        if weight.dtype != torch.float32:
            weight, bias = weight.float(), bias.float()
        scale = torch.rsqrt(var + self.eps)[:, :, None, None] * weight
        shift = bias - mean[:, :, None, None] * scale
        if x.dtype != torch.float32:
            scale, shift = scale.to(x.dtype), shift.to(x.dtype)
        return (grouped * scale + shift).reshape(x.shape)


def install_shared_stats(module: nn.Module) -> Tuple[_Context, int]:
    """Replace every ``nn.GroupNorm`` under ``module`` (in ``named_modules`` order). Returns (context, groups)."""
    targets = [(name, sub) for name, sub in module.named_modules() if isinstance(sub, nn.GroupNorm)]
    if not targets:
        raise ValueError("no GroupNorm to replace")
    groups = {sub.num_groups for _, sub in targets}
    if len(groups) != 1:
        raise ValueError(f"GroupNorm layers have different group counts {sorted(groups)}")
    context = _Context(len(targets))
    for index, (name, norm) in enumerate(targets):
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, SharedStatsGroupNorm(norm, index, context))
    return context, groups.pop()


class TiledVaeEncoderGraph(nn.Module):
    """The time-aware encoder (+ quant_conv) with shared GroupNorm statistics."""

    def __init__(self, vae: TimeAwareAutoencoderKL):
        super().__init__()
        self.encoder = copy.deepcopy(vae.encoder)
        self.quant_conv = copy.deepcopy(vae.quant_conv)
        self.mean_scale = vae.mean_scale
        self.shortcuts = copy.deepcopy(vae.shortcuts)
        self.context, self.groups = install_shared_stats(self.encoder)
        self.layers = self.context.layers

    def forward(self, image, timestep, group_norm_mean, group_norm_var, group_norm_fixed):
        self.context.begin(group_norm_mean, group_norm_var, group_norm_fixed)
        moments = self.quant_conv(self.encoder(image, timestep))
        mean, logvar = torch.chunk(moments, 2, dim=1)
        stats_mean, stats_var = self.context.end()
        mean, logvar = finish_encode(mean, logvar, image, timestep, self.mean_scale, self.shortcuts)
        return mean, logvar, stats_mean, stats_var


class TiledVaeDecoderGraph(nn.Module):
    """post_quant_conv + decoder on a scaled latent, with shared GroupNorm statistics."""

    def __init__(self, vae: TimeAwareAutoencoderKL, scaling_factor: Optional[float] = None):
        super().__init__()
        self.decoder = copy.deepcopy(vae.decoder)
        self.post_quant_conv = copy.deepcopy(vae.post_quant_conv)
        self.shortcuts = copy.deepcopy(vae.shortcuts)
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else vae.config.scaling_factor)
        self.context, self.groups = install_shared_stats(self.decoder)
        self.layers = self.context.layers

    def forward(self, latent, group_norm_mean, group_norm_var, group_norm_fixed):
        self.context.begin(group_norm_mean, group_norm_var, group_norm_fixed)
        unscaled = latent / self.scaling_factor
        image = finish_decode(self.decoder(self.post_quant_conv(unscaled)), unscaled, self.shortcuts)
        stats_mean, stats_var = self.context.end()
        return image, stats_mean, stats_var


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------

TILED_COMPONENTS = {"vae_encoder_tiled": "vae_encoder/tiled.onnx", "vae_decoder_tiled": "vae_decoder/tiled.onnx"}


def tiled_specs(float_dtype: torch.dtype, encoder_layers: int, decoder_layers: int, groups: int,
                latent_channels: int = 4) -> Dict[str, Dict[str, List[Dict]]]:
    """Inputs and outputs of the two tiled graphs (docs/bundle-format.md)."""
    from .onnx_export import io_spec

    lat = ["batch", latent_channels, "latent_height", "latent_width"]
    img = ["batch", 3, "height", "width"]

    def stats_ports(layers, suffix=""):
        return [io_spec(f"group_norm_mean{suffix}", torch.float32, [layers, groups], "KG"),
                io_spec(f"group_norm_var{suffix}", torch.float32, [layers, groups], "KG")]

    def stats_inputs(layers):
        return stats_ports(layers) + [io_spec("group_norm_fixed", torch.float32, [1], "1")]

    return {
        "vae_encoder_tiled": {
            "inputs": [io_spec("image", float_dtype, img, "NCHW"),
                       io_spec("timestep", torch.int64, ["batch"], "N")] + stats_inputs(encoder_layers),
            "outputs": [io_spec("latent_mean", float_dtype, lat, "NCHW"),
                        io_spec("latent_logvar", float_dtype, lat, "NCHW")] + stats_ports(encoder_layers, "_out"),
        },
        "vae_decoder_tiled": {
            "inputs": [io_spec("latent", float_dtype, lat, "NCHW")] + stats_inputs(decoder_layers),
            "outputs": [io_spec("image", float_dtype, img, "NCHW")] + stats_ports(decoder_layers, "_out"),
        },
    }


def tiled_graphs(models, dtype: torch.dtype = torch.float32) -> Dict[str, nn.Module]:
    graphs = {"vae_encoder_tiled": TiledVaeEncoderGraph(models.vae),
              "vae_decoder_tiled": TiledVaeDecoderGraph(models.vae, models.scaling_factor)}
    return {name: (graph.to(dtype) if dtype != torch.float32 else graph).eval() for name, graph in graphs.items()}


def trace_inputs(component: str, graph: nn.Module, float_dtype: torch.dtype, seed: int = 0,
                 latent_channels: int = 4) -> Tuple:
    from .onnx_export import trace_inputs as main_trace_inputs

    main = main_trace_inputs(component.replace("_tiled", ""), float_dtype, 32, seed, latent_channels)
    return tuple(main) + no_stats(graph)


def export_tiled_vae(models, out: Path, dtype: torch.dtype) -> Dict[str, Dict]:
    """Write vae_encoder/tiled.onnx and vae_decoder/tiled.onnx; returns their manifest entries."""
    from .manifest import component_entry
    from .onnx_export import export_graph

    graphs = tiled_graphs(models, dtype)
    enc, dec = graphs["vae_encoder_tiled"], graphs["vae_decoder_tiled"]
    if enc.groups != dec.groups:
        raise ValueError(f"encoder and decoder GroupNorms differ in groups ({enc.groups} vs {dec.groups})")
    latent_channels = int(models.vae.config.latent_channels)
    specs = tiled_specs(dtype, enc.layers, dec.layers, enc.groups, latent_channels)
    entries = {}
    for component, graph in graphs.items():
        rel = TILED_COMPONENTS[component]
        data_files = export_graph(graph, trace_inputs(component, graph, dtype, latent_channels=latent_channels),
                                  specs[component], out / rel)
        extra = {"latent_input": "scaled"} if component == "vae_decoder_tiled" else {}
        extra["group_norm"] = {"layers": graph.layers, "groups": graph.groups}
        entries[component] = component_entry(out, rel, data_files, specs[component], extra)
    return entries


def no_stats(graph: nn.Module) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, var, fixed) inputs that make a tiled graph use each GroupNorm's own statistics."""
    shape = (graph.layers, graph.groups)
    return torch.zeros(shape), torch.ones(shape), torch.zeros(1)


def fixed_stats(mean: torch.Tensor, var: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return mean.float(), var.float(), torch.ones(1)


__all__ = ["SharedStatsGroupNorm", "TiledVaeEncoderGraph", "TiledVaeDecoderGraph", "install_shared_stats",
           "TILED_COMPONENTS", "tiled_specs", "tiled_graphs", "export_tiled_vae", "no_stats", "fixed_stats"]
