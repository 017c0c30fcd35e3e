"""Load the authors' TADSR checkpoint folder and merge its LoRA adapters.

The folder (``preset/weights`` in the authors' README) holds ``unet/``
(SD-2.1-base UNet), ``time_vae/`` (``config.json`` +
``diffusion_pytorch_model.bin``), ``scheduler/``, ``tadsr.pkl`` and, when the
prompt is to be encoded here, ``text_encoder/`` + ``tokenizer/``.

Loading follows the authors' test model:

1. the base UNet and time-aware VAE (every key present, none left over);
2. three UNet adapters ``default_encoder`` / ``default_decoder`` /
   ``default_others`` and one VAE adapter ``default_encoder``, built with
   ``LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=...)``
   (PEFT's default ``lora_alpha = 8``, so scale 8/rank);
3. the LoRA tensors and the UNet's ``conv_in`` from ``state_dict_unet`` /
   ``state_dict_vae``, the VAE's time modules from ``state_dict_vae_time``;
4. merge: ``W += scale * B @ A`` (conv likewise) and drop the adapter layers.

Every malformed ``tadsr.pkl`` (a key missing, a tensor of the wrong shape, a
rank that does not match) raises :class:`CheckpointError` naming the key.
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
from torch import nn

from .manifest import sha256_file
from .model import TadsrModels, TimeAwareAutoencoderKL, use_plain_attention

UNET_ADAPTERS = (
    ("default_encoder", "unet_lora_encoder_modules"),
    ("default_decoder", "unet_lora_decoder_modules"),
    ("default_others", "unet_lora_others_modules"),
)
VAE_ADAPTER = ("default_encoder", "vae_lora_encoder_modules")

PKL_LISTS = ("unet_lora_encoder_modules", "unet_lora_decoder_modules", "unet_lora_others_modules",
             "vae_lora_encoder_modules")
PKL_DICTS = ("state_dict_unet", "state_dict_vae", "state_dict_vae_time")
PKL_RANKS = ("rank_unet", "rank_vae")

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DEFAULT_PROMPT = ""


class CheckpointError(Exception):
    """The checkpoint folder or tadsr.pkl is not what the authors' code writes."""


# ---------------------------------------------------------------------------
# tadsr.pkl
# ---------------------------------------------------------------------------


def read_pkl(path: Path) -> Dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unpickling problem the same way
        raise CheckpointError(f"{path}: cannot be read as a torch.save file: {err}") from err
    validate_pkl(data, path.name)
    return data


def validate_pkl(data, label: str = "tadsr.pkl") -> None:
    if not isinstance(data, dict):
        raise CheckpointError(f"{label}: expected a dict, found {type(data).__name__}")
    for key in PKL_RANKS:
        if key not in data:
            raise CheckpointError(f"{label}: missing key {key!r}")
        value = data[key]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = int(value.item())
            data[key] = value
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{label}: {key!r} must be a positive integer, found {value!r}")
    for key in PKL_LISTS:
        if key not in data:
            raise CheckpointError(f"{label}: missing key {key!r}")
        value = data[key]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise CheckpointError(f"{label}: {key!r} must be a list of module names")
    for key in PKL_DICTS:
        if key not in data:
            raise CheckpointError(f"{label}: missing key {key!r}")
        value = data[key]
        if not isinstance(value, dict):
            raise CheckpointError(f"{label}: {key!r} must be a dict of tensors")
        for name, tensor in value.items():
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{label}: {key}[{name!r}] is not a tensor")


