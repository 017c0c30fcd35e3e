"""PyTorch definitions of the three TADSR networks and the noise schedule.

* ``TimeAwareAutoencoderKL``: the SD VAE whose encoder takes a timestep.  It is
  assembled here from diffusers building blocks (``ResnetBlock2D`` with
  ``time_embedding_norm="scale_shift"``, ``Timesteps``, ``TimestepEmbedding``,
  ``UNetMidBlock2D``, ``Downsample2D``, the stock ``Decoder``) so that its
  ``state_dict`` keys are exactly those of the authors' ``time_vae/`` folder.
* the SD-2.1 UNet: the stock diffusers ``UNet2DConditionModel``.
* the DDPM schedule of SD-2.1 (scaled_linear, 0.00085 .. 0.012, 1000 steps).

Sizes come from a :class:`ModelConfig`: ``tiny`` (a few MB, for tests), ``nano``
(trained on CPU by ``export.train``, 16 latent channels; ``nano-v1`` its first
version) and ``sd21`` (Stable Diffusion 2.1-base).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Tuple

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.autoencoders.vae import Decoder
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D
from torch import nn

SCALING_FACTOR = 0.18215
LATENT_CHANNELS = 4
VAE_SCALE_FACTOR = 8

# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
_VAE_DOWN = ("DownEncoderBlock2D",) * 4
_VAE_UP = ("UpDecoderBlock2D",) * 4


def _unet_config(block_out_channels, heads, cross_attention_dim, norm_num_groups, sample_size,
                 latent_channels=LATENT_CHANNELS):
    # The layout of stabilityai/stable-diffusion-2-1-base's unet/config.json.
    return {
        "sample_size": sample_size,
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": list(_SD_DOWN),
        "up_block_types": list(_SD_UP),
        "block_out_channels": list(block_out_channels),
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": norm_num_groups,
        "norm_eps": 1e-5,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": list(heads),
        "dual_cross_attention": False,
        "use_linear_projection": True,
        "only_cross_attention": False,
        "upcast_attention": False,
        "num_class_embeds": None,
    }


def _vae_config(block_out_channels, norm_num_groups, sample_size, latent_channels=LATENT_CHANNELS,
                trainable_extras=False, decode_head=None):
    # The init arguments of the authors' TimeAwareAutoencoderKL (time_vae/config.json), plus
    # latent_time_scale, patch_shortcuts and the shortcut's decode head (ours, off for their checkpoints;
    # see TimeAwareAutoencoderKL).
    extra = ({"latent_time_scale": True, "patch_shortcuts": True, "shortcut_decode_kernel": 3}
             if trainable_extras else {})
    if decode_head is not None:
        extra["shortcut_decode_head"] = list(decode_head)
    return {**extra,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": list(_VAE_DOWN),
        "up_block_types": list(_VAE_UP),
        "block_out_channels": list(block_out_channels),
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": latent_channels,
        "norm_num_groups": norm_num_groups,
        "sample_size": sample_size,
        "scaling_factor": SCALING_FACTOR,
        "force_upcast": True,
        "time_scale_shift": "scale_shift",
    }


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    vae: Dict
    unet: Dict

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet["cross_attention_dim"])

    @property
    def latent_channels(self) -> int:
        return int(self.vae["latent_channels"])


CONFIGS: Dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        name="tiny",
        vae=_vae_config((16, 32, 32, 32), 8, 64),
        unet=_unet_config((16, 32, 32, 32), (1, 2, 2, 2), 32, 8, 16),
    ),
    # nano v1: the first nano trained on CPU by export/train.py (issue 10); kept so that its runs load
    # (export.train.checkpoint_config). Widths: the decoder's and encoder's full-resolution
    # stages dominate the cost (the latent is only 1/8 of the output), so the VAE is narrow at the top
    # and wider below; the UNet runs on the 1/8 latent and is cheap, so it gets more width. 16 latent
    # channels instead of 4: the latent is 1/2 of the (4x-upscaled) input's side, so 4 channels hold only
    # a third of the input's values, 12 all of them; 16 leave room. Our two VAE additions
    # (latent_time_scale, patch_shortcuts: see TimeAwareAutoencoderKL) are on. 8-group norms (24 is not
    # divisible by 32), head width 32, cross-attention width 32 (the prompt is a fixed embedding).
    # Measured 2026-11-27 on this project's 2-core machine, 1 thread, one 128x128 crop, forward + backward
    # of the whole one-step pipeline: 0.45 s (VAE 3.44 M + UNet 5.46 M = 8.9 M parameters). Against
    # VAE (32, 64, 96, 96): 0.49 s for 3.7 M; VAE (16, 32, 64, 64): 0.27 s for 1.7 M.
    "nano-v1": ModelConfig(
        name="nano-v1",
        vae=_vae_config((24, 48, 96, 96), 8, 128, latent_channels=16, trainable_extras=True),
        unet=_unet_config((32, 64, 96, 96), (1, 2, 3, 3), 32, 8, 16, latent_channels=16),
    ),
    # nano (v2, 2026-11-28): v1 (above, the first committed nano) reached Lanczos's level and no more in
    # 90 minutes: its deep paths at full resolution cost most of a step and added nothing measurable.
    # v2 adds a decode head to the decoder's patch shortcut: convolutions at latent resolution whose
    # output is pixel-shuffled to 8x8 blocks (ESPCN-like, see PatchShortcuts), and narrows the VAE's
    # full-resolution stages so that a step costs less. Measured 2026-11-28 on this 2-core machine: the
    # linear shortcuts plus a (64 wide, 4 deep) head alone (a throwaway script doing what export.train's
    # pretrain_head does, L1 loss only), 6 minutes on clean crops, 33.38 dB on the held-out
    # photos against bicubic 32.52 and the linear shortcuts 32.68. One end-to-end training step, 2 threads,
    # 16 crops of 128 px: VAE widths (8, 16, 32, 64) 1.39 s, (16, 32, 64, 96) 1.79 s, v1's (24, 48, 96, 96)
    # 4.21 s; 8 crops with (8, 16, 32, 64): 0.87 s (6.9 M parameters in all, the UNet 5.46 M of them).
    "nano": ModelConfig(
        name="nano",
        vae=_vae_config((8, 16, 32, 64), 8, 128, latent_channels=16, trainable_extras=True,
                        decode_head=(64, 4)),
        unet=_unet_config((32, 64, 96, 96), (1, 2, 3, 3), 32, 8, 16, latent_channels=16),
    ),
    # tiny's UNet with a VAE that the authors' own code can build and run (scripts/authors_parity.py):
    # their tiled-VAE hook computes GroupNorm statistics in 32 groups and their time-aware encoder's mid
    # attention has a head width of 512, both hard-coded for SD-2.1; so 32 groups and 512 channels at
    # the bottom, narrow above.
    "tiny-g32": ModelConfig(
        name="tiny-g32",
        vae=_vae_config((32, 64, 128, 512), 32, 64),
        unet=_unet_config((16, 32, 32, 32), (1, 2, 2, 2), 32, 8, 16),
    ),
    "sd21": ModelConfig(
        name="sd21",
        vae=_vae_config((128, 256, 512, 512), 32, 768),
        unet=_unet_config((320, 640, 1280, 1280), (5, 10, 20, 20), 1024, 32, 64),
    ),
}


def get_config(name: str) -> ModelConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; known: {sorted(CONFIGS)}") from None


# ---------------------------------------------------------------------------
# Time-aware VAE
# ---------------------------------------------------------------------------


class TimeAwareDownEncoderBlock2D(nn.Module):
    """``DownEncoderBlock2D`` whose ResNet blocks take a time embedding.

    Children: ``resnets.{j}`` and, unless last, ``downsamplers.0.conv``
    (pad (0,1,0,1) then a stride-2 3x3 conv).
    """

    def __init__(self, in_channels, out_channels, num_layers, temb_channels, groups, act_fn, add_downsample,
                 time_embedding_norm="scale_shift"):
        super().__init__()
        blocks = []
        for j in range(num_layers):
            blocks.append(
                ResnetBlock2D(
                    in_channels=in_channels if j == 0 else out_channels,
                    out_channels=out_channels,
                    temb_channels=temb_channels,
                    eps=1e-6,
                    groups=groups,
                    dropout=0.0,
                    time_embedding_norm=time_embedding_norm,
                    non_linearity=act_fn,
                    output_scale_factor=1.0,
                    pre_norm=True,
                )
            )
        self.resnets = nn.ModuleList(blocks)
        if add_downsample:
            self.downsamplers = nn.ModuleList(
                [Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=0, name="op")]
            )
        else:
            self.downsamplers = None

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for block in self.resnets:
            hidden = block(hidden, temb)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                hidden = down(hidden)
        return hidden


class TimeAwareEncoder(nn.Module):
    """SD VAE encoder with a sinusoidal timestep embedding fed to every ResNet block."""

    def __init__(self, in_channels, out_channels, down_block_types, block_out_channels, layers_per_block,
                 norm_num_groups, act_fn, double_z=True, temb_channels=256, time_embedding_norm="scale_shift"):
        super().__init__()
        for kind in down_block_types:
            if kind != "DownEncoderBlock2D":
                raise ValueError(f"time-aware encoder: unsupported down block type {kind!r}")
        time_features = max(128, block_out_channels[0])
        self.time_proj = Timesteps(time_features, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_features, temb_channels)

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, stride=1, padding=1)

        blocks = []
        prev = block_out_channels[0]
        for i, width in enumerate(block_out_channels):
            blocks.append(
                TimeAwareDownEncoderBlock2D(
                    in_channels=prev,
                    out_channels=width,
                    num_layers=layers_per_block,
                    temb_channels=temb_channels,
                    groups=norm_num_groups,
                    act_fn=act_fn,
                    add_downsample=i < len(block_out_channels) - 1,
                    time_embedding_norm=time_embedding_norm,
                )
            )
            prev = width
        self.down_blocks = nn.ModuleList(blocks)

        top = block_out_channels[-1]
        # Single-head attention (head dim = channel count), 32-group-style norm
        # taken from the config; for SD sizes this is the authors' head dim 512.
        self.mid_block = UNetMidBlock2D(
            in_channels=top,
            temb_channels=temb_channels,
            resnet_eps=1e-6,
            resnet_act_fn=act_fn,
            output_scale_factor=1,
            resnet_time_scale_shift=time_embedding_norm,
            resnet_groups=norm_num_groups,
            attn_groups=norm_num_groups,
            attention_head_dim=top,
            add_attention=True,
        )
        self.conv_norm_out = nn.GroupNorm(num_channels=top, num_groups=norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(top, 2 * out_channels if double_z else out_channels, 3, padding=1)

    def time_embed(self, timestep: torch.Tensor, batch: int) -> torch.Tensor:
        if timestep.dim() == 0:
            timestep = timestep[None]
        timestep = timestep.expand(batch)
        features = self.time_proj(timestep)
        features = features.to(dtype=self.time_embedding.linear_1.weight.dtype)
        return self.time_embedding(features)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep, sample.shape[0])
        hidden = self.conv_in(sample)
        for block in self.down_blocks:
            hidden = block(hidden, emb)
        hidden = self.mid_block(hidden, emb)
        hidden = self.conv_norm_out(hidden)
        hidden = self.conv_act(hidden)
        return self.conv_out(hidden)


class TimeAwareAutoencoderKL(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """The authors' ``TimeAwareAutoencoderKL`` (same config keys, same parameter names)."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: Tuple[str, ...] = ("DownEncoderBlock2D",),
        up_block_types: Tuple[str, ...] = ("UpDecoderBlock2D",),
        block_out_channels: Tuple[int, ...] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        scaling_factor: float = SCALING_FACTOR,
        force_upcast: bool = True,
        time_scale_shift: str = "scale_shift",
        latent_time_scale: bool = False,
        patch_shortcuts: bool = False,
        shortcut_decode_kernel: int = 1,
        shortcut_decode_head: Optional[Tuple[int, int]] = None,
    ):
        super().__init__()
        if time_scale_shift != "scale_shift":
            raise ValueError(f"time_vae: time_scale_shift {time_scale_shift!r} is not supported (scale_shift only)")
        self.encoder = TimeAwareEncoder(
            in_channels=in_channels,
            out_channels=latent_channels,
            down_block_types=down_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            double_z=True,
        )
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
        )
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        # Two additions of ours, not in the authors' time_vae (both off by default, so their checkpoints
        # load unchanged); the trained "nano" (export/train.py) uses both:
        # * latent_time_scale: the posterior mean is multiplied by sqrt(alphas_cumprod[t]), which makes the
        #   encoder's latent the signal part of a noisy latent at t (z_t = sqrt(acp) * z_0 + ...). Then
        #   x0 = z / sqrt(acp[t]) - eps needs only a small eps at every t, instead of
        #   eps ~ z * (1 / sqrt(acp[t]) - 1), a 14x range that a GroupNorm-terminated UNet learns slowly.
        # * patch_shortcuts: linear space-to-channel shortcuts around the encoder and the decoder (as in
        #   DC-AE, Chen et al. 2024), see PatchShortcuts.
        self.mean_scale = alphas_cumprod().sqrt() if latent_time_scale else None
        factor = 2 ** (len(block_out_channels) - 1)
        self.shortcuts = (PatchShortcuts(in_channels, latent_channels, factor, shortcut_decode_kernel,
                                         shortcut_decode_head)
                          if patch_shortcuts else None)

    def encode_moments(self, image: torch.Tensor, timestep: torch.Tensor):
        """Posterior mean and clamped log-variance (raw latents, not scaled)."""
        mean, logvar = torch.chunk(self.quant_conv(self.encoder(image, timestep)), 2, dim=1)
        return finish_encode(mean, logvar, image, timestep, self.mean_scale, self.shortcuts)

    def decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        """Decoder on an unscaled latent (x0 / scaling_factor); output not clamped."""
        return finish_decode(self.decoder(self.post_quant_conv(latent)), latent, self.shortcuts)


