"""Write a synthetic checkpoint in the authors' on-disk format.

    python -m export.synthetic_checkpoint --config tiny|tiny-g32|sd21 --seed 0 --out DIR [--rank 4] [--text-encoder]

``DIR`` gets what the authors' ``preset/weights`` folder holds for inference:

* ``unet/``      config.json + diffusion_pytorch_model.safetensors (base UNet)
* ``time_vae/``  config.json + diffusion_pytorch_model.bin (base time-aware VAE)
* ``scheduler/`` scheduler_config.json (SD-2.1-base's)
* ``tadsr.pkl``  the dict the authors' ``save_model`` writes: ranks, the four
  target-module lists (chosen by the authors' rules), the UNet's LoRA tensors
  + a retrained ``conv_in``, the VAE's LoRA tensors, the VAE's time tensors.
  Every LoRA B matrix is non-zero and the time tensors and ``conv_in`` differ
  from the base files, so a loader that skips any of them gives another model.
* ``prompt_embeds.npy``: a [1, 77, D] conditioning (this folder has no text
  encoder unless ``--text-encoder``, which adds a tiny random CLIP text model
  and a small CLIP BPE tokenizer).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import List

import numpy as np
import torch

from .checkpoint import UNET_ADAPTERS, VAE_ADAPTER, lora_config
from .model import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS
from .synthetic import (
    STREAM_CONV_IN,
    STREAM_LORA,
    STREAM_TIME,
    randomize_,
    rng_for,
    synthetic_base_models,
    synthetic_prompt_embeds,
)

SCHEDULER_CONFIG = {
    # stabilityai/stable-diffusion-2-1-base scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": BETA_END,
    "beta_schedule": "scaled_linear",
    "beta_start": BETA_START,
    "clip_sample": False,
    "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

_UNET_PATTERNS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut",
                  "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")
_VAE_PATTERNS = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v",
                 "to_out.0")


def unet_lora_targets(unet):
    """The authors' rule: weights (not biases or norms) of attention/conv/ff layers, split by place."""
    encoder, decoder, others = [], [], []
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        if not any(p in name for p in _UNET_PATTERNS):
            continue
        module = name[: -len(".weight")] if name.endswith(".weight") else name
        if "down_blocks" in name or "conv_in" in name:
            encoder.append(module)
        elif "up_blocks" in name or "conv_out" in name:
            decoder.append(module)
        else:
            others.append(module)
    return encoder, decoder, others


def vae_lora_targets(vae) -> List[str]:
    """The authors' rule for the time-aware VAE: encoder convs/attention and quant_conv, never time modules.

    Like the authors' list it may name a module more than once (one entry per matching pattern).
    """
    targets = []
    for name, _ in vae.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        module = name.replace(".weight", "")
        for pattern in _VAE_PATTERNS:
            if pattern in name and "encoder" in name and "time" not in name:
                targets.append(module)
            elif "quant_conv" in name and "post_quant_conv" not in name:
                targets.append(module)
    return targets


def _randomize_lora(model, rng: np.random.Generator) -> None:
    """LoRA A ~ U(+-1/sqrt(fan_in)), B ~ U(+-0.2): a clear but moderate change of every targeted weight."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            if ".lora_A." in name:
                p = params[name]
                bound = 1.0 / np.sqrt(int(np.prod(p.shape[1:])))
                p.copy_(torch.from_numpy(rng.uniform(-bound, bound, size=tuple(p.shape)).astype(np.float32)))
            elif ".lora_B." in name:
                p = params[name]
                p.copy_(torch.from_numpy(rng.uniform(-0.2, 0.2, size=tuple(p.shape)).astype(np.float32)))


def write_synthetic_checkpoint(out: Path, config: str = "tiny", seed: int = 0, rank: int = 4,
                               text_encoder: bool = False) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, vae, unet = synthetic_base_models(config, seed)

    # Base folders, as diffusers writes them.
    unet.save_pretrained(str(out / "unet"), safe_serialization=True)
    vae.save_pretrained(str(out / "time_vae"), safe_serialization=False)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")

    # The fine-tuned parts, the way the authors' training leaves them.
    enc_t, dec_t, oth_t = unet_lora_targets(unet)
    lists = {"unet_lora_encoder_modules": enc_t, "unet_lora_decoder_modules": dec_t,
             "unet_lora_others_modules": oth_t}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for adapter, key in UNET_ADAPTERS:
            unet.add_adapter(lora_config(rank, lists[key]), adapter_name=adapter)
    unet.set_adapter([a for a, _ in UNET_ADAPTERS])
    vae_t = vae_lora_targets(vae)
    vae.add_adapter(lora_config(rank, vae_t), adapter_name=VAE_ADAPTER[0])
    vae.set_adapter([VAE_ADAPTER[0]])

    rng = rng_for(seed, STREAM_LORA)
    _randomize_lora(unet, rng)
    _randomize_lora(vae, rng)
    conv_in = [n for n, _ in unet.named_parameters() if "conv_in" in n and "lora" not in n]
    randomize_(unet, rng_for(seed, STREAM_CONV_IN), names=conv_in)
    time_names = [n for n, _ in vae.named_parameters() if "time" in n]
    randomize_(vae, rng_for(seed, STREAM_TIME), names=time_names)

    unet_state = unet.state_dict()
    vae_state = vae.state_dict()
    pkl = {
        "state_dict_vae_time": {k: v.clone() for k, v in vae_state.items() if "time" in k},
        "vae_lora_encoder_modules": vae_t,
        "unet_lora_encoder_modules": enc_t,
        "unet_lora_decoder_modules": dec_t,
        "unet_lora_others_modules": oth_t,
        "rank_unet": int(rank),
        "rank_vae": int(rank),
        "state_dict_unet": {k: v.clone() for k, v in unet_state.items() if "lora" in k or "conv_in" in k},
        "state_dict_vae": {k: v.clone() for k, v in vae_state.items() if "lora" in k},
    }
    torch.save(pkl, str(out / "tadsr.pkl"))
    np.save(out / "prompt_embeds.npy", synthetic_prompt_embeds(cfg, seed).numpy(), allow_pickle=False)
    if text_encoder:
        from .tiny_clip import write_tiny_clip

        write_tiny_clip(out, hidden_size=cfg.cross_attention_dim, seed=seed)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.synthetic_checkpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["tiny", "tiny-g32", "sd21"], default="tiny",
                        help="tiny-g32: a VAE the authors' own code runs (scripts/authors_parity.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--text-encoder", action="store_true", help="add a tiny random CLIP text encoder")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    write_synthetic_checkpoint(Path(args.out), args.config, args.seed, args.rank, args.text_encoder)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
