"""Real-world degradations for the low-resolution side of training pairs.

In the spirit of Real-ESRGAN's second-order pipeline (Wang et al., 2021), written
from its description: two rounds of

    blur (random isotropic / anisotropic / generalized Gaussian kernel)
    -> resize (random scale, random kernel: bilinear, bicubic, area)
    -> noise (Gaussian, color or gray; or Poisson)
    -> JPEG (Pillow, random quality)

the second round milder than the first, then down to exactly 1/``scale`` of the
input size with a random kernel and a last JPEG.  (Real-ESRGAN's sinc /
ringing filter is left out.)

Every function is pure: float32 HWC arrays in [0, 1] in, a new array out, all
randomness from the ``numpy.random.Generator`` passed in, so the same seed
gives the same result.  ``degrade(hr, rng)`` is the whole pipeline;
``DegradeConfig`` holds its ranges.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Pillow filters for random resizes (nearest is left out: it aliases in a way no camera does)
RESIZE_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "area": Image.BOX}


@dataclasses.dataclass(frozen=True)
class StageConfig:
    blur_prob: float
    kernel_sizes: Tuple[int, ...]
    sigma: Tuple[float, float]
    resize_scale: Tuple[float, float]
    gaussian_noise_prob: float  # else Poisson
    gaussian_sigma: Tuple[float, float]  # on the 0..255 scale
    poisson_scale: Tuple[float, float]
    gray_noise_prob: float
    jpeg_quality: Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class DegradeConfig:
    first: StageConfig = StageConfig(
        blur_prob=1.0, kernel_sizes=(7, 9, 11, 13, 15, 17, 19, 21), sigma=(0.2, 3.0), resize_scale=(0.15, 1.5),
        gaussian_noise_prob=0.5, gaussian_sigma=(1.0, 30.0), poisson_scale=(0.05, 3.0), gray_noise_prob=0.4,
        jpeg_quality=(30, 95))
    second: StageConfig = StageConfig(
        blur_prob=0.8, kernel_sizes=(7, 9, 11, 13, 15, 17, 19, 21), sigma=(0.2, 1.5), resize_scale=(0.3, 1.2),
        gaussian_noise_prob=0.5, gaussian_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5), gray_noise_prob=0.4,
        jpeg_quality=(30, 95))
    second_stage_prob: float = 1.0


DEFAULT = DegradeConfig()


# ---------------------------------------------------------------------------
# Blur
# ---------------------------------------------------------------------------


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float, beta: float = 2.0) -> np.ndarray:
    """[size, size] float32 kernel summing to 1: exp(-0.5 * (d^T S^-1 d)^(beta/2)); beta = 2 is Gaussian."""
    if size % 2 != 1:
        raise ValueError(f"kernel size must be odd, not {size}")
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    c, s = math.cos(angle), math.sin(angle)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    kernel = np.exp(-0.5 * q ** (beta / 2.0))
    return (kernel / kernel.sum()).astype(np.float32)


def random_kernel(rng: np.random.Generator, stage: StageConfig) -> np.ndarray:
    size = int(rng.choice(stage.kernel_sizes))
    kind = rng.choice(["iso", "aniso", "generalized"], p=[0.45, 0.4, 0.15])
    sigma_x = float(rng.uniform(*stage.sigma))
    if kind == "iso":
        return gaussian_kernel(size, sigma_x, sigma_x, 0.0)
    sigma_y = float(rng.uniform(*stage.sigma))
    angle = float(rng.uniform(-math.pi, math.pi))
    beta = 2.0 if kind == "aniso" else float(rng.choice([rng.uniform(0.5, 1.0), rng.uniform(1.0, 4.0)]))
    return gaussian_kernel(size, sigma_x, sigma_y, angle, beta)


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with ``kernel`` (reflect padding); same shape out."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    k = torch.from_numpy(np.ascontiguousarray(kernel[::-1, ::-1]))
    channels = x.shape[1]
    pad = kernel.shape[0] // 2
    mode = "reflect" if min(x.shape[2:]) > pad else "replicate"
    x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    y = F.conv2d(x, k[None, None].repeat(channels, 1, 1, 1), groups=channels)
    return y[0].permute(1, 2, 0).numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------------------
# Resize, noise, JPEG
# ---------------------------------------------------------------------------


def resize(image: np.ndarray, size: Tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resize a float HWC image to ``size`` = (width, height), per channel in float (Pillow mode F)."""
    width, height = int(size[0]), int(size[1])
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32), mode="F")
                           .resize((width, height), RESIZE_FILTERS[method]))
                for c in range(image.shape[2])]
    return np.stack(channels, axis=2).astype(np.float32, copy=False)


