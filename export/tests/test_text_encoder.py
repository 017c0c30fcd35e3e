"""--text-encoder: a checkpoint with text_encoder/ + tokenizer/ (tiny random CLIP)."""

from __future__ import annotations

import numpy as np
import torch

from export.checkpoint import encode_prompt
from export.manifest import read_manifest, verify_bundle
from export.onnx_export import ort_session
from export.tests.conftest import TEXT_PROMPT as PROMPT


def test_prompt_embeds_come_from_text_encoder(text_models):
    assert text_models.prompt_text == PROMPT
    want = encode_prompt(text_models.text_encoder, text_models.tokenizer, PROMPT)
    assert torch.equal(text_models.prompt_embeds, want)
    other = encode_prompt(text_models.text_encoder, text_models.tokenizer, "a dog")
    assert (other - want).abs().max() > 1e-3


def test_manifest_lists_text_encoder_and_tokenizer(text_bundle):
    m = read_manifest(text_bundle)
    comp = m["components"]["text_encoder"]
    assert comp["file"] == "text_encoder/model.onnx"
    assert comp["tokenizer"]["file"] == "tokenizer/tokenizer.json"
    assert [i["name"] for i in comp["inputs"]] == ["input_ids"]
    assert comp["inputs"][0]["dtype"] == "int64" and comp["inputs"][0]["shape"] == ["batch", 77]
    assert comp["outputs"][0]["name"] == "last_hidden_state" and comp["outputs"][0]["shape"] == ["batch", 77, 32]
    assert m["prompt"]["text"] == PROMPT
    assert verify_bundle(text_bundle) == []


def test_tokenizer_json_and_text_graph_give_the_prompt_embeds(text_models, text_bundle):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(text_bundle / "tokenizer/tokenizer.json"))
    ids = tok.encode(PROMPT).ids
    want_ids = text_models.tokenizer(PROMPT, max_length=77, padding="max_length", truncation=True).input_ids
    assert ids == want_ids and len(ids) == 77
    long_ids = tok.encode("the cat " * 60).ids
    assert len(long_ids) == 77
    sess = ort_session(text_bundle / "text_encoder/model.onnx")
    (hidden,) = sess.run(None, {"input_ids": np.array([ids], dtype=np.int64)})
    embeds = np.load(text_bundle / "prompt_embeds.npy")
    assert np.abs(hidden - embeds).max() <= 1e-4
    batch = np.array([ids, tok.encode("a dog").ids], dtype=np.int64)
    (hidden2,) = sess.run(None, {"input_ids": batch})
    with torch.no_grad():
        ref = text_models.text_encoder(torch.from_numpy(batch))[0].numpy()
    assert np.abs(hidden2 - ref).max() <= 1e-4
