"""A tiny random CLIP text encoder and a small CLIP BPE tokenizer, for tests.

The tokenizer has CLIP's byte-level alphabet (each byte's printable stand-in,
alone and with the end-of-word mark ``</w>``), a handful of merges, the two
special tokens, and pads with ``!`` like SD-2.1's tokenizer.  The text
encoder is a 2-layer ``CLIPTextModel`` with seeded weights whose hidden size
equals the UNet's cross-attention width.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "n</w>"), ("i", "n"),
          ("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]


def byte_alphabet():
    """Byte -> printable character, the table byte-level BPE tokenizers (GPT-2, CLIP) use."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table = {}
    extra = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def tiny_vocab():
    chars = [byte_alphabet()[b] for b in range(256)]
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}


def write_clip_tokenizer(tok_dir: Path, vocab: dict, merges: list) -> None:
    """A CLIP tokenizer folder as SD-2.1 ships it (vocab.json, merges.txt, pads with ``!``)."""
    tok_dir = Path(tok_dir)
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (tok_dir / "merges.txt").write_text(text, encoding="utf-8")
    (tok_dir / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!",
        "unk_token": "<|endoftext|>"}, indent=2))
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>",
        "do_lower_case": True}, indent=2))


def write_tiny_clip(root: Path, hidden_size: int = 32, seed: int = 0) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(root)
    vocab = tiny_vocab()
    write_clip_tokenizer(root / "tokenizer", vocab, MERGES)

    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu", projection_dim=hidden_size,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["!"],
    )
    torch.manual_seed(seed)
    model = CLIPTextModel(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "layer_norm" in name or "norm" in name:
                continue
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(str(root / "text_encoder"))
    _use_published_key_names(root / "text_encoder" / "model.safetensors")


def _use_published_key_names(weights: Path) -> None:
    """Rewrites the tensors' names as SD-2.1's published text_encoder file has
    them (``text_model.encoder.layers.0...``): transformers 5 saves a
    CLIPTextModel without that prefix, which older readers (the authors'
    pinned transformers 4.28) do not find."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    renamed = {name if name.startswith("text_model.") else f"text_model.{name}": tensor
               for name, tensor in tensors.items()}
    save_file(renamed, str(weights), metadata={"format": "pt"})
