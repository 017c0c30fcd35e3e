"""Train a small TADSR ("nano") end to end on CPU and export it as a bundle.

    python -m export.train --out runs/nano --photos data/photos --steps 4200 --max-minutes 72 \\
                           --export-to models/nano
    python -m export.train --out runs/nano --export-only runs/nano/last.pt --export-to models/nano

A fresh run first fits the VAE's linear patch shortcuts by least squares (``init_from_data``) and trains
the decoder shortcut's decode head alone on them (``pretrain_head``, ``--head-steps``), both at latent
resolution and cheap; then every part is trained end to end. One end-to-end step is exactly the
runtime's inference path (spec steps 5-10), differentiated:

* target: an HR crop of a training photo (data/photos, ``export.photos``), random flips / 90-degree turns;
* input: its LR made by ``export.degrade.degrade`` (Real-ESRGAN-style second-order degradations), quantized
  to 8 bit, then Pillow bicubic x4 (the runtime's image ``U``), ``x = U * 2 - 1``;
* ``t`` uniform in ``--t-min..--t-max`` (1..999) per sample, given to the encoder and the UNet;
* ``z = mean * scaling_factor`` (the posterior mean: what the runtime uses unless ``--seed``),
  ``x0 = z / sqrt(alphas_cumprod[t]) - unet(z, t, prompt)``, ``y = decoder(x0 / scaling_factor)``;
* loss: L1(y, HR) in [-1, 1] + ``--edge-weight`` x L1 of the horizontal/vertical differences (sharp edges)
  + a small penalty that keeps the encoder's log-variance below -6, so that the runtime's ``--seed``
  sampling stays close to the mean.

The prompt embedding is fixed (seeded normal [1, 77, D], as for synthetic bundles): nano has no text
encoder. The exported weights are an exponential moving average of the trained ones (``--ema``).

Checkpoints (``<out>/last.pt``, written atomically every ``--save-every`` steps, at the end and on
Ctrl-C) hold the weights, the EMA, the optimizer, the step and both random generators: running the same
command again resumes where it stopped (the first checkpoint comes after the decode head's steps and the
first ``--save-every`` end-to-end steps: a run stopped before that starts over, seeded, the same way).
``<out>/log.jsonl`` gets one line per ``--log-every`` steps.
At the end (unless ``--no-export``) the EMA model is exported to ``--export-to`` with the bundle writer;
the manifest's provenance says ``source: checkpoint`` (the schema's kinds) with the checkpoint's sha256,
and ``provenance.training`` (a JSON string) plus ``training.json`` in the bundle hold the recipe.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .model import TadsrModels, alphas_cumprod, build_unet, build_vae, get_config, use_plain_attention

CHECKPOINT_NAME = "last.pt"
LOG_NAME = "log.jsonl"
UPSCALE = 4


# ---------------------------------------------------------------------------
# The differentiable one-step pipeline (spec steps 5-10, as export.reference.super_resolve)
# ---------------------------------------------------------------------------


def one_step(vae, unet, acp: torch.Tensor, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor):
    """x: [B,3,H,W] in [-1,1] (the upscaled input), t: [B] int64 -> (y [B,3,H,W] not clamped, logvar)."""
    scaling = float(vae.config.scaling_factor)
    mean, logvar = vae.encode_moments(x, t)
    z = mean * scaling
    residual = unet(z, t, encoder_hidden_states=embeds.expand(x.shape[0], -1, -1), return_dict=False)[0]
    x0 = z / acp[t].sqrt().reshape(-1, 1, 1, 1) - residual
    return vae.decode_raw(x0 / scaling), logvar


def edge_l1(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    dx = (y[..., :, 1:] - y[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (y[..., 1:, :] - y[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def losses(y, logvar, target, edge_weight: float, logvar_weight: float = 1e-3) -> Dict[str, torch.Tensor]:
    l1 = (y - target).abs().mean()
    edge = edge_l1(y, target)
    var_pen = F.relu(logvar + 6.0).mean()
    total = l1 + edge_weight * edge + logvar_weight * var_pen
    return {"loss": total, "l1": l1, "edge": edge, "logvar": var_pen}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def upscale_like_runtime(lr: np.ndarray) -> np.ndarray:
    """float LR in [0,1] -> 8 bit -> Pillow bicubic x4 -> float [0,1] (the runtime's image U)."""
    pixels = Image.fromarray(np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8), "RGB")
    w, h = pixels.size
    return np.asarray(pixels.resize((w * UPSCALE, h * UPSCALE), Image.BICUBIC), dtype=np.float32) / 255.0


