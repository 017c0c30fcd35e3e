"""manifest.json of a bundle (docs/bundle-format.md, format version 1)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional

FORMAT = "tadsr-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PROMPT_EMBEDS_NAME = "prompt_embeds.npy"
# The manifest contract, shared with the runtime's tests (tests/manifest_schema.rs).
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "manifest.schema.json"

DEFAULTS = {"timestep": 500, "upscale": 4, "process_size": 512, "color_fix": "adain"}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> Dict[str, str]:
    import diffusers
    import onnx
    import peft
    import torch

    versions = {"torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
                "onnx": onnx.__version__}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except Exception:  # pragma: no cover - transformers is in requirements.txt
        pass
    return versions


def component_entry(bundle: Path, rel_file: str, data_files: List[Path], spec: Dict, extra: Optional[Dict] = None
                    ) -> Dict:
    entry = {"file": rel_file, "sha256": sha256_file(bundle / rel_file)}
    entry["external_data"] = [
        {"file": Path(p).relative_to(bundle).as_posix(), "sha256": sha256_file(Path(p))} for p in data_files
    ]
    if extra:
        entry.update(extra)
    entry["inputs"] = spec["inputs"]
    entry["outputs"] = spec["outputs"]
    return entry


def build_manifest(*, name: str, precision: str, components: Dict[str, Dict], cross_attention_dim: int,
                   scaling_factor: float, schedule: Dict, alphas_cumprod, prompt_sha256: str, prompt_shape,
                   prompt_text: Optional[str], source: Dict, latent_channels: int = 4, vae_scale_factor: int = 8
                   ) -> Dict:
    ordered = {}
    for key in ("vae_encoder", "unet", "vae_decoder", "text_encoder", "vae_encoder_tiled", "vae_decoder_tiled"):
        if key in components:
            ordered[key] = components[key]
    provenance = dict(library_versions())
    provenance["source"] = source
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "precision": precision,
        "components": ordered,
        "latent_channels": int(latent_channels),
        "vae_scale_factor": int(vae_scale_factor),
        "scaling_factor": float(scaling_factor),
        "cross_attention_dim": int(cross_attention_dim),
        "schedule": {
            "type": schedule["type"],
            "beta_start": float(schedule["beta_start"]),
            "beta_end": float(schedule["beta_end"]),
            "num_train_timesteps": int(schedule["num_train_timesteps"]),
            "alphas_cumprod": [float(v) for v in alphas_cumprod],
        },
        "defaults": dict(DEFAULTS),
        "prompt": {
            "embeds_file": PROMPT_EMBEDS_NAME,
            "sha256": prompt_sha256,
            "shape": [int(v) for v in prompt_shape],
            "dtype": "float32",
            "text": prompt_text,
        },
        "provenance": provenance,
    }


def schema_errors(manifest: Dict) -> List[str]:
    """Where ``manifest`` breaks docs/manifest.schema.json, one line each (empty when it conforms)."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{error.json_path}: {error.message}"
            for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))]


def validate_manifest(manifest: Dict) -> None:
    """Raises ValueError when ``manifest`` does not conform to docs/manifest.schema.json."""
    errors = schema_errors(manifest)
    if errors:
        raise ValueError(f"manifest does not conform to {SCHEMA_PATH.name}:\n  " + "\n  ".join(errors))


def write_manifest(bundle: Path, manifest: Dict) -> Path:
    """Writes ``BUNDLE/manifest.json`` after checking it against the schema (nothing is written if it fails).

    Atomically: a reader sees the old file or the new one, never a part of it.
    """
    validate_manifest(manifest)
    path = Path(bundle) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(bundle: Path) -> Dict:
    return json.loads((Path(bundle) / MANIFEST_NAME).read_text(encoding="utf-8"))


def bundle_files(manifest: Dict) -> List[str]:
    """Every file the manifest names (graphs, external data, prompt embeds)."""
    files = []
    for comp in manifest["components"].values():
        files.append(comp["file"])
        files.extend(d["file"] for d in comp.get("external_data", []))
        if "tokenizer" in comp:
            files.append(comp["tokenizer"]["file"])
    files.extend(segment["file"] for segment in manifest.get("vae_encoder_segments", {}).get("segments", []))
    files.append(manifest["prompt"]["embeds_file"])
    return files


def verify_bundle(bundle: Path) -> List[str]:
    """sha256 check of every file the manifest lists. Returns a list of problems (empty when fine)."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    problems = []

    def check(rel, want):
        path = bundle / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != want:
            problems.append(f"{rel}: sha256 differs from manifest")

    for comp in manifest["components"].values():
        check(comp["file"], comp["sha256"])
        for data in comp.get("external_data", []):
            check(data["file"], data["sha256"])
        if "tokenizer" in comp:
            check(comp["tokenizer"]["file"], comp["tokenizer"]["sha256"])
    for segment in manifest.get("vae_encoder_segments", {}).get("segments", []):
        check(segment["file"], segment["sha256"])
    check(manifest["prompt"]["embeds_file"], manifest["prompt"]["sha256"])
    return problems
