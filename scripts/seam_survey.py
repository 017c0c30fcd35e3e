"""Seam measure of `--tile 512` against untiled runs over every held-out photo (issue 11), through the runtime.

    python scripts/seam_survey.py [--bundle models/nano] [--side 1024] [--work runs/seam-survey] [--threads 2]

Each held-out photo (export.photos split) is resized (Lanczos) so that its short side is ``--side``, its
centre ``--side`` square is cut, and that square's clean 4x-down LR is upscaled twice by the tadsr-edge
binary: ``--tile 512`` (staged, balanced, as on the CPU) and ``--tile 0``. Printed per photo: PSNR tiled vs
untiled, and the block-matched seam measure of scripts/measure_nano.py (mean |difference| of adjacent
pixels across the tile edges over the same across the other 8 px block edges) on the tiled output and
on the untiled output at the same positions; then the means. The photos need not be larger than the
output: this measures what tiling adds, not fidelity to an original.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from measure_nano import load, psnr, seam_ratio, upscale  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=REPO / "models/nano")
    parser.add_argument("--photos", type=Path, default=REPO / "data/photos")
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=REPO / "runs/seam-survey")
    parser.add_argument("--bin", type=Path, default=REPO / "target/release/tadsr-edge")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from export.degrade import clean_downscale
    from export.photos import split_files

    args.work.mkdir(parents=True, exist_ok=True)
    lr_dir = args.work / f"lr-{args.side}"
    lr_dir.mkdir(exist_ok=True)
    for path in split_files(args.photos, "heldout"):
        image = Image.open(path).convert("RGB")
        scale = args.side / min(image.size)
        image = image.resize((max(args.side, round(image.width * scale)), max(args.side, round(image.height * scale))),
                             Image.LANCZOS)
        x0, y0 = (image.width - args.side) // 2, (image.height - args.side) // 2
        hr = np.asarray(image.crop((x0, y0, x0 + args.side, y0 + args.side)), dtype=np.float32) / 255.0
        lr = clean_downscale(hr)
        Image.fromarray(np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8), "RGB").save(lr_dir / path.name)
    inputs = sorted(lr_dir.glob("*.png"))
    tiled_dir, untiled_dir = args.work / f"tiled-{args.side}", args.work / f"untiled-{args.side}"
    upscale(args.bin, args.bundle, inputs, tiled_dir, args.threads, ["--tile", "512"])
    upscale(args.bin, args.bundle, inputs, untiled_dir, args.threads, ["--tile", "0"])
    print(f"| photo ({args.side}^2 output) | PSNR tiled vs untiled (dB) | seam tiled | seam untiled, same positions "
          "| tiled / untiled |")
    print("| --- | --- | --- | --- | --- |")
    rows = []
    for lr_path in inputs:
        tiled, untiled = load(tiled_dir / lr_path.name), load(untiled_dir / lr_path.name)
        row = (psnr(tiled, untiled), seam_ratio(tiled, 512, 64, block_matched=True),
               seam_ratio(untiled, 512, 64, block_matched=True))
        rows.append(row)
        print(f"| {lr_path.stem} | {row[0]:.2f} | {row[1]:.3f} | {row[2]:.3f} | {row[1] / row[2]:.3f} |")
    mean = np.mean(np.array(rows), axis=0)
    ratios = [r[1] / r[2] for r in rows]
    print(f"| mean of {len(rows)} | {mean[0]:.2f} | {mean[1]:.3f} | {mean[2]:.3f} | {np.mean(ratios):.3f} "
          f"(max {max(ratios):.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
