"""Runs the authors' own test script (GitHub zty557/TADSR, `test_tadsr.py`)
unmodified, on the CPU, and records what its model returns.

Called by `scripts/authors_parity.py` in a process of its own (the authors
ship a fork of diffusers 0.25 that must shadow the installed one):

    python scripts/authors_code_side.py --authors DIR --record DIR --tags TEXT -- <test_tadsr.py arguments>

What is changed around their code, and only this (each a shim installed
before their script runs; their files are read from DIR, never copied):

* `huggingface_hub.cached_download`, which their diffusers fork imports and
  today's huggingface_hub no longer has, is given `hf_hub_download` (only
  local folders are read, so neither is ever called to download);
* "cuda" devices are read as "cpu" (`Tensor.to/.cuda`, `Module.to/.cuda`,
  the device constants of their `my_utils/devices.py`): their script moves
  everything to the GPU by name;
* the RAM/DAPE tagger (a 1.6 GB Swin-L checkpoint) is replaced by fixed
  tags (`--tags`, written as RAM writes them: "cat | sofa"): their prompt
  is still built by their code, as f"{tags}, {args.prompt},";
* their time-aware encoder hard-codes `attention_head_dim=512` for its mid
  attention (one head at SD-2.1's 512 channels; at the tiny test width of
  32 channels that is 0 heads and the weights do not load): below 512
  channels it gets the last block's width instead, one head as at full size
  (at 512 channels nothing changes);
* `DiagonalGaussianDistribution.sample` returns the mean (their code samples
  the posterior with torch's global generator; tadsr-edge's default is the
  mean, and the noise itself is not what is being compared);
* with `--set-timesteps`, the test model gets the `timesteps` attribute that
  their latent-tiling path reads and never sets (it crashes without it;
  the intent is the same t, see the spec).

Each call of their model's `forward` is recorded under --record as
`NNN_output.npy` ([H, W, 3] float32, `output * 0.5 + 0.5`, i.e. in [0, 1]
before their 8-bit conversion and color fix) and `NNN_upscaled.png` (the
upscaled input they fed, recovered exactly from `lq`), plus `calls.json`
with the prompt of each call.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import types
from pathlib import Path


def _cpu_device(value):
    import torch

    if isinstance(value, str) and value.startswith("cuda"):
        return "cpu"
    if isinstance(value, torch.device) and value.type == "cuda":
        return torch.device("cpu")
    return value


def _install_cpu_shims() -> None:
    import torch

    def wrap_to(original):
        def to(self, *args, **kwargs):
            args = tuple(_cpu_device(a) for a in args)
            if "device" in kwargs:
                kwargs["device"] = _cpu_device(kwargs["device"])
            return original(self, *args, **kwargs)
        return to

    from my_utils import devices  # the authors' module: its devices are module constants

    for name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer"):
        setattr(devices, name, torch.device("cpu"))
    torch.Tensor.to = wrap_to(torch.Tensor.to)
    torch.nn.Module.to = wrap_to(torch.nn.Module.to)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self


def _install_tagger_stub(tags: str) -> None:
    import torch

    ram = types.ModuleType("ram")
    ram.inference_ram = lambda image, model: [tags]  # RAM's: one "a | b | c" string per image
    ram_models = types.ModuleType("ram.models")
    ram_lora = types.ModuleType("ram.models.ram_lora")
    ram_lora.ram = lambda **kwargs: torch.nn.Identity()
    ram.models = ram_models
    ram_models.ram_lora = ram_lora
    sys.modules.update({"ram": ram, "ram.models": ram_models, "ram.models.ram_lora": ram_lora})


def _install_head_width_shim() -> None:
    from diffusers.models.autoencoders import vae as their_vae

    their_init = their_vae.TimeAwareEncoder.__init__

    def init(self, *args, **kwargs):
        width = kwargs.get("block_out_channels", (512,))[-1]
        if width < 512:
            kwargs.setdefault("attention_head_dim", width)
        their_init(self, *args, **kwargs)

    their_vae.TimeAwareEncoder.__init__ = init


def _install_recorder(record: Path, set_timesteps: bool) -> None:
    import numpy as np
    import tadsr  # the authors' module
    import torch
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from PIL import Image

    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mean
    calls = []
    their_forward = tadsr.TADSR_test.forward

    def forward(self, lq, prompt, timesteps):
        if set_timesteps:
            self.timesteps = torch.tensor([int(timesteps)], dtype=torch.long)
        output = their_forward(self, lq, prompt, timesteps)
        index = len(calls)
        image01 = (output[0].float() * 0.5 + 0.5).permute(1, 2, 0).cpu().numpy().astype(np.float32)
        np.save(record / f"{index:03d}_output.npy", image01)
        upscaled = ((lq[0].float() + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
        Image.fromarray(upscaled.permute(1, 2, 0).cpu().numpy()).save(record / f"{index:03d}_upscaled.png")
        calls.append({"index": index, "prompt": prompt, "timestep": int(timesteps),
                      "shape": list(image01.shape)})
        (record / "calls.json").write_text(json.dumps(calls, indent=1))
        return output

    tadsr.TADSR_test.forward = forward


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: authors_code_side.py --authors DIR --record DIR --tags TEXT -- <test_tadsr.py args>")
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--authors", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--tags", required=True)
    parser.add_argument("--set-timesteps", action="store_true")
    args = parser.parse_args(argv[:split])
    authors = Path(args.authors).resolve()
    record = Path(args.record).resolve()
    record.mkdir(parents=True, exist_ok=True)

    sys.path.insert(0, str(authors))
    import huggingface_hub

    if not hasattr(huggingface_hub, "cached_download"):
        huggingface_hub.cached_download = huggingface_hub.hf_hub_download
    os.chdir(authors)
    _install_cpu_shims()
    _install_tagger_stub(args.tags)
    _install_head_width_shim()
    os.chdir(authors)
    _install_recorder(record, args.set_timesteps)
    sys.argv = ["test_tadsr.py", *argv[split + 1:]]
    runpy.run_path(str(authors / "test_tadsr.py"), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
