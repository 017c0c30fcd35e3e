"""manifest.json against docs/manifest.schema.json, the contract the runtime's tests/manifest_schema.rs also checks."""

from __future__ import annotations

import copy
import json

import pytest

from export.manifest import MANIFEST_NAME, SCHEMA_PATH, read_manifest, schema_errors, write_manifest


@pytest.fixture(scope="module")
def tiny_manifest(repo):
    return read_manifest(repo / "models" / "tiny")


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_models_tiny_conforms(tiny_manifest):
    assert schema_errors(tiny_manifest) == []


def test_fresh_exports_conform(fresh_tiny_bundle, fresh_tiny_fp16_bundle):
    # export_bundle already validated them on writing; this checks what landed on disk.
    for bundle in (fresh_tiny_bundle, fresh_tiny_fp16_bundle):
        assert schema_errors(read_manifest(bundle)) == [], bundle
    assert read_manifest(fresh_tiny_fp16_bundle)["precision"] == "fp16"


def test_text_encoder_and_int8_entries_conform(tiny_manifest):
    """The optional parts the tiny bundle lacks, as export/text_encoder.py and export/quantize.py write them."""
    manifest = copy.deepcopy(tiny_manifest)
    text_port = {"name": "input_ids", "dtype": "int64", "shape": ["batch", 77], "layout": "NL"}
    hidden = {"name": "last_hidden_state", "dtype": "float32", "shape": ["batch", 77, 32], "layout": "NLD"}
    manifest["components"]["text_encoder"] = {
        "file": "text_encoder/model.onnx", "sha256": "0" * 64, "external_data": [],
        "tokenizer": {"file": "tokenizer/tokenizer.json", "sha256": "1" * 64, "max_length": 77},
        "inputs": [text_port], "outputs": [hidden]}
    manifest["provenance"]["source"] = {"kind": "checkpoint", "files": {"tadsr.pkl": "2" * 64},
                                        "prompt_embeds": "3" * 64}
    manifest["precision"] = "int8-qdq"
    manifest["quantization"] = {"method": "static QDQ", "keep_fp32": None, "timesteps": [500],
                                "calibration_images": ["square.png"], "components": {"vae_decoder": {}}}
    assert schema_errors(manifest) == []


def _required_paths(schema, node, path):
    """(path to an object in the manifest, required key) for every object the schema requires keys of."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].split("/")[-1]]
    for sub in node.get("allOf", []):
        yield from _required_paths(schema, sub, path)
    for key in node.get("required", []):
        yield path, key
    for key, sub in node.get("properties", {}).items():
        yield from _required_paths(schema, sub, path + [key])
    if isinstance(node.get("items"), dict):
        yield from _required_paths(schema, node["items"], path + [0])


def _get(manifest, path):
    for key in path:
        manifest = manifest[key]
    return manifest


def _tiny_required_cases():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    manifest = read_manifest(repo / "models" / "tiny")
    cases = []
    for path, key in _required_paths(schema, schema, []):
        try:
            if key in _get(manifest, path):
                cases.append((tuple(path), key))
        except (KeyError, IndexError):
            pass  # an optional object models/tiny does not have
    return cases


REQUIRED_CASES = _tiny_required_cases()


def test_required_cases_reach_every_level():
    where = {(path[:1], key) for path, key in REQUIRED_CASES}
    assert ((), "precision") in where and (("components",), "vae_decoder") in where
    keys = {key for _, key in REQUIRED_CASES}
    assert {"latent_input", "group_norm", "dtype", "layout", "alphas_cumprod", "embeds_file", "source"} <= keys


def _case_id(value):
    return "/".join(map(str, value)) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("path", "key"), REQUIRED_CASES, ids=_case_id)
def test_missing_required_field_fails(tiny_manifest, path, key):
    manifest = copy.deepcopy(tiny_manifest)
    del _get(manifest, path)[key]
    errors = schema_errors(manifest)
    assert any(repr(key) in e and "required" in e for e in errors), errors


@pytest.mark.parametrize(("path", "bad"), [
    (("format",), "tadsr-bundle-2"),
    (("format_version",), 2),
    (("precision",), "bf16"),
    (("precision",), "int8"),  # int8-qdq is the name
    (("components", "vae_encoder", "inputs", 0, "dtype"), "bfloat16"),
    (("components", "unet", "inputs", 2, "layout"), "NHWC"),
    (("components", "vae_decoder", "latent_input"), "raw"),
    (("components", "vae_decoder_tiled", "latent_input"), "raw"),
    (("components", "unet", "outputs", 0, "shape", 0), "frames"),
    (("components", "unet", "outputs", 0, "shape", 1), 0),
    (("schedule", "type"), "cosine"),
    (("schedule", "alphas_cumprod", 3), 0.0),
    (("defaults", "color_fix"), "histogram"),
    (("prompt", "dtype"), "float16"),
    (("prompt", "shape", 0), 2),
    (("prompt", "sha256"), "C0F2"),
    (("prompt", "embeds_file"), "../prompt_embeds.npy"),
    (("prompt", "embeds_file"), "/etc/passwd"),
    (("vae_scale_factor",), 16),
    (("provenance", "source", "kind"), "downloaded"),
])
def test_value_outside_the_contract_fails(tiny_manifest, path, bad):
    manifest = copy.deepcopy(tiny_manifest)
    _get(manifest, path[:-1])[path[-1]] = bad
    assert schema_errors(manifest) != []


def test_unknown_fields_and_components_fail(tiny_manifest):
    for edit in (lambda m: m.update(extra=1),
                 lambda m: m["components"].update(vae_refiner=m["components"]["unet"]),
                 lambda m: m["components"]["unet"].update(latent_inptu="scaled"),
                 lambda m: m.update(quantization={"method": "x", "keep_fp32": None, "timesteps": [],
                                                  "calibration_images": [], "components": {}})):
        manifest = copy.deepcopy(tiny_manifest)
        edit(manifest)
        assert schema_errors(manifest) != []


def test_write_manifest_refuses_a_nonconforming_manifest(tmp_path, tiny_manifest):
    manifest = copy.deepcopy(tiny_manifest)
    manifest["precision"] = "fp8"
    with pytest.raises(ValueError, match="precision"):
        write_manifest(tmp_path, manifest)
    assert not (tmp_path / MANIFEST_NAME).exists()
    write_manifest(tmp_path, tiny_manifest)
    assert read_manifest(tmp_path) == tiny_manifest