def _describe(names: List[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def copy_into(model: nn.Module, wanted: Iterable[str], source: Dict[str, torch.Tensor], dict_key: str,
              rank_key: Optional[str] = None, rank: Optional[int] = None) -> None:
    """Copy ``source[name]`` into each parameter/buffer ``name`` of ``wanted``; strict both ways."""
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    wanted = list(wanted)
    missing = [n for n in wanted if n not in source]
    if missing:
        raise CheckpointError(f"tadsr.pkl: {dict_key} lacks {_describe(missing)} (the model has this tensor)")
    unexpected = sorted(set(source) - set(wanted))
    if unexpected:
        raise CheckpointError(f"tadsr.pkl: {dict_key} has {_describe(unexpected)}, which the model does not have "
                              f"(wrong target module list?)")
    with torch.no_grad():
        for name in wanted:
            target = tensors[name]
            value = source[name]
            if tuple(value.shape) != tuple(target.shape):
                hint = ""
                if rank_key is not None and ".lora_" in name:
                    hint = f" ({rank_key} = {rank}; a LoRA tensor's shape follows the rank)"
                raise CheckpointError(f"tadsr.pkl: {dict_key}[{name!r}] has shape {list(value.shape)}, "
                                      f"the model expects {list(target.shape)}{hint}")
            target.copy_(value.to(dtype=target.dtype))


def lora_config(rank: int, targets: List[str]):
    from peft import LoraConfig

    # No lora_alpha: PEFT's default (8) applies, as in the authors' code.
    return LoraConfig(r=int(rank), init_lora_weights="gaussian", target_modules=list(targets))


def add_adapter_checked(model, rank: int, targets: List[str], adapter: str, list_key: str) -> bool:
    if not targets:
        return False
    names = {n for n, _ in model.named_modules()}
    unknown = sorted({t for t in targets if t not in names})
    if unknown:
        raise CheckpointError(f"tadsr.pkl: {list_key} names {_describe(unknown)}, not modules of the model")
    try:
        with warnings.catch_warnings():
            # PEFT warns on every adapter after the first one of a model; three is what the authors do.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            model.add_adapter(lora_config(rank, targets), adapter_name=adapter)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"tadsr.pkl: {list_key}: PEFT refused the targets: {err}") from err
    return True


def apply_unet_lora(unet, pkl: Dict) -> List[str]:
    adapters = []
    for adapter, list_key in UNET_ADAPTERS:
        if add_adapter_checked(unet, pkl["rank_unet"], list(pkl[list_key]), adapter, list_key):
            adapters.append(adapter)
    if adapters:
        unet.set_adapter(adapters)
    wanted = [n for n, _ in unet.named_parameters() if "lora" in n or "conv_in" in n]
    copy_into(unet, wanted, pkl["state_dict_unet"], "state_dict_unet", "rank_unet", pkl["rank_unet"])
    return adapters


def apply_vae_lora(vae, pkl: Dict) -> List[str]:
    adapter, list_key = VAE_ADAPTER
    targets = list(pkl[list_key])
    time_targets = sorted({t for t in targets if "time" in t})
    if time_targets:
        raise CheckpointError(f"tadsr.pkl: {list_key} targets time modules {_describe(time_targets)}")
    adapters = []
    if add_adapter_checked(vae, pkl["rank_vae"], targets, adapter, list_key):
        adapters.append(adapter)
        vae.set_adapter(adapters)
    wanted = [n for n, _ in vae.named_parameters() if "lora" in n]
    copy_into(vae, wanted, pkl["state_dict_vae"], "state_dict_vae", "rank_vae", pkl["rank_vae"])
    time_names = [n for n in vae.state_dict() if "time" in n]
    copy_into(vae, time_names, pkl["state_dict_vae_time"], "state_dict_vae_time")
    return adapters


def merge_adapters(model: nn.Module) -> int:
    """Merge every LoRA layer into its base layer and put the base layer back. Returns the count."""
    from peft.tuners.lora import LoraLayer

    count = 0
    lora_layers = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, LoraLayer)]
    for name, module in lora_layers:
        adapters = list(module.lora_A.keys())
        with torch.no_grad():
            module.merge(safe_merge=True, adapter_names=adapters)
        base = module.get_base_layer()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, base)
        count += 1
    for attr in ("peft_config",):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                pass
    if hasattr(model, "_hf_peft_config_loaded"):
        model._hf_peft_config_loaded = False
    return count


# ---------------------------------------------------------------------------
# Base models
# ---------------------------------------------------------------------------


def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: no {' or '.join(WEIGHT_FILES)}")


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be read: {err}") from err


def load_time_vae(folder: Path) -> TimeAwareAutoencoderKL:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: file not found")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    known = set(inspect.signature(TimeAwareAutoencoderKL.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in config.items() if k in known}
    ignored = sorted(k for k in config if k not in known and not k.startswith("_"))
    try:
        vae = TimeAwareAutoencoderKL(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: {err}") from err
    if ignored:
        print(f"note: {config_path}: ignoring config keys {ignored}")
    state = _read_state_dict(_weights_file(folder))
    expected = set(vae.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_describe(unexpected)}")
        raise CheckpointError(f"{folder}: weights do not match the time-aware VAE: " + "; ".join(parts))
    own = vae.state_dict()
    for name, value in state.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise CheckpointError(f"{folder}: {name!r} has shape {list(value.shape)}, "
                                  f"the config implies {list(own[name].shape)}")
    vae.load_state_dict(state, strict=True)
    return vae.eval()


def load_unet(folder: Path):
    from diffusers import UNet2DConditionModel

    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder / 'config.json'}: file not found")
    _weights_file(folder)
    try:
        unet, info = UNet2DConditionModel.from_pretrained(str(folder), output_loading_info=True,
                                                          torch_dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{folder}: cannot load the UNet: {err}") from err
    problems = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = [n if isinstance(n, str) else n[0] for n in info.get(key, [])]
        if names:
            problems.append(f"{key.replace('_', ' ')} {_describe(sorted(names))}")
    if problems:
        raise CheckpointError(f"{folder}: weights do not match the UNet config: " + "; ".join(problems))
    return unet.eval()


def load_schedule(folder: Path):
    from diffusers import DDPMScheduler

    config_path = folder / "scheduler_config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: file not found")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    scheduler = DDPMScheduler.from_pretrained(str(folder))
    schedule = {
        "type": scheduler.config.beta_schedule,
        "beta_start": float(scheduler.config.beta_start),
        "beta_end": float(scheduler.config.beta_end),
        "num_train_timesteps": int(scheduler.config.num_train_timesteps),
    }
    if config.get("trained_betas") is not None:
        schedule["type"] = "trained_betas"
    return scheduler.alphas_cumprod.to(torch.float32).clone(), schedule


