"""models/sd21 plus an SD-2.1-size text encoder: what `--prompt` costs at full size, measured.

Writes models/sd21-text (git-ignored): models/sd21's files hard-linked (no copy), a text encoder of SD-2.1-base's
shape (OpenCLIP ViT-H's text tower as diffusers holds it: 23 layers of width 1024, 16 heads, 49408 tokens), seeded
random weights, exported as the exporter's --text-encoder does, and SD-2.1's real CLIP tokenizer (the vocabulary
scripts/setup.sh downloads for the tests). Random weights: the timing and memory are real, the embedding is not.

    make sd21 && PYTHONPATH=. $VENV/bin/python scripts/make_sd21_text_bundle.py
    tadsr-edge prompt --model models/sd21-text "a photo of a cat" -o /tmp/cat.npy
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]

# stabilityai/stable-diffusion-2-1-base, text_encoder/config.json
SD21_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
                 layer_norm_eps=1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO / "models" / "sd21")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "sd21-text")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    from export.manifest import read_manifest, write_manifest
    from export.tests.clip_vocab import clip_vocab_and_merges, vocab_file
    from export.text_encoder import export_text_encoder
    from export.tiny_clip import write_clip_tokenizer

    if not (args.source / "manifest.json").is_file():
        raise SystemExit(f"{args.source} has no manifest.json: run `make sd21` first")
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.source, args.out, copy_function=os.link)

    torch.manual_seed(args.seed)
    config = CLIPTextConfig(**SD21_TEXT, bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
    model = CLIPTextModel(config).eval()
    print(f"text encoder: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    with tempfile.TemporaryDirectory() as work:
        vocab, merges = clip_vocab_and_merges(vocab_file())
        write_clip_tokenizer(Path(work), vocab, merges)
        tokenizer = AutoTokenizer.from_pretrained(work)
        entry = export_text_encoder(SimpleNamespace(text_encoder=model, tokenizer=tokenizer), args.out,
                                    torch.float32)
    manifest = read_manifest(args.out)
    manifest["components"]["text_encoder"] = entry
    manifest["name"] = f"{manifest.get('name') or 'sd21'} + SD-2.1-size text encoder (random)"
    # written anew (temporary file + rename): the hard link to models/sd21's manifest is left alone
    write_manifest(args.out, manifest)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
