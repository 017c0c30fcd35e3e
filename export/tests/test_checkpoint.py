"""Loading the authors' checkpoint format end to end (on a synthetic checkpoint)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from export.checkpoint import CheckpointError, load_checkpoint

RANK = 4
SCALE = 8 / RANK  # PEFT's default lora_alpha = 8


@pytest.fixture(scope="module")
def loaded(synthetic_checkpoint):
    return load_checkpoint(synthetic_checkpoint, prompt_embeds=synthetic_checkpoint / "prompt_embeds.npy")


@pytest.fixture(scope="module")
def unmerged(synthetic_checkpoint):
    return load_checkpoint(synthetic_checkpoint, prompt_embeds=synthetic_checkpoint / "prompt_embeds.npy",
                           merge=False, hash_files=False)


@pytest.fixture(scope="module")
def pkl(synthetic_checkpoint):
    return torch.load(str(synthetic_checkpoint / "tadsr.pkl"), map_location="cpu", weights_only=True)


def test_checkpoint_folder_has_authors_layout(synthetic_checkpoint, pkl):
    for rel in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "time_vae/config.json",
                "time_vae/diffusion_pytorch_model.bin", "scheduler/scheduler_config.json", "tadsr.pkl"):
        assert (synthetic_checkpoint / rel).is_file(), rel
    assert json.loads((synthetic_checkpoint / "time_vae/config.json").read_text())["_class_name"] == \
        "TimeAwareAutoencoderKL"
    assert set(pkl) == {"rank_unet", "rank_vae", "unet_lora_encoder_modules", "unet_lora_decoder_modules",
                        "unet_lora_others_modules", "vae_lora_encoder_modules", "state_dict_unet",
                        "state_dict_vae", "state_dict_vae_time"}
    assert "conv_in.base_layer.weight" in pkl["state_dict_unet"]
    assert any(".lora_A.default_encoder." in k for k in pkl["state_dict_unet"])
    assert any(".lora_B.default_decoder." in k for k in pkl["state_dict_unet"])
    assert any(".lora_B.default_others." in k for k in pkl["state_dict_unet"])
    assert "quant_conv" in pkl["vae_lora_encoder_modules"]
    assert not any("time" in m for m in pkl["vae_lora_encoder_modules"])
    for key, value in pkl["state_dict_unet"].items():
        if ".lora_B." in key:
            assert value.abs().max() > 0, key


def test_merged_equals_unmerged_peft(loaded, unmerged):
    from peft.tuners.lora import LoraLayer

    assert any(isinstance(m, LoraLayer) for m in unmerged.unet.modules())
    assert not any(isinstance(m, LoraLayer) for m in loaded.unet.modules())
    assert not any(isinstance(m, LoraLayer) for m in loaded.vae.modules())
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 72, 56, generator=gen) * 2 - 1
    t = torch.tensor([650])
    latent = torch.randn(1, 4, 9, 7, generator=gen)
    ehs = torch.randn(1, 77, 32, generator=gen)
    with torch.no_grad():
        for a, b in zip(loaded.encoder_graph()(image, t), unmerged.encoder_graph()(image, t), strict=True):
            assert (a - b).abs().max() <= 1e-5
        diff = (loaded.unet_graph()(latent, t, ehs) - unmerged.unet_graph()(latent, t, ehs)).abs().max()
        assert diff <= 1e-5
        diff = (loaded.decoder_graph()(latent) - unmerged.decoder_graph()(latent)).abs().max()
        assert diff <= 1e-5
        # and the adapters matter: switched off, the UNet gives something else
        unmerged.unet.disable_adapters()
        try:
            off = unmerged.unet_graph()(latent, t, ehs)
        finally:
            unmerged.unet.enable_adapters()
        assert (off - loaded.unet_graph()(latent, t, ehs)).abs().max() > 1e-2


def test_merged_weights_follow_lora_formula(synthetic_checkpoint, loaded, pkl):
    """W = W_base + (8/rank) * B @ A, computed here without PEFT."""
    base = load_file(str(synthetic_checkpoint / "unet/diffusion_pytorch_model.safetensors"))
    sd = pkl["state_dict_unet"]
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    want = base[f"{name}.weight"] + SCALE * sd[f"{name}.lora_B.default_encoder.weight"] @ \
        sd[f"{name}.lora_A.default_encoder.weight"]
    got = dict(loaded.unet.named_parameters())[f"{name}.weight"]
    assert torch.allclose(got, want, atol=1e-6)
    name = "up_blocks.1.resnets.0.conv1"
    a = sd[f"{name}.lora_A.default_decoder.weight"]           # [r, in, 3, 3]
    b = sd[f"{name}.lora_B.default_decoder.weight"][:, :, 0, 0]  # [out, r]
    want = base[f"{name}.weight"] + SCALE * torch.einsum("or,rikl->oikl", b, a)
    got = dict(loaded.unet.named_parameters())[f"{name}.weight"]
    assert torch.allclose(got, want, atol=1e-6)
    # conv_in: the retrained base from the pkl (not unet/'s) plus its LoRA
    a = sd["conv_in.lora_A.default_encoder.weight"]
    b = sd["conv_in.lora_B.default_encoder.weight"][:, :, 0, 0]
    want = sd["conv_in.base_layer.weight"] + SCALE * torch.einsum("or,rikl->oikl", b, a)
    assert torch.allclose(loaded.unet.conv_in.weight, want, atol=1e-6)
    assert torch.equal(loaded.unet.conv_in.bias, sd["conv_in.base_layer.bias"])
    assert not torch.allclose(base["conv_in.weight"], sd["conv_in.base_layer.weight"])


def test_vae_time_weights_and_lora_come_from_pkl(synthetic_checkpoint, loaded, pkl):
    base = torch.load(str(synthetic_checkpoint / "time_vae/diffusion_pytorch_model.bin"), weights_only=True)
    vae = dict(loaded.vae.named_parameters())
    for key, value in pkl["state_dict_vae_time"].items():
        assert torch.equal(vae[key], value), key
    key = "encoder.time_embedding.linear_1.weight"
    assert not torch.equal(base[key], pkl["state_dict_vae_time"][key])
    sd = pkl["state_dict_vae"]
    want = base["quant_conv.weight"] + SCALE * torch.einsum(
        "or,rikl->oikl", sd["quant_conv.lora_B.default_encoder.weight"][:, :, 0, 0],
        sd["quant_conv.lora_A.default_encoder.weight"])
    assert torch.allclose(vae["quant_conv.weight"], want, atol=1e-6)
    # the decoder is the plain base decoder
    assert torch.equal(vae["decoder.conv_out.weight"], base["decoder.conv_out.weight"])


def _variant(src: Path, dst: Path, mutate) -> Path:
    dst.mkdir()
    for sub in ("unet", "time_vae", "scheduler"):
        os.symlink(src / sub, dst / sub)
    shutil.copy(src / "prompt_embeds.npy", dst / "prompt_embeds.npy")
    data = torch.load(str(src / "tadsr.pkl"), map_location="cpu", weights_only=True)
    mutate(data)
    torch.save(data, str(dst / "tadsr.pkl"))
    return dst


def _first(keys, needle):
    return next(k for k in keys if needle in k)


MALFORMED = {
    "missing_rank": (lambda d: d.pop("rank_unet"), "rank_unet"),
    "missing_time_dict": (lambda d: d.pop("state_dict_vae_time"), "state_dict_vae_time"),
    "missing_lora_tensor": (
        lambda d: d["state_dict_unet"].pop("up_blocks.1.resnets.0.conv1.lora_B.default_decoder.weight"),
        "up_blocks.1.resnets.0.conv1.lora_B.default_decoder.weight"),
    "missing_conv_in": (lambda d: d["state_dict_unet"].pop("conv_in.base_layer.bias"), "conv_in.base_layer.bias"),
    "missing_time_tensor": (
        lambda d: d["state_dict_vae_time"].pop("encoder.mid_block.resnets.1.time_emb_proj.weight"),
        "encoder.mid_block.resnets.1.time_emb_proj.weight"),
    "wrong_rank": (lambda d: d.__setitem__("rank_unet", 8), "rank_unet"),
    "wrong_shape": (
        lambda d: d["state_dict_vae"].__setitem__(
            "encoder.conv_in.lora_A.default_encoder.weight", torch.zeros(4, 3, 1, 1)),
        "encoder.conv_in.lora_A.default_encoder.weight"),
    "unknown_target": (lambda d: d["unet_lora_others_modules"].append("mid_block.no_such_layer"),
                       "mid_block.no_such_layer"),
    "extra_tensor": (lambda d: d["state_dict_vae"].__setitem__("encoder.bogus.lora_A.default_encoder.weight",
                                                               torch.zeros(1)),
                     "encoder.bogus.lora_A.default_encoder.weight"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_pkl_names_the_key(synthetic_checkpoint, tmp_path, case):
    mutate, key = MALFORMED[case]
    folder = _variant(synthetic_checkpoint, tmp_path / case, mutate)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder, prompt_embeds=folder / "prompt_embeds.npy", hash_files=False)
    assert key in str(info.value)


def test_missing_text_encoder_needs_prompt_embeds(synthetic_checkpoint):
    with pytest.raises(CheckpointError, match="--prompt-embeds"):
        load_checkpoint(synthetic_checkpoint)


def test_prompt_embeds_shape_is_checked(synthetic_checkpoint, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 77, 31), dtype=np.float32))
    with pytest.raises(CheckpointError, match=r"\[1, 77, 32\]"):
        load_checkpoint(synthetic_checkpoint, prompt_embeds=bad)


def test_base_weights_must_match_exactly(synthetic_checkpoint, tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    for sub in ("unet", "scheduler"):
        os.symlink(synthetic_checkpoint / sub, folder / sub)
    shutil.copy(synthetic_checkpoint / "tadsr.pkl", folder / "tadsr.pkl")
    (folder / "time_vae").mkdir()
    shutil.copy(synthetic_checkpoint / "time_vae/config.json", folder / "time_vae/config.json")
    state = torch.load(str(synthetic_checkpoint / "time_vae/diffusion_pytorch_model.bin"), weights_only=True)
    state.pop("encoder.time_embedding.linear_2.bias")
    state["encoder.extra.weight"] = torch.zeros(1)
    torch.save(state, str(folder / "time_vae/diffusion_pytorch_model.bin"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder, prompt_embeds=synthetic_checkpoint / "prompt_embeds.npy", hash_files=False)
    assert "encoder.time_embedding.linear_2.bias" in str(info.value)
    assert "encoder.extra.weight" in str(info.value)


def test_cli_exports_checkpoint_bundle(synthetic_checkpoint, loaded, tmp_path, repo):
    out = tmp_path / "bundle"
    # --no-memory: the measurement is export.memory's, tested in test_memory.py
    proc = subprocess.run([sys.executable, "-m", "export", "--weights", str(synthetic_checkpoint), "--out", str(out),
                           "--prompt-embeds", str(synthetic_checkpoint / "prompt_embeds.npy"), "--no-memory"],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    source = manifest["provenance"]["source"]
    assert source["kind"] == "checkpoint"
    assert set(source["files"]) >= {"tadsr.pkl", "unet/config.json", "time_vae/diffusion_pytorch_model.bin"}
    assert manifest["prompt"]["text"] is None
    # the graphs compute the merged model
    from export.onnx_export import ort_session

    sess = ort_session(out / "unet/model.onnx")
    latent = torch.randn(1, 4, 10, 7, generator=torch.Generator().manual_seed(4))
    ehs = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([250])
    (got,) = sess.run(None, {"latent": latent.numpy(), "timestep": t.numpy(), "encoder_hidden_states": ehs.numpy()})
    with torch.no_grad():
        want = loaded.unet_graph()(latent, t, ehs).numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_cli_reports_malformed_checkpoint(synthetic_checkpoint, tmp_path, repo):
    folder = _variant(synthetic_checkpoint, tmp_path / "bad", lambda d: d.pop("rank_vae"))
    proc = subprocess.run([sys.executable, "-m", "export", "--weights", str(folder), "--out", str(tmp_path / "o"),
                           "--prompt-embeds", str(folder / "prompt_embeds.npy")],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "rank_vae" in proc.stderr