class PatchShortcuts(nn.Module):
    """Linear paths between ``factor`` x ``factor`` pixel blocks and latent cells.

    ``encode``: pixel-unshuffle the image into ``3 * factor^2`` channels per latent cell, then a 1x1 conv
    to the latent channels (added to the encoder's mean). ``decode``: a ``decode_kernel`` x
    ``decode_kernel`` conv from the latent to ``3 * factor^2`` channels, pixel-shuffled back to an image
    (added to the decoder's output). Started from least-squares fits on training patches
    (export/train.py), the VAE begins as a good linear upscaler and its deep paths learn what a linear
    map cannot, which is what lets a small VAE train on a CPU. ``encode`` is local to one block, so
    tiles aligned to latent cells see exactly what the whole image does; ``decode`` with a 3x3 kernel
    reads the neighbouring cells too (measured on clean held-out photos, fitted linear maps: 1x1 32.52
    dB, the same as bicubic; 3x3 32.82 dB, Lanczos's), which the tiles' overlap covers like the
    decoder's own 3x3 convolutions.

    ``decode_head`` = (width, depth) adds a non-linear part to ``decode``: ``depth`` 3x3 convolutions
    (SiLU after each) at latent resolution, ``width`` channels, then a 3x3 convolution to
    ``3 * factor^2`` channels, summed with ``decode_proj`` before the pixel shuffle (ESPCN, Shi et al.
    2016, on the latent). Everything runs at 1/factor of the output's side, so it costs little, and it
    has no normalization, so tiles see what the whole image does within its reach of ``depth + 1``
    latent cells. Its last convolution starts at zero (export/train.py), so training starts from the
    linear map.
    """

    def __init__(self, image_channels: int, latent_channels: int, factor: int, decode_kernel: int = 1,
                 decode_head: Optional[Tuple[int, int]] = None):
        super().__init__()
        if decode_kernel < 1 or decode_kernel % 2 == 0:
            raise ValueError(f"shortcut_decode_kernel must be odd and positive, not {decode_kernel}")
        self.factor = factor
        block_channels = image_channels * factor * factor
        self.encode_proj = nn.Conv2d(block_channels, latent_channels, 1)
        self.decode_proj = nn.Conv2d(latent_channels, block_channels, decode_kernel, padding=decode_kernel // 2)
        self.decode_head = None
        if decode_head is not None:
            width, depth = (int(v) for v in decode_head)
            if width < 1 or depth < 1:
                raise ValueError(f"shortcut_decode_head must be (width >= 1, depth >= 1), not {decode_head}")
            layers: list = []
            for index in range(depth):
                layers += [nn.Conv2d(latent_channels if index == 0 else width, width, 3, padding=1), nn.SiLU()]
            layers.append(nn.Conv2d(width, block_channels, 3, padding=1))
            self.decode_head = nn.Sequential(*layers)

    def linear_parameters(self) -> list:
        """The two linear maps' weights and biases (not the decode head's)."""
        return [p for m in (self.encode_proj, self.decode_proj) for p in m.parameters()]

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode_proj(torch.nn.functional.pixel_unshuffle(image, self.factor))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        blocks = self.decode_proj(latent)
        if self.decode_head is not None:
            blocks = blocks + self.decode_head(latent)
        return torch.nn.functional.pixel_shuffle(blocks, self.factor)


def finish_encode(mean: torch.Tensor, logvar: torch.Tensor, image: torch.Tensor, timestep: torch.Tensor,
                  mean_scale: Optional[torch.Tensor], shortcuts: Optional[PatchShortcuts]):
    """quant_conv's output, split -> mean, log-variance clamped to [-30, 20] (spec step 7).

    With ``patch_shortcuts`` the shortcut of ``image`` is added to the mean; with ``latent_time_scale``
    (``mean_scale``: a [1000] table indexed by ``timestep``) the mean is then multiplied by it.
    """
    if shortcuts is not None:
        mean = mean + shortcuts.encode(image)
    if mean_scale is not None:
        mean = mean * mean_scale.to(mean.dtype)[timestep].reshape(-1, 1, 1, 1)
    return mean, torch.clamp(logvar, -30.0, 20.0)


def finish_decode(decoded: torch.Tensor, latent: torch.Tensor, shortcuts: Optional[PatchShortcuts]):
    """The decoder's output plus, with ``patch_shortcuts``, the shortcut of ``latent`` (unscaled)."""
    return decoded if shortcuts is None else decoded + shortcuts.decode(latent)


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------


def build_vae(cfg: ModelConfig) -> TimeAwareAutoencoderKL:
    return TimeAwareAutoencoderKL(**cfg.vae).eval()


def build_unet(cfg: ModelConfig) -> UNet2DConditionModel:
    return UNet2DConditionModel(**cfg.unet).eval()


def use_plain_attention(module: nn.Module) -> None:
    """Select diffusers' scaled-dot-product attention processor everywhere."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    for sub in module.modules():
        if isinstance(sub, Attention):
            sub.set_processor(AttnProcessor2_0())


# ---------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------

BETA_START = 0.00085
BETA_END = 0.012
NUM_TRAIN_TIMESTEPS = 1000


def alphas_cumprod(beta_start: float = BETA_START, beta_end: float = BETA_END,
                   num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """float32 [N]: the values diffusers' DDPMScheduler holds for scaled_linear."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


# ---------------------------------------------------------------------------
# The three exported graphs
# ---------------------------------------------------------------------------


class VaeEncoderGraph(nn.Module):
    """image [B,3,H,W] in [-1,1], timestep [B] int64 -> latent_mean, latent_logvar."""

    def __init__(self, vae: TimeAwareAutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor, timestep: torch.Tensor):
        return self.vae.encode_moments(image, timestep)


class UNetGraph(nn.Module):
    """latent [B,4,h,w] (scaled), timestep [B] int64, encoder_hidden_states [B,77,D] -> residual."""

    def __init__(self, unet: UNet2DConditionModel):
        super().__init__()
        self.unet = unet

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        return self.unet(latent, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class VaeDecoderGraph(nn.Module):
    """latent [B,4,h,w] in the UNet's (scaled) space -> image [B,3,8h,8w], not clamped."""

    def __init__(self, vae: TimeAwareAutoencoderKL, scaling_factor: Optional[float] = None):
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else vae.config.scaling_factor)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode_raw(latent / self.scaling_factor)


@dataclasses.dataclass
class TadsrModels:
    """Everything the exporter and the reference pipeline need."""

    config_name: str
    vae: TimeAwareAutoencoderKL
    unet: UNet2DConditionModel
    alphas_cumprod: torch.Tensor
    prompt_embeds: torch.Tensor  # [1, 77, D] float32
    prompt_text: Optional[str]
    source: Dict
    text_encoder: Optional[nn.Module] = None
    tokenizer: Optional[object] = None
    schedule: Optional[Dict] = None

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def encoder_graph(self) -> VaeEncoderGraph:
        return VaeEncoderGraph(self.vae).eval()

    def unet_graph(self) -> UNetGraph:
        return UNetGraph(self.unet).eval()

    def decoder_graph(self) -> VaeDecoderGraph:
        return VaeDecoderGraph(self.vae).eval()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fan_in(shape) -> int:
    return int(math.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
