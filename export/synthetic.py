"""Seeded random TADSR models (no checkpoint needed).

Weights are drawn from numpy's PCG64 generator in sorted parameter-name order,
so a given (config, seed) gives the same tensors on every machine and with
any torch version:

* conv / linear weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's default
  scale, which keeps every activation in a sane range since every block ends
  in a normalization);
* biases: the same bound as their layer's weight;
* normalization layers: weight 1 + U(-0.1, 0.1), bias U(-0.1, 0.1).

The default prompt embedding of a synthetic bundle is a seeded standard
normal [1, 77, D] tensor (there is no text encoder: ``prompt.text`` is null).
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from torch import nn

from .model import (
    CONFIGS,
    ModelConfig,
    TadsrModels,
    alphas_cumprod,
    build_unet,
    build_vae,
    fan_in,
    get_config,
    use_plain_attention,
)

# Stream ids: each component has its own generator so that changing one never
# shifts the numbers of another.
STREAM_VAE = 1
STREAM_UNET = 2
STREAM_PROMPT = 3
STREAM_LORA = 4
STREAM_TIME = 5
STREAM_CONV_IN = 6

_NORM_TYPES = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([int(seed), int(stream)]))


def _param_owner_kinds(module: nn.Module) -> Dict[str, bool]:
    """parameter name -> True when it belongs to a normalization layer."""
    kinds = {}
    for mod_name, mod in module.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            kinds[full] = isinstance(mod, _NORM_TYPES)
    return kinds


def randomize_(module: nn.Module, rng: np.random.Generator, names=None) -> None:
    """Fill parameters (all, or those in ``names``) with seeded values, in sorted name order."""
    params = dict(module.named_parameters())
    is_norm = _param_owner_kinds(module)
    selected = sorted(params if names is None else names)
    with torch.no_grad():
        for name in selected:
            p = params[name]
            shape = tuple(p.shape)
            if is_norm.get(name, False):
                if name.endswith("weight"):
                    values = 1.0 + rng.uniform(-0.1, 0.1, size=shape)
                else:
                    values = rng.uniform(-0.1, 0.1, size=shape)
            else:
                if name.endswith("bias"):
                    owner = name[: -len("bias")] + "weight"
                    ref = params.get(owner)
                    bound = 1.0 / np.sqrt(fan_in(tuple(ref.shape))) if ref is not None else 0.1
                else:
                    bound = 1.0 / np.sqrt(fan_in(shape))
                values = rng.uniform(-bound, bound, size=shape)
            p.copy_(torch.from_numpy(values.astype(np.float32)))


def synthetic_prompt_embeds(cfg: ModelConfig, seed: int) -> torch.Tensor:
    rng = rng_for(seed, STREAM_PROMPT)
    values = rng.standard_normal((1, 77, cfg.cross_attention_dim)).astype(np.float32)
    return torch.from_numpy(values)


def synthetic_base_models(config_name: str, seed: int):
    """Random (vae, unet) with the given config, deterministic in seed."""
    cfg = get_config(config_name)
    vae = build_vae(cfg)
    unet = build_unet(cfg)
    randomize_(vae, rng_for(seed, STREAM_VAE))
    randomize_(unet, rng_for(seed, STREAM_UNET))
    use_plain_attention(vae)
    use_plain_attention(unet)
    return cfg, vae.eval(), unet.eval()


def synthetic_models(config_name: str, seed: int) -> TadsrModels:
    cfg, vae, unet = synthetic_base_models(config_name, seed)
    return TadsrModels(
        config_name=config_name,
        vae=vae,
        unet=unet,
        alphas_cumprod=alphas_cumprod(),
        prompt_embeds=synthetic_prompt_embeds(cfg, seed),
        prompt_text=None,
        source={"kind": "synthetic", "config": config_name, "seed": int(seed)},
    )


__all__ = ["CONFIGS", "randomize_", "rng_for", "synthetic_models", "synthetic_base_models",
           "synthetic_prompt_embeds"]