class PhotoCrops:
    """Random HR crops of the training photos (held in memory as uint8), paired with degraded inputs."""

    def __init__(self, files: List[Path], crop: int, clean_prob: float = 0.0):
        self.clean_prob = clean_prob
        if crop % 8:
            raise ValueError(f"--crop must be a multiple of 8, not {crop}")
        self.crop = crop
        self.images = []
        for path in files:
            image = np.asarray(Image.open(path).convert("RGB"))
            if min(image.shape[:2]) >= crop:
                self.images.append(image)
        if not self.images:
            raise SystemExit(f"no training photo is at least {crop} px on both sides")
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        # sample photos by sqrt(area): big wallpapers more often, small skimage photos not starved
        self.weights = np.sqrt(areas) / np.sqrt(areas).sum()
        self.megapixels = float(areas.sum() / 1e6)

    def sample(self, rng: np.random.Generator):
        from .degrade import clean_downscale, degrade

        image = self.images[int(rng.choice(len(self.images), p=self.weights))]
        h, w = image.shape[:2]
        y = int(rng.integers(0, h - self.crop + 1))
        x = int(rng.integers(0, w - self.crop + 1))
        hr = image[y:y + self.crop, x:x + self.crop].astype(np.float32) / 255.0
        if rng.random() < 0.5:
            hr = hr[:, ::-1]
        hr = np.ascontiguousarray(np.rot90(hr, int(rng.integers(0, 4))))
        lr = clean_downscale(hr, UPSCALE) if rng.random() < self.clean_prob else degrade(hr, rng, UPSCALE)
        return hr, upscale_like_runtime(lr)


class RandomCrops:
    """Random tensors instead of photos (tests, smoke runs without data/)."""

    def __init__(self, crop: int):
        self.crop = crop
        self.megapixels = 0.0

    def sample(self, rng: np.random.Generator):
        hr = rng.random((self.crop, self.crop, 3), dtype=np.float32)
        lr = hr.reshape(self.crop // UPSCALE, UPSCALE, self.crop // UPSCALE, UPSCALE, 3).mean(axis=(1, 3))
        return hr, upscale_like_runtime(lr)


def make_batch(data, rng: np.random.Generator, batch: int):
    pairs = [data.sample(rng) for _ in range(batch)]
    hr = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2) * 2 - 1
    up = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2) * 2 - 1
    return hr.contiguous(), up.contiguous()


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class TrainState:
    config: str
    seed: int
    vae: torch.nn.Module
    unet: torch.nn.Module
    ema_vae: torch.nn.Module
    ema_unet: torch.nn.Module
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    embeds: torch.Tensor
    step: int = 0
    seconds: float = 0.0
    recent: Optional[Dict[str, float]] = None
    recipe: Optional[Dict] = None  # the recipe a loaded checkpoint was saved with


