"""PyTorch reference of the TADSR test path (docs/bundle-format.md, spec steps 2-11).

    python -m export.reference --bundle-source models/tiny --image in.png --timestep 500 --out ref.npy

runs the PyTorch MODEL (not the ONNX graphs) in float32 and writes the
color-fixed image in [0, 1] as float32 [H, W, 3] (no 8-bit quantization).

``--bundle-source`` is a bundle folder (its manifest's provenance says how to
rebuild the model: a synthetic config + seed, or a checkpoint given with
``--weights``), a checkpoint folder (with ``tadsr.pkl``), or
``synthetic:CONFIG:SEED``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .model import TadsrModels

COLOR_FIXES = ("adain", "wavelet", "none")


# ---------------------------------------------------------------------------
# Pre-processing (spec steps 1-4)
# ---------------------------------------------------------------------------


def upscaled_input(image: Image.Image, upscale: int = 4, process_size: int = 512) -> Image.Image:
    """The image U: min-size rule, bicubic x upscale, crop-resize to multiples of 8 (Lanczos)."""
    image = image.convert("RGB")
    w, h = image.size
    short = process_size // upscale
    if w < short or h < short:
        scale = short / min(w, h)
        image = image.resize((int(scale * w), int(scale * h)), Image.BICUBIC)
    image = image.resize((image.size[0] * upscale, image.size[1] * upscale), Image.BICUBIC)
    width = image.size[0] - image.size[0] % 8
    height = image.size[1] - image.size[1] % 8
    return image.resize((width, height), Image.LANCZOS)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """[1, 3, H, W] float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None]


# ---------------------------------------------------------------------------
# Color fixes (spec step 11), on [1, 3, H, W] tensors in [0, 1]
# ---------------------------------------------------------------------------


def _mean_std(x: torch.Tensor, eps: float = 1e-5):
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    mean = flat.mean(dim=2).reshape(b, c, 1, 1)
    std = (flat.var(dim=2, unbiased=True) + eps).sqrt().reshape(b, c, 1, 1)
    return mean, std


def adain_fix(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    t_mean, t_std = _mean_std(target)
    s_mean, s_std = _mean_std(source)
    return ((target - t_mean) / t_std * s_std + s_mean).clamp(0.0, 1.0)


def _blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=x.dtype) / 16.0
    channels = x.shape[1]
    kernel = kernel[None, None].repeat(channels, 1, 1, 1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=radius)


def _wavelet_split(x: torch.Tensor, levels: int = 5):
    high = torch.zeros_like(x)
    for i in range(levels):
        low = _blur(x, 2 ** i)
        high = high + (x - low)
        x = low
    return high, x