def random_resize(image: np.ndarray, rng: np.random.Generator, scale_range: Tuple[float, float],
                  min_side: int = 8) -> np.ndarray:
    scale = float(rng.uniform(*scale_range))
    h, w = image.shape[:2]
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
    return resize(image, size, str(rng.choice(list(RESIZE_FILTERS))))


def gaussian_noise(image: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool) -> np.ndarray:
    """Additive Gaussian noise, ``sigma`` on the 0..255 scale; ``gray``: the same noise in every channel."""
    shape = image.shape[:2] + ((1,) if gray else (image.shape[2],))
    noise = rng.standard_normal(shape).astype(np.float32) * (sigma / 255.0)
    return np.clip(image + noise, 0.0, 1.0).astype(np.float32)


def poisson_noise(image: np.ndarray, rng: np.random.Generator, scale: float, gray: bool) -> np.ndarray:
    """Shot noise: counts ~ Poisson(x * 255 * 10 / scale) (larger ``scale``, fewer photons, more noise)."""
    vals = 2550.0 / max(scale, 1e-3)
    if gray:
        luma = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        noisy = rng.poisson(np.clip(luma, 0, 1) * vals) / vals
        out = image + (noisy.astype(np.float32) - luma)[:, :, None]
    else:
        out = rng.poisson(np.clip(image, 0, 1) * vals) / vals
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def random_noise(image: np.ndarray, rng: np.random.Generator, stage: StageConfig) -> np.ndarray:
    gray = bool(rng.random() < stage.gray_noise_prob)
    if rng.random() < stage.gaussian_noise_prob:
        return gaussian_noise(image, rng, float(rng.uniform(*stage.gaussian_sigma)), gray)
    return poisson_noise(image, rng, float(rng.uniform(*stage.poisson_scale)), gray)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round trip through Pillow's JPEG at ``quality`` (4:2:0 chroma subsampling, Pillow's default)."""
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0


def random_jpeg(image: np.ndarray, rng: np.random.Generator, quality: Tuple[int, int]) -> np.ndarray:
    return jpeg(image, int(rng.integers(quality[0], quality[1] + 1)))


# ---------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------


def degrade_stage(image: np.ndarray, rng: np.random.Generator, stage: StageConfig) -> np.ndarray:
    if rng.random() < stage.blur_prob:
        image = blur(image, random_kernel(rng, stage))
    image = random_resize(image, rng, stage.resize_scale)
    image = random_noise(image, rng, stage)
    return random_jpeg(image, rng, stage.jpeg_quality)


def degrade(hr: np.ndarray, rng: np.random.Generator, scale: int = 4, config: Optional[DegradeConfig] = None
            ) -> np.ndarray:
    """HR float32 HWC in [0, 1] (sides multiples of ``scale``) -> LR of (H/scale, W/scale), in [0, 1]."""
    config = config or DEFAULT
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {w}x{h} is not a multiple of {scale}")
    if hr.ndim != 3 or hr.shape[2] != 3:
        raise ValueError(f"expected an HWC RGB image, got shape {hr.shape}")
    image = np.clip(hr.astype(np.float32), 0.0, 1.0)
    image = degrade_stage(image, rng, config.first)
    if rng.random() < config.second_stage_prob:
        image = degrade_stage(image, rng, config.second)
    size = (w // scale, h // scale)
    # the last resize and JPEG, in a random order (as Real-ESRGAN does)
    method = str(rng.choice(list(RESIZE_FILTERS)))
    quality = config.second.jpeg_quality
    if rng.random() < 0.5:
        image = jpeg(resize(image, size, method), int(rng.integers(quality[0], quality[1] + 1)))
    else:
        image = resize(jpeg(image, int(rng.integers(quality[0], quality[1] + 1))), size, method)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def clean_downscale(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    """The evaluation's LR: Pillow bicubic on 8-bit pixels (what most SR benchmarks do)."""
    h, w = hr.shape[:2]
    pixels = Image.fromarray(np.clip(np.round(hr * 255.0), 0, 255).astype(np.uint8), "RGB")
    return np.asarray(pixels.resize((w // scale, h // scale), Image.BICUBIC), dtype=np.float32) / 255.0


__all__ = ["DegradeConfig", "StageConfig", "DEFAULT", "gaussian_kernel", "random_kernel", "blur", "resize",
           "random_resize", "gaussian_noise", "poisson_noise", "random_noise", "jpeg", "random_jpeg",
           "degrade_stage", "degrade", "clean_downscale"]