def new_state(config: str, seed: int, lr: float, weight_decay: float = 0.0,
              shortcut_lr_scale: float = 0.1) -> TrainState:
    """A fresh model and optimizer. The patch shortcuts start at a least-squares optimum
    (init_from_data), so they learn at ``shortcut_lr_scale`` times the rate of the deep paths: at the
    full rate Adam's steps move them off that optimum faster than the deep paths learn to help."""
    from .synthetic import synthetic_prompt_embeds

    cfg = get_config(config)
    torch.manual_seed(seed)
    vae = build_vae(cfg)
    unet = build_unet(cfg)
    use_plain_attention(vae)
    use_plain_attention(unet)
    vae.train()
    unet.train()
    # the linear maps only: the shortcut's decode head is a deep path and learns at the full rate
    linear = vae.shortcuts.linear_parameters() if vae.shortcuts is not None else []
    linear_ids = {id(p) for p in linear}
    deep = [p for p in list(vae.parameters()) + list(unet.parameters()) if id(p) not in linear_ids]
    groups = [{"params": deep, "lr_scale": 1.0}]
    if linear:
        groups.append({"params": linear, "lr_scale": shortcut_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    ema_vae = copy.deepcopy(vae).eval().requires_grad_(False)
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    rng = np.random.Generator(np.random.PCG64(seed))
    return TrainState(config, seed, vae, unet, ema_vae, ema_unet, optimizer, rng, synthetic_prompt_embeds(cfg, seed))


@contextlib.contextmanager
def clean_inputs(data):
    """Within: every LR input of ``data`` is the clean bicubic downscale (``PhotoCrops.clean_prob`` 1)."""
    clean_prob = getattr(data, "clean_prob", None)
    if clean_prob is not None:
        data.clean_prob = 1.0
    try:
        yield data
    finally:
        if clean_prob is not None:
            data.clean_prob = clean_prob


@torch.no_grad()
def init_from_data(state: TrainState, data, crops: int = 128, deep_scale: float = 0.1) -> Dict[str, float]:
    """Start the VAE as the best linear upscaler of its shape, fitted on clean training crops.

    On ``crops`` random training pairs (their own generator, seeded from the run's seed; LR always the
    clean bicubic downscale, whatever the run's ``--clean-prob``: fitted on degraded inputs, a linear map
    blurs clean ones), the encoder's shortcut gets the reduced-rank regression of each 8x8 block of the
    upscaled input U onto the same block of the original (its top ``latent_channels`` directions), and
    the decoder's shortcut the least-squares map from the latent cells around a block (its kernel) to
    that block. Measured on the 10 held-out photos, clean LR: bicubic 32.52 dB, this start with a 1x1
    decoder kernel 32.52, with 3x3 (nano) 32.82 (Lanczos: 32.82); fitted on a half-degraded mix
    instead, 32.06 and 32.19. The deep paths' last layers (the mean half of quant_conv, the decoder's
    conv_out, the UNet's conv_out) keep their random initialization times ``deep_scale`` (biases 0), so
    the first output is that linear prediction plus a small deep part; at 0 exactly the linear
    prediction, but then the deep paths barely learn (measured: a first run with zeros left the
    decoder's conv_out at 4e-4 mean |w| after 800 steps). Returns the linear prediction's PSNR on the
    fitting crops, and bicubic's.
    """
    shortcuts = state.vae.shortcuts
    if shortcuts is None:
        return {}
    rng = np.random.Generator(np.random.PCG64(state.seed + 7919))
    with clean_inputs(data):
        hr, up = make_batch(data, rng, crops)
    f = shortcuts.factor
    to_blocks = lambda x: F.pixel_unshuffle(x, f).permute(0, 2, 3, 1).reshape(-1, x.shape[1] * f * f)  # noqa: E731
    u, h = to_blocks(up).double(), to_blocks(hr).double()
    u_mean, h_mean = u.mean(0), h.mean(0)
    full = torch.linalg.lstsq(u - u_mean, h - h_mean).solution  # [192, 192]
    fitted = (u - u_mean) @ full
    rank = shortcuts.encode_proj.out_channels
    directions = torch.linalg.svd(fitted, full_matrices=False).Vh[:rank].T  # [192, rank]
    encode = full @ directions  # block of U -> latent
    shortcuts.encode_proj.weight.copy_(encode.T.reshape(rank, -1, 1, 1).float())
    shortcuts.encode_proj.bias.copy_((-u_mean @ encode).float())
    # decoder: blocks of HR from the latent cells in a kernel x kernel window (zero padding, as in the conv)
    kernel = shortcuts.decode_proj.kernel_size[0]
    latent = shortcuts.encode(up).double()
    window = F.unfold(latent, kernel, padding=kernel // 2).permute(0, 2, 1).reshape(-1, rank * kernel * kernel)
    window = torch.cat([window, torch.ones(window.shape[0], 1, dtype=window.dtype)], 1)
    decode = torch.linalg.lstsq(window, h).solution  # [rank * k * k + 1, 192]
    blocks = h.shape[1]
    shortcuts.decode_proj.weight.copy_(decode[:-1].T.reshape(blocks, rank, kernel, kernel).float())
    shortcuts.decode_proj.bias.copy_(decode[-1].float())
    latent_channels = rank
    state.vae.quant_conv.weight[:latent_channels].mul_(deep_scale)
    state.vae.quant_conv.bias[:latent_channels].zero_()
    state.vae.quant_conv.bias[latent_channels:].fill_(-8.0)  # log-variance below the -6 penalty from the start
    state.vae.decoder.conv_out.weight.mul_(deep_scale)
    state.vae.decoder.conv_out.bias.zero_()
    state.unet.conv_out.weight.mul_(deep_scale)
    state.unet.conv_out.bias.zero_()
    if shortcuts.decode_head is not None:  # a plain conv stack learns from zero (its last layer's gradient)
        shortcuts.decode_head[-1].weight.zero_()
        shortcuts.decode_head[-1].bias.zero_()
    for ema, model in ((state.ema_vae, state.vae), (state.ema_unet, state.unet)):
        ema.load_state_dict(model.state_dict())
    predicted = shortcuts.decode(shortcuts.encode(up)).double()
    mse = float(((predicted.clamp(-1, 1) - hr.double()) ** 2).mean()) / 4.0  # [-1,1] -> [0,1]
    bicubic_mse = float(((u - h) ** 2).mean()) / 4.0
    return {"linear_psnr": 10 * math.log10(1 / mse), "bicubic_psnr": 10 * math.log10(1 / bicubic_mse)}


def pretrain_head(state: TrainState, data, steps: int, batch: int = 16, lr: float = 1e-3,
                  edge_weight: float = 0.5, log=print) -> Dict[str, float]:
    """Train the decoder shortcut's decode head (if the config has one) alone on the linear shortcuts.

    Before the end-to-end steps, on clean crops (own generator, seeded from the run's seed), Adam at
    ``lr``: ``y = shortcuts.decode(shortcuts.encode(U))`` with only the head's weights free, the run's
    L1 + edge loss. Everything runs at latent resolution, so a step of 16 crops costs 0.056 s against 1.39 s
    end to end (measured 2026-11-28, 2 threads, this 2-core machine), and
    the head, the part of nano that adds detail (see model.py's nano), starts trained instead of at zero.
    The deep paths are then trained with it end to end. Returns the last 100 steps' mean loss and seconds.
    """
    shortcuts = state.vae.shortcuts
    if shortcuts is None or shortcuts.decode_head is None or steps <= 0:
        return {}
    rng = np.random.Generator(np.random.PCG64(state.seed + 104729))
    head = list(shortcuts.decode_head.parameters())
    optimizer = torch.optim.Adam(head, lr=lr)
    linear = shortcuts.linear_parameters()
    for p in linear:
        p.requires_grad_(False)
    started, recent = time.time(), []
    try:
        with clean_inputs(data):
            for step in range(steps):
                hr, up = make_batch(data, rng, batch)
                with torch.no_grad():
                    latent = shortcuts.encode(up)
                y = shortcuts.decode(latent)
                loss = (y - hr).abs().mean() + edge_weight * edge_l1(y, hr)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                recent = (recent + [float(loss.detach())])[-100:]
                if (step + 1) % 500 == 0 or step + 1 == steps:
                    log(f"decode head: step {step + 1}/{steps}, loss {np.mean(recent):.4f}, "
                        f"{time.time() - started:.0f} s")
    finally:
        for p in linear:
            p.requires_grad_(True)
    state.ema_vae.load_state_dict(state.vae.state_dict())
    seconds = time.time() - started
    state.seconds += seconds
    return {"loss": float(np.mean(recent)), "seconds": seconds}


def save_checkpoint(state: TrainState, path: Path, recipe: Dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "config": state.config, "seed": state.seed, "step": state.step, "seconds": state.seconds,
        "vae": state.vae.state_dict(), "unet": state.unet.state_dict(),
        "ema_vae": state.ema_vae.state_dict(), "ema_unet": state.ema_unet.state_dict(),
        "optimizer": state.optimizer.state_dict(), "rng": state.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(), "embeds": state.embeds, "recent": state.recent, "recipe": recipe,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def checkpoint_config(blob: Dict) -> str:
    """The config a checkpoint was trained with. Runs from before nano v2 (2026-11-28) say "nano" and have
    no decode head: they are "nano-v1"."""
    name = blob["config"]
    if name == "nano" and not any(".decode_head." in key for key in blob["vae"]):
        return "nano-v1"
    return name


def load_checkpoint(path: Path, lr: float = 2e-4) -> TrainState:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    state = new_state(checkpoint_config(blob), int(blob["seed"]), lr)
    state.vae.load_state_dict(blob["vae"])
    state.unet.load_state_dict(blob["unet"])
    state.ema_vae.load_state_dict(blob["ema_vae"])
    state.ema_unet.load_state_dict(blob["ema_unet"])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.rng.bit_generator.state = blob["rng"]
    torch.set_rng_state(blob["torch_rng"])
    state.embeds = blob["embeds"]
    state.step = int(blob["step"])
    state.seconds = float(blob["seconds"])
    state.recent = blob.get("recent")
    state.recipe = blob.get("recipe")
    return state


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)


def learning_rate(step: int, base: float, warmup: int, total: Optional[int]) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if total is None or total <= warmup:
        return base
    progress = min(1.0, (step - warmup) / (total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_step(state: TrainState, hr: torch.Tensor, up: torch.Tensor, acp: torch.Tensor, t_range, lr: float,
               edge_weight: float, ema_decay: float, clip: float = 1.0) -> Dict[str, float]:
    t = torch.from_numpy(state.rng.integers(t_range[0], t_range[1] + 1, size=hr.shape[0])).to(torch.int64)
    for group in state.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    y, logvar = one_step(state.vae, state.unet, acp, up, t, state.embeds)
    parts = losses(y, logvar, hr, edge_weight)
    state.optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    params = [p for g in state.optimizer.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
    state.optimizer.step()
    decay = min(ema_decay, (1 + state.step) / (10 + state.step))  # warm EMA start
    ema_update(state.ema_vae, state.vae, decay)
    ema_update(state.ema_unet, state.unet, decay)
    state.step += 1
    out = {k: float(v.detach()) for k, v in parts.items()}
    out["grad_norm"] = float(grad_norm)
    out["t_mean"] = float(t.float().mean())
    return out


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def models_from_checkpoint(path: Path, ema: bool = True) -> TadsrModels:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg = get_config(checkpoint_config(blob))
    vae, unet = build_vae(cfg), build_unet(cfg)
    vae.load_state_dict(blob["ema_vae" if ema else "vae"])
    unet.load_state_dict(blob["ema_unet" if ema else "unet"])
    use_plain_attention(vae)
    use_plain_attention(unet)
    from .manifest import sha256_file

    return TadsrModels(
        config_name=checkpoint_config(blob), vae=vae.eval(), unet=unet.eval(), alphas_cumprod=alphas_cumprod(),
        prompt_embeds=blob["embeds"].to(torch.float32), prompt_text=None,
        source={"kind": "checkpoint", "files": {Path(path).name: sha256_file(Path(path))}},
    )


def export_checkpoint(path: Path, out: Path, name: Optional[str] = None, verify: bool = True,
                      measure_memory: bool = True, precision: str = "fp32") -> Dict:
    from .bundle import export_bundle
    from .manifest import read_manifest, write_manifest

    blob = torch.load(path, map_location="cpu", weights_only=False)
    recipe = dict(blob.get("recipe") or {})
    recipe.update({"config": checkpoint_config(blob), "seed": int(blob["seed"]), "steps": int(blob["step"]),
                   "train_seconds": round(float(blob["seconds"]), 1), "final_losses": blob.get("recent"),
                   "weights": "ema"})
    models = models_from_checkpoint(path)
    out = Path(out)
    export_bundle(models, out, precision=precision, name=name or blob["config"], verify=verify,
                  measure_memory=measure_memory)
    manifest = read_manifest(out)
    manifest["provenance"]["training"] = json.dumps(recipe, sort_keys=True)
    write_manifest(out, manifest)
    (out / "training.json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"exported {path} (step {blob['step']}) -> {out}", flush=True)
    return manifest


# ---------------------------------------------------------------------------
# Main loop
# ---------------------------------------------------------------------------


PHASE_KEYS = ("crop", "batch", "lr", "warmup", "steps", "t_range", "edge_weight", "ema", "clean_prob",
              "shortcut_lr_scale", "threads")


def earlier_phases(ckpt: Path, recipe: Dict, step: int) -> List[Dict]:
    """The settings a resumed run had before ``step`` when they differ from this session's: the checkpoint's
    own ``phases`` plus its last settings, ending at ``step``. A resume with the same settings adds none."""
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    previous = dict(blob.get("recipe") or {})
    phases = list(previous.get("phases") or [])
    before = {k: previous.get(k) for k in PHASE_KEYS}
    if before != {k: recipe.get(k) for k in PHASE_KEYS}:
        phases.append({**before, "until_step": step})
    return phases


def data_recipe(photos: Optional[Path]) -> Dict:
    if photos is None:
        return {"kind": "random tensors"}
    from .photos import read_sources

    sources = read_sources(photos)
    train = [r for r in sources if r["split"] == "train"]
    return {"kind": "photos", "folder": str(photos), "train_files": [r["file"] for r in train],
            "licenses": sorted({r["license"] for r in train}),
            "packages": sorted({r["source"] for r in train}),
            "degradation": "export.degrade.degrade (defaults)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/nano", help="run folder (checkpoint, log)")
    parser.add_argument("--config", default="nano", help="model config of export/model.py (default nano)")
    parser.add_argument("--photos", default="data/photos", help="folder of export.photos (default data/photos)")
    parser.add_argument("--random-data", action="store_true", help="train on random tensors (tests)")
    parser.add_argument("--crop", type=int, default=128, help="HR crop side, a multiple of 8 (default 128)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--shortcut-lr-scale", type=float, default=0.1,
                        help="learning rate of the patch shortcuts relative to --lr (default 0.1)")
    parser.add_argument("--deep-init-scale", type=float, default=0.01,
                        help="the deep paths' last layers start at their random init times this "
                             "(default 0.01; see init_from_data)")
    parser.add_argument("--head-steps", type=int, default=10000,
                        help="steps of the decode head alone before the end-to-end ones, batch 16, clean "
                             "crops (default 10000; see pretrain_head)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--steps", type=int, help="stop after this many steps in all (also sets the cosine decay)")
    parser.add_argument("--max-minutes", type=float, help="stop this session after so many minutes of training")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--t-min", type=int, default=1)
    parser.add_argument("--t-max", type=int, default=999)
    parser.add_argument("--edge-weight", type=float, default=0.5)
    parser.add_argument("--clean-prob", type=float, default=0.8,
                        help="share of LR inputs made by a clean bicubic downscale instead of the "
                             "real-world degradations (default 0.8)")
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the exported weights")
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    parser.add_argument("--export-to", default="models/nano", help="bundle folder written at the end")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--no-verify", action="store_true", help="skip the export's ONNX Runtime check")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the export's memory measurement (the manifest's memory)")
    parser.add_argument("--export-only", metavar="CHECKPOINT", help="export this checkpoint and exit")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                        help="float type of the exported graphs (default fp32)")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, args.threads))
    if args.export_only:
        export_checkpoint(Path(args.export_only), Path(args.export_to), verify=not args.no_verify,
                          measure_memory=not args.no_memory, precision=args.precision)
        return 0

    if args.crop % 8 or args.crop < 16:
        parser.error(f"--crop must be a multiple of 8 and at least 16, not {args.crop}")
    out = Path(args.out)
    ckpt = out / CHECKPOINT_NAME
    if ckpt.is_file() and not args.fresh:
        state = load_checkpoint(ckpt, args.lr)
        if state.config != args.config:
            parser.error(f"{ckpt} is a {state.config!r} run, not {args.config!r} (use --fresh or another --out)")
        print(f"resuming {ckpt} at step {state.step} ({state.seconds / 60:.1f} min trained)", flush=True)
    else:
        state = new_state(args.config, args.seed, args.lr, shortcut_lr_scale=args.shortcut_lr_scale)
    photos = None if args.random_data else Path(args.photos)
    if photos is None:
        data = RandomCrops(args.crop)
    else:
        from .photos import split_files

        if not (photos / "sources.json").is_file():
            parser.error(f"{photos}/sources.json not found: run scripts/gather_photos.sh first (or --random-data)")
        data = PhotoCrops(split_files(photos, "train"), args.crop, args.clean_prob)
    recipe = {"crop": args.crop, "batch": args.batch, "lr": args.lr, "warmup": args.warmup, "steps": args.steps,
              "t_range": [args.t_min, args.t_max], "edge_weight": args.edge_weight, "ema": args.ema,
              "clean_prob": args.clean_prob, "shortcut_lr_scale": args.shortcut_lr_scale,
              "model": {"vae": get_config(args.config).vae,
                        "unet_blocks": get_config(args.config).unet["block_out_channels"]},
              "init": "patch shortcuts fitted by least squares on 128 clean crops (encoder: reduced-rank "
                      "regression of 8x8 blocks; decoder: 3x3 latent cells -> block; init_from_data); "
                      f"deep paths' last layers and the UNet's conv_out at {args.deep_init_scale}x their random init; "
                      f"then the shortcut's decode head (if any) alone for {args.head_steps} steps of 16 clean "
                      "crops, Adam 1e-3 (pretrain_head)",
              "head_steps": args.head_steps,
              "loss": "L1 + edge_weight * L1(finite differences) + 1e-3 * relu(logvar + 6), in [-1, 1]",
              "optimizer": "AdamW(0.9, 0.99), grad clip 1.0, warmup then cosine to 10% when --steps is given",
              "threads": args.threads, "data": data_recipe(photos)}
    if state.step > 0:
        recipe["phases"] = earlier_phases(ckpt, recipe, state.step)
        earlier = state.recipe or {}
        for key in ("head_steps", "head_pretraining"):  # what the fresh session did before step 0
            if key in earlier:
                recipe[key] = earlier[key]
    if state.step == 0:
        fit = init_from_data(state, data, deep_scale=args.deep_init_scale)
        if fit:
            print(f"linear start (patch shortcuts from 128 clean crops): {fit['linear_psnr']:.2f} dB against the "
                  f"originals; the upscaled inputs: {fit['bicubic_psnr']:.2f} dB", flush=True)
        head = pretrain_head(state, data, args.head_steps, edge_weight=args.edge_weight,
                             log=lambda line: print(line, flush=True))
        if head:
            recipe["head_pretraining"] = {k: round(v, 5) for k, v in head.items()}
    n_params = sum(p.numel() for p in state.vae.parameters()) + sum(p.numel() for p in state.unet.parameters())
    print(f"{args.config}: {n_params / 1e6:.2f} M parameters; data: "
          f"{'random' if photos is None else f'{len(data.images)} photos, {data.megapixels:.1f} MP'}; "
          f"crop {args.crop}, batch {args.batch}, {args.threads} thread(s)", flush=True)

    acp = alphas_cumprod()
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / LOG_NAME, "a", encoding="utf-8")  # closed in the finally below
    interrupted = {"flag": False}

    def on_sigint(signum, frame):  # finish the step, save, exit
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True
        print("\ninterrupt: saving after this step (Ctrl-C again to abort)", flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the venv
        tqdm = None
    budget = args.max_minutes * 60.0 if args.max_minutes else math.inf
    session_start = time.time()
    total = args.steps
    bar = tqdm(total=total, initial=state.step, unit="step", dynamic_ncols=True) if tqdm else None
    window: List[Dict[str, float]] = []
    try:
        while not interrupted["flag"]:
            if total is not None and state.step >= total:
                break
            if time.time() - session_start >= budget:
                print(f"\n--max-minutes {args.max_minutes} reached", flush=True)
                break
            started = time.time()
            hr, up = make_batch(data, state.rng, args.batch)
            lr = learning_rate(state.step, args.lr, args.warmup, total)
            parts = train_step(state, hr, up, acp, (args.t_min, args.t_max), lr, args.edge_weight, args.ema)
            elapsed = time.time() - started
            state.seconds += elapsed
            if not all(math.isfinite(v) for v in parts.values()):
                raise SystemExit(f"step {state.step}: non-finite loss {parts}; not saving")
            window.append(parts)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.4f}", l1=f"{parts['l1']:.4f}", s=f"{elapsed:.2f}")
            if state.step % args.log_every == 0:
                mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                state.recent = {k: round(v, 5) for k, v in mean.items()}
                line = {"step": state.step, "lr": lr, "sec_per_step": round(elapsed, 3),
                        "train_minutes": round(state.seconds / 60, 2), **state.recent}
                log.write(json.dumps(line) + "\n")
                log.flush()
                if bar is None:
                    print(json.dumps(line), flush=True)
                window = []
            if state.step % args.save_every == 0:
                save_checkpoint(state, ckpt, recipe)
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
        if window:
            state.recent = {k: round(float(np.mean([w[k] for w in window])), 5) for k in window[0]}
        save_checkpoint(state, ckpt, recipe)
        log.close()
        print(f"saved {ckpt} at step {state.step} ({state.seconds / 60:.1f} min trained); "
              f"recent losses {state.recent}", flush=True)
    if interrupted["flag"]:
        print(f"interrupted: run the same command to resume, or --export-only {ckpt}", flush=True)
        return 130
    if not args.no_export:
        export_checkpoint(ckpt, Path(args.export_to), verify=not args.no_verify,
                          measure_memory=not args.no_memory, precision=args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
