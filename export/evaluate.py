"""PSNR / SSIM of a trained nano checkpoint against Pillow bicubic and Lanczos on held-out photos.

    python -m export.evaluate --checkpoint runs/nano/last.pt [--photos data/photos] [--limit N]
                              [--timesteps 500,200,800] [--crop 512] [--lr degraded|clean] [--threads 1]

For each held-out photo (``export.photos`` split), a centered crop of at most ``--crop`` px (sides
multiples of 32) is the HR original. Its LR is ``--lr clean``: Pillow bicubic 4x down on 8 bit (default),
or ``--lr degraded``: ``export.degrade.degrade`` with a fixed seed per photo (seed 1000 + index).
Then the LR goes up 4x with Pillow bicubic, Pillow Lanczos, and nano through PyTorch (the checkpoint's
EMA weights, exactly the runtime's path: bicubic-upscaled input, posterior mean, adain color fix) at
each timestep. PSNR on RGB in [0, 1]; SSIM (Gaussian window 11, sigma 1.5) on the luma, both over the
whole crop less a 4-px border.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

BORDER = 4


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of the luma (Wang et al. 2004 constants, Gaussian window 11 / 1.5)."""
    x = torch.from_numpy(_luma(a.astype(np.float64)))[None, None]
    y = torch.from_numpy(_luma(b.astype(np.float64)))[None, None]
    ax = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(ax ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]

    def filt(z):
        return F.conv2d(z, w)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


def _to_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8), "RGB")


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def evaluate(checkpoint: Path, photos: Path, timesteps: List[int], crop: int = 512, lr_kind: str = "clean",
             limit: int = 0) -> Dict[str, Dict[str, List[float]]]:
    from .degrade import clean_downscale, degrade
    from .photos import split_files
    from .reference import super_resolve
    from .train import models_from_checkpoint

    models = models_from_checkpoint(checkpoint)
    files = split_files(photos, "heldout")
    if limit:
        files = files[:limit]
    methods = ["bicubic", "lanczos"] + [f"nano t={t}" for t in timesteps]
    scores: Dict[str, Dict[str, List[float]]] = {m: {"psnr": [], "ssim": []} for m in methods}
    for index, path in enumerate(files):
        image = _from_pil(Image.open(path))
        h, w = image.shape[:2]
        ch, cw = min(crop, h) // 32 * 32, min(crop, w) // 32 * 32
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        hr = image[y0:y0 + ch, x0:x0 + cw]
        if lr_kind == "clean":
            lr = clean_downscale(hr)
        else:
            lr = degrade(hr, np.random.default_rng(1000 + index))
        lr_pil = _to_pil(lr)
        up = lr_pil.resize((cw, ch), Image.BICUBIC)  # sides are multiples of 8: this is the runtime's U
        outputs = {"bicubic": _from_pil(up), "lanczos": _from_pil(lr_pil.resize((cw, ch), Image.LANCZOS))}
        for t in timesteps:
            outputs[f"nano t={t}"] = super_resolve(models, up, t, "adain")
        line = [path.name]
        for method, out in outputs.items():
            quantized = _from_pil(_to_pil(out))
            a = quantized[BORDER:-BORDER, BORDER:-BORDER]
            b = hr[BORDER:-BORDER, BORDER:-BORDER]
            scores[method]["psnr"].append(psnr(a, b))
            scores[method]["ssim"].append(ssim(a, b))
            line.append(f"{method} {scores[method]['psnr'][-1]:.2f}/{scores[method]['ssim'][-1]:.3f}")
        print("  " + "  ".join(line), flush=True)
    return scores


def print_table(scores: Dict[str, Dict[str, List[float]]], title: str) -> None:
    print(f"\n{title}")
    print("| method | PSNR (dB) | SSIM |\n| --- | --- | --- |")
    for method, s in scores.items():
        print(f"| {method} | {np.mean(s['psnr']):.2f} | {np.mean(s['ssim']):.4f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of export.train (its EMA weights)")
    parser.add_argument("--photos", default="data/photos")
    parser.add_argument("--timesteps", default="500,200,800", help="nano timesteps (default 500,200,800)")
    parser.add_argument("--crop", type=int, default=512, help="largest HR crop side (default 512)")
    parser.add_argument("--lr", choices=["clean", "degraded"], default="clean", dest="lr_kind")
    parser.add_argument("--limit", type=int, default=0, help="only the first N held-out photos")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    timesteps = [int(t) for t in args.timesteps.split(",") if t]
    scores = evaluate(Path(args.checkpoint), Path(args.photos), timesteps, args.crop, args.lr_kind, args.limit)
    n = len(next(iter(scores.values()))["psnr"])
    print_table(scores, f"{n} held-out photos, LR = {args.lr_kind}, crop <= {args.crop}, border {BORDER} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