# ---------------------------------------------------------------------------
# Text encoder and prompt
# ---------------------------------------------------------------------------


def load_text_encoder(root: Path):
    from transformers import AutoTokenizer, CLIPTextModel

    for sub in ("text_encoder", "tokenizer"):
        if not (root / sub).is_dir():
            raise CheckpointError(f"{root / sub}: folder not found")
    tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(root / "text_encoder"), torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    return text_encoder.eval(), tokenizer


@torch.no_grad()
def encode_prompt(text_encoder, tokenizer, prompt: str) -> torch.Tensor:
    ids = tokenizer(prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0].to(torch.float32)


def read_prompt_embeds(path: Path, dim: int) -> torch.Tensor:
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found")
    array = np.load(path)
    if array.ndim == 2:
        array = array[None]
    if tuple(array.shape) != (1, 77, dim):
        raise CheckpointError(f"{path}: prompt embeds have shape {list(array.shape)}, expected [1, 77, {dim}]")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def load_checkpoint(root: Path, prompt: Optional[str] = None, prompt_embeds: Optional[Path] = None,
                    want_text_encoder: bool = False, merge: bool = True, hash_files: bool = True
                    ) -> TadsrModels:
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a folder")
    for sub in ("unet", "time_vae", "scheduler"):
        if not (root / sub).is_dir():
            raise CheckpointError(f"{root / sub}: folder not found")
    has_text = (root / "text_encoder").is_dir()
    if prompt_embeds is None and not has_text:
        raise CheckpointError(f"{root}: no text_encoder/ folder; pass --prompt-embeds FILE ([1,77,D] .npy)")
    if want_text_encoder and not has_text:
        raise CheckpointError(f"{root}: --text-encoder needs text_encoder/ and tokenizer/")
    if prompt is not None and not has_text:
        raise CheckpointError(f"{root}: --default-prompt needs text_encoder/ and tokenizer/")

    pkl = read_pkl(root / "tadsr.pkl")
    unet = load_unet(root / "unet")
    vae = load_time_vae(root / "time_vae")
    alphas, schedule = load_schedule(root / "scheduler")

    apply_unet_lora(unet, pkl)
    apply_vae_lora(vae, pkl)
    if merge:
        merge_adapters(unet)
        merge_adapters(vae)
    use_plain_attention(unet)
    use_plain_attention(vae)

    dim = int(unet.config.cross_attention_dim)
    text_encoder = tokenizer = None
    if has_text and (want_text_encoder or prompt_embeds is None):
        text_encoder, tokenizer = load_text_encoder(root)
    if prompt_embeds is not None:
        embeds = read_prompt_embeds(Path(prompt_embeds), dim)
        text = None
    else:
        text = DEFAULT_PROMPT if prompt is None else prompt
        embeds = encode_prompt(text_encoder, tokenizer, text)
        if tuple(embeds.shape) != (1, 77, dim):
            raise CheckpointError(f"text encoder gives {list(embeds.shape)}, the UNet wants [1, 77, {dim}]")

    source = {"kind": "checkpoint", "files": {}}
    if hash_files:
        files = ["tadsr.pkl", "unet/config.json", f"unet/{_weights_file(root / 'unet').name}",
                 "time_vae/config.json", f"time_vae/{_weights_file(root / 'time_vae').name}",
                 "scheduler/scheduler_config.json"]
        if text_encoder is not None:
            for sub in ("text_encoder", "tokenizer"):
                files.extend(sorted(p.relative_to(root).as_posix() for p in (root / sub).iterdir() if p.is_file()))
        source["files"] = {rel: sha256_file(root / rel) for rel in files}
        if prompt_embeds is not None:
            source["prompt_embeds"] = sha256_file(Path(prompt_embeds))

    return TadsrModels(
        config_name=root.name,
        vae=vae.eval(),
        unet=unet.eval(),
        alphas_cumprod=alphas,
        prompt_embeds=embeds,
        prompt_text=text,
        source=source,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        schedule=schedule,
    )
