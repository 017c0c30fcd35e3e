"""Golden references for the Rust tests (models/tiny/golden/, docs/bundle-format.md).

    python -m export.golden --bundle models/tiny

reads the input PNGs already in ``<bundle>/golden/`` (made by
``python -m export.sample_images``), rebuilds the bundle's PyTorch model from
its manifest and writes ``cases.json``, each case's image U (``*_upscaled.png``)
and its float32 [H, W, 3] reference (``*.npy``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from .reference import load_models, super_resolve, upscaled_input

# (input stem, upscale, process_size, timestep, color fix)
CASES = [
    # square: 16x16 -> U 64x64 -> latent 8x8
    ("square", 4, 0, 100, "adain"),
    ("square", 4, 0, 500, "adain"),
    ("square", 4, 0, 900, "adain"),
    ("square", 4, 0, 500, "wavelet"),
    ("square", 4, 0, 500, "none"),
    # wide: 36x20 -> U 144x80 -> latent 18x10 (sides not multiples of 8)
    ("wide", 4, 0, 100, "adain"),
    ("wide", 4, 0, 500, "adain"),
    ("wide", 4, 0, 900, "adain"),
    # small: 20x18, process_size 128 -> min-size rule (short side < 32) -> 35x32 -> 140x128 -> U 136x128
    ("small", 4, 128, 100, "adain"),
    ("small", 4, 128, 500, "adain"),
    ("small", 4, 128, 900, "adain"),
]


def case_name(stem: str, timestep: int, color: str) -> str:
    return f"{stem}_t{timestep}" if color == "adain" else f"{stem}_t{timestep}_{color}"


def write_golden(bundle: Path, quiet: bool = False) -> List[Dict]:
    bundle = Path(bundle)
    golden = bundle / "golden"
    models = load_models(str(bundle))
    cases = []
    upscaled_cache = {}
    for stem, upscale, process_size, timestep, color in CASES:
        input_name = f"{stem}.png"
        if not (golden / input_name).is_file():
            raise SystemExit(f"{golden / input_name} is missing: run python -m export.sample_images first")
        key = (stem, upscale, process_size)
        upscaled_name = f"{stem}_upscaled.png"
        if key not in upscaled_cache:
            upscaled = upscaled_input(Image.open(golden / input_name), upscale, process_size)
            upscaled.save(golden / upscaled_name)
            # Use the PNG as written (it is exactly U: 8-bit RGB).
            upscaled_cache[key] = Image.open(golden / upscaled_name).convert("RGB")
        upscaled = upscaled_cache[key]
        name = case_name(stem, timestep, color)
        result = super_resolve(models, upscaled, timestep, color)
        np.save(golden / f"{name}.npy", result.astype(np.float32), allow_pickle=False)
        cases.append({
            "name": name,
            "input": input_name,
            "upscale": upscale,
            "process_size": process_size,
            "timestep": timestep,
            "color_fix": color,
            "sample": "mean",
            "upscaled": upscaled_name,
            "reference": f"{name}.npy",
        })
        if not quiet:
            print(f"  {name}: U {upscaled.size[0]}x{upscaled.size[1]}", flush=True)
    (golden / "cases.json").write_text(json.dumps(cases, indent=2) + "\n", encoding="utf-8")
    return cases


# The `--tiling latent` case: a crop of examples/coffee.png, 224x208 -> U
# 896x832 -> latent 112x104, above the authors' 96x96, so the UNet runs in
# 2x2 tiles of 96 (offsets 0, 16 and 0, 8). The reference is stored on every
# LATENT_TILING_ROW_STEP-th row only, to keep the golden folder small.
LATENT_TILING_CROP = (40, 30, 264, 238)
LATENT_TILING_TIMESTEP = 500
LATENT_TILING_ROW_STEP = 16


def _write_latent_tiling_case(bundle: Path, photo: Image.Image, stem: str, name: str, row_step: int,
                              case_file: str, quiet: bool) -> Dict:
    """One `--tiling latent` case: `photo` saved as golden/<stem>.png, the reference (U without the minimum-size
    rule, t = LATENT_TILING_TIMESTEP, adain) stored on every `row_step`-th row, the case in golden/<case_file>."""
    golden = Path(bundle) / "golden"
    models = load_models(str(bundle))
    photo.save(golden / f"{stem}.png")
    upscaled = upscaled_input(Image.open(golden / f"{stem}.png"), 4, 0)
    result = super_resolve(models, upscaled, LATENT_TILING_TIMESTEP, "adain", latent_tiling=True)
    rows_file = f"{stem}_t500_latent_tiling_rows.npy"
    np.save(golden / rows_file, result[::row_step].astype(np.float32), allow_pickle=False)
    case = {
        "name": name,
        "input": f"{stem}.png",
        "upscale": 4,
        "process_size": 0,
        "timestep": LATENT_TILING_TIMESTEP,
        "color_fix": "adain",
        "sample": "mean",
        "tiling": "latent",
        "output_size": [upscaled.size[0], upscaled.size[1]],
        "row_step": row_step,
        "reference_rows": rows_file,
    }
    (golden / case_file).write_text(json.dumps(case, indent=2) + "\n", encoding="utf-8")
    if not quiet:
        print(f"  {case['name']}: U {upscaled.size[0]}x{upscaled.size[1]}, rows every {row_step}")
    return case


def write_latent_tiling_golden(bundle: Path, repo: Path, quiet: bool = False) -> Dict:
    photo = Image.open(repo / "examples" / "coffee.png").convert("RGB").crop(LATENT_TILING_CROP)
    return _write_latent_tiling_case(bundle, photo, "large", "large_t500_latent_tiling", LATENT_TILING_ROW_STEP,
                                     "latent_tiling.json", quiet)


# The same beyond the authors' encoder tile: examples/coffee.png at 288x272 -> U 1152x1088, longer than
# 1088 px, so their encoder runs in 2 tiles with GroupNorm statistics pooled layer by layer
# (export/reference.py authors_tiled_encode), and the UNet in 2x2 latent tiles.
AUTHORS_ENCODER_SIZE = (288, 272)
AUTHORS_ENCODER_ROW_STEP = 64  # keeps the golden folder under test_bundle's cap


def write_authors_encoder_golden(bundle: Path, repo: Path, quiet: bool = False) -> Dict:
    photo = Image.open(repo / "examples" / "coffee.png").convert("RGB").resize(AUTHORS_ENCODER_SIZE, Image.LANCZOS)
    return _write_latent_tiling_case(bundle, photo, "xlarge", "xlarge_t500_latent_tiling_authors_encoder",
                                     AUTHORS_ENCODER_ROW_STEP, "latent_tiling_authors_encoder.json", quiet)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.golden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="models/tiny")
    args = parser.parse_args(argv)
    write_golden(Path(args.bundle))
    write_latent_tiling_golden(Path(args.bundle), Path(__file__).resolve().parents[1])
    write_authors_encoder_golden(Path(args.bundle), Path(__file__).resolve().parents[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
