"""Export of the optional text encoder and its tokenizer (``--text-encoder``).

``text_encoder/model.onnx``: ``input_ids`` [B, 77] int64 -> ``last_hidden_state``
[B, 77, D] (what the UNet takes as ``encoder_hidden_states``).

``tokenizer/tokenizer.json``: the Hugging Face ``tokenizers`` file of the
checkpoint's CLIP tokenizer, with truncation and padding to 77 tokens built in
(pad token as the checkpoint's tokenizer has it), so that ``encode(prompt)``
gives the ids the authors' code feeds the text encoder.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from .manifest import component_entry, sha256_file
from .onnx_export import export_graph, text_encoder_spec

MAX_LENGTH = 77


class TextEncoderGraph(nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids=input_ids, return_dict=False)[0]


def fast_tokenizer_json(tokenizer):
    """The backend ``tokenizers.Tokenizer`` with truncation/padding to 77 ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise SystemExit("the checkpoint's tokenizer has no fast (tokenizers) backend to write tokenizer.json")
    backend = copy.deepcopy(backend)
    length = int(min(getattr(tokenizer, "model_max_length", MAX_LENGTH), MAX_LENGTH))
    pad_token = tokenizer.pad_token if tokenizer.pad_token is not None else tokenizer.eos_token
    pad_id = tokenizer.convert_tokens_to_ids(pad_token)
    backend.enable_truncation(max_length=length)
    backend.enable_padding(length=length, pad_id=int(pad_id), pad_token=str(pad_token))
    return backend


def export_text_encoder(models, out: Path, dtype: torch.dtype) -> Dict:
    text_encoder = models.text_encoder
    hidden = int(text_encoder.config.hidden_size)
    spec = text_encoder_spec(hidden, dtype)
    module = TextEncoderGraph(text_encoder if dtype == torch.float32 else copy.deepcopy(text_encoder).to(dtype))
    ids = models.tokenizer("a photo", max_length=MAX_LENGTH, padding="max_length", truncation=True,
                           return_tensors="pt").input_ids.to(torch.int64)
    rel = "text_encoder/model.onnx"
    data_files = export_graph(module.eval(), (ids,), spec, out / rel)
    tok_rel = "tokenizer/tokenizer.json"
    (out / "tokenizer").mkdir(parents=True, exist_ok=True)
    fast_tokenizer_json(models.tokenizer).save(str(out / tok_rel), pretty=False)
    extra = {"tokenizer": {"file": tok_rel, "sha256": sha256_file(out / tok_rel), "max_length": MAX_LENGTH}}
    return component_entry(out, rel, data_files, spec, extra)