def wavelet_fix(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    target_high, _ = _wavelet_split(target)
    _, source_low = _wavelet_split(source)
    return (target_high + source_low).clamp(0.0, 1.0)


def color_fix(kind: str, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    if kind == "adain":
        return adain_fix(target, source)
    if kind == "wavelet":
        return wavelet_fix(target, source)
    if kind == "none":
        return target.clamp(0.0, 1.0)
    raise ValueError(f"unknown color fix {kind!r}; expected one of {COLOR_FIXES}")


# ---------------------------------------------------------------------------
# The model part (spec steps 5-10)
# ---------------------------------------------------------------------------


def _tile_offsets(size: int, tile: int, overlap: int) -> List[int]:
    """The authors' offsets along one axis: steps of tile - overlap, the last flush with the edge."""
    if size <= tile:
        return [0]
    offsets = list(range(0, size - tile, tile - overlap))
    return offsets + [size - tile]


def _gaussian_tile_weights(tile: int) -> torch.Tensor:
    """The authors' UNet tile weights (spec, "Tiling in the authors' code"): numpy
    float64, midpoint (T-1)/2 along x but T/2 along y, stored as float32 [T, T]."""
    var = 0.01

    def profile(midpoint: float) -> np.ndarray:
        u = np.arange(tile, dtype=np.float64)
        return np.exp(-((u - midpoint) ** 2) / tile ** 2 / (2 * var)) / np.sqrt(2 * np.pi * var)

    return torch.from_numpy(np.outer(profile(tile / 2), profile((tile - 1) / 2)).astype(np.float32))


def unet_latent_tiled(unet, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor,
                      tile: int = 96, overlap: int = 32) -> torch.Tensor:
    """The authors' UNet latent tiling: whole while h * w <= tile^2, else square
    tiles of min(tile, h, w) with the given overlap (T / 2 where T <= overlap:
    their loop never ends there), Gaussian-weighted residuals, weighted mean."""
    _, _, h, w = z.shape
    if h * w <= tile * tile:
        return unet(z, t, embeds)
    side = min(tile, h, w)
    step_overlap = overlap if overlap < side else side // 2
    weights = _gaussian_tile_weights(side)
    total = torch.zeros(h, w)
    blended = torch.zeros_like(z)
    for y in _tile_offsets(h, side, step_overlap):
        for x in _tile_offsets(w, side, step_overlap):
            residual = unet(z[:, :, y:y + side, x:x + side], t, embeds)
            blended[:, :, y:y + side, x:x + side] += residual * weights
            total[y:y + side, x:x + side] += weights
    return blended / total


# The authors' tiled encoder: every call of their time-aware encoder goes through their tiled-VAE hook, which
# splits an image longer than 1024 + 2 x 32 px into tiles of up to 1024 px with 32 px of context and normalizes
# every GroupNorm with statistics pooled over the tiles, layer by layer (the pixel-weighted mean of the tiles'
# means and of their biased variances). Reached here as the runtime reaches it (src/pipeline/authors_encoder.rs),
# with this file's own geometry and pooling: passes of the shared-statistics encoder graph until the pooled
# statistics are a fixed point. scripts/authors_parity.py holds the runtime to their own code.
AUTHORS_VAE_TILE = 1024
AUTHORS_VAE_PAD = 32


def _best_tile_size(lower: int, upper: int) -> int:
    divider = 32
    while divider >= 2:
        if lower % divider == 0:
            return lower
        candidate = lower - lower % divider + divider
        if candidate <= upper:
            return candidate
        divider //= 2
    return lower


def authors_encoder_tiles(height: int, width: int) -> List[Tuple[List[int], List[int]]]:
    """[(padded input [x0, x1, y0, y1] in pixels, output [x0, x1, y0, y1] in latent cells)], row by row."""
    tile, pad = AUTHORS_VAE_TILE, AUTHORS_VAE_PAD
    rows = max(-(-(height - 2 * pad) // tile), 1)
    cols = max(-(-(width - 2 * pad) // tile), 1)
    tile_h = _best_tile_size(-(-(height - 2 * pad) // rows), tile)
    tile_w = _best_tile_size(-(-(width - 2 * pad) // cols), tile)
    tiles = []
    for i in range(rows):
        for j in range(cols):
            x0, x1 = pad + j * tile_w, min(pad + (j + 1) * tile_w, width)
            y0, y1 = pad + i * tile_h, min(pad + (i + 1) * tile_h, height)
            output = [x0 if x0 > pad else 0, x1 if x1 < width - pad else width,
                      y0 if y0 > pad else 0, y1 if y1 < height - pad else height]
            tiles.append(([max(0, x0 - pad), min(width, x1 + pad), max(0, y0 - pad), min(height, y1 + pad)],
                          [v // 8 for v in output]))
    return tiles


def authors_tiled_encode(models: TadsrModels, x: torch.Tensor, t: torch.Tensor):
    """(mean, logvar) of x [1, 3, H, W] as the authors' tiled encoder computes them."""
    from .tiled_vae import tiled_graphs

    graph = tiled_graphs(models)["vae_encoder_tiled"]
    _, _, height, width = x.shape
    tiles = authors_encoder_tiles(height, width)
    crops = [x[:, :, y0:y1, x0:x1] for (x0, x1, y0, y1), _ in tiles]
    pixels = torch.tensor([c.shape[2] * c.shape[3] for c in crops], dtype=torch.float32)
    weights = (pixels / pixels.max()) / (pixels / pixels.max()).sum()
    layers, groups = graph.layers, graph.groups
    mean = torch.zeros(layers, groups)
    var = torch.ones(layers, groups)
    fixed = torch.zeros(1)
    for _ in range(layers + 1):
        runs = [graph(crop, t, mean, var, fixed) for crop in crops]
        pooled_mean = sum(w * run[2] for w, run in zip(weights, runs, strict=True))
        pooled_var = sum(w * run[3] for w, run in zip(weights, runs, strict=True))
        done = bool(fixed.item()) and torch.equal(pooled_mean, mean) and torch.equal(pooled_var, var)
        mean, var, fixed = pooled_mean, pooled_var, torch.ones(1)
        if done:
            break
    moments = []
    for index in (0, 1):
        whole = torch.zeros(1, runs[0][index].shape[1], height // 8, width // 8)
        for ((ix0, _, iy0, _), (ox0, ox1, oy0, oy1)), run in zip(tiles, runs, strict=True):
            whole[:, :, oy0:oy1, ox0:ox1] = run[index][:, :, oy0 - iy0 // 8:oy1 - iy0 // 8,
                                                       ox0 - ix0 // 8:ox1 - ix0 // 8]
        moments.append(whole)
    return moments[0], moments[1]


@torch.no_grad()
def super_resolve(models: TadsrModels, upscaled: Image.Image, timestep: int, color: str = "adain",
                  noise: Optional[np.ndarray] = None, prompt_embeds: Optional[torch.Tensor] = None,
                  return_intermediates: bool = False, latent_tiling: bool = False):
    """Steps 5-11 on the image U. Returns float32 [H, W, 3] in [0, 1].
    ``latent_tiling``: the UNet runs in the authors' latent tiles (``unet_latent_tiled``)."""
    if not 0 <= int(timestep) < len(models.alphas_cumprod):
        raise ValueError(f"timestep {timestep} outside 0..{len(models.alphas_cumprod) - 1}")
    source = image_to_tensor(upscaled)
    x = source * 2.0 - 1.0
    t = torch.tensor([int(timestep)], dtype=torch.int64)
    embeds = (models.prompt_embeds if prompt_embeds is None else prompt_embeds).to(torch.float32)

    if latent_tiling and len(authors_encoder_tiles(x.shape[2], x.shape[3])) > 1:
        mean, logvar = authors_tiled_encode(models, x, t)
    else:
        mean, logvar = models.encoder_graph()(x, t)
    if noise is not None:
        noise_t = torch.from_numpy(np.asarray(noise, dtype=np.float32)).reshape(mean.shape)
        latent = mean + torch.exp(0.5 * logvar) * noise_t
    else:
        latent = mean
    z = latent * models.scaling_factor
    if latent_tiling:
        residual = unet_latent_tiled(models.unet_graph(), z, t, embeds)
    else:
        residual = models.unet_graph()(z, t, embeds)
    acp = models.alphas_cumprod.to(torch.float32)[int(timestep)]
    x0 = z / acp ** 0.5 - residual
    y = models.decoder_graph()(x0).clamp(-1.0, 1.0)
    y = y * 0.5 + 0.5
    fixed = color_fix(color, y, source)
    result = fixed[0].permute(1, 2, 0).contiguous().numpy().astype(np.float32)
    if return_intermediates:
        return result, {"mean": mean, "logvar": logvar, "z": z, "residual": residual, "x0": x0, "y": y}
    return result


# ---------------------------------------------------------------------------
# Where the model comes from
# ---------------------------------------------------------------------------


def load_models(source: str, weights: Optional[str] = None, prompt_embeds: Optional[str] = None) -> TadsrModels:
    from .checkpoint import load_checkpoint
    from .manifest import read_manifest
    from .synthetic import synthetic_models

    if source.startswith("synthetic:"):
        parts = source.split(":")
        config = parts[1]
        seed = int(parts[2]) if len(parts) > 2 else 0
        models = synthetic_models(config, seed)
    else:
        path = Path(source)
        if (path / "manifest.json").is_file():
            manifest = read_manifest(path)
            src = manifest["provenance"]["source"]
            if src.get("kind") == "synthetic":
                models = synthetic_models(src["config"], int(src["seed"]))
            elif weights is not None:
                models = load_checkpoint(Path(weights), prompt_embeds=Path(prompt_embeds) if prompt_embeds else None)
            else:
                raise SystemExit(f"{path}: bundle made from a checkpoint; pass --weights DIR to rebuild its model")
            embeds = path / manifest["prompt"]["embeds_file"]
            if prompt_embeds is None and embeds.is_file():
                models.prompt_embeds = torch.from_numpy(np.load(embeds).astype(np.float32))
        elif (path / "tadsr.pkl").is_file():
            models = load_checkpoint(path, prompt_embeds=Path(prompt_embeds) if prompt_embeds else None)
        else:
            raise SystemExit(f"{source}: neither a bundle (manifest.json), a checkpoint (tadsr.pkl) "
                             f"nor synthetic:CONFIG:SEED")
    if prompt_embeds is not None:
        models.prompt_embeds = torch.from_numpy(np.load(prompt_embeds).astype(np.float32))
    return models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle-source", required=True,
                        help="bundle folder, checkpoint folder, or synthetic:CONFIG:SEED")
    parser.add_argument("--weights", help="checkpoint folder, for a bundle exported from one")
    parser.add_argument("--image", required=True, help="low-resolution input image")
    parser.add_argument("--timestep", type=int, default=500)
    parser.add_argument("--upscale", type=int, default=4)
    parser.add_argument("--process-size", type=int, default=512)
    parser.add_argument("--color-fix", choices=COLOR_FIXES, default="adain")
    parser.add_argument("--noise", help=".npy standard normal noise [1,4,h,w]: sample instead of the posterior mean")
    parser.add_argument("--prompt-embeds", help=".npy [1,77,D] conditioning (default: the bundle's)")
    parser.add_argument("--out", required=True, help="output .npy, float32 [H, W, 3] in [0, 1]")
    parser.add_argument("--upscaled-out", help="also write the image U (PNG)")
    parser.add_argument("--png-out", help="also write the result quantized to 8 bit (PNG)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    models = load_models(args.bundle_source, args.weights, args.prompt_embeds)
    upscaled = upscaled_input(Image.open(args.image), args.upscale, args.process_size)
    noise = np.load(args.noise) if args.noise else None
    result = super_resolve(models, upscaled, args.timestep, args.color_fix, noise=noise)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, result)
    if args.upscaled_out:
        upscaled.save(args.upscaled_out)
    if args.png_out:
        Image.fromarray(np.round(result * 255.0).clip(0, 255).astype(np.uint8)).save(args.png_out)
    print(f"wrote {args.out}: {result.shape[1]}x{result.shape[0]}, t={args.timestep}, color fix {args.color_fix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
