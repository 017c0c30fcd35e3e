"""Cut the held-out regression fixture of models/nano (tests/nano_quality.rs).

    python scripts/make_heldout_fixture.py data/photos/skimage-chelsea.png --out tests/fixtures/heldout

Writes, from a held-out photo (export.photos' split; the skimage photos are CC0 / public domain):
``hr.png`` (a centered crop, sides multiples of 32, at most --crop px), ``lr.png`` (Pillow bicubic 4x down,
the evaluation's clean LR, export.degrade.clean_downscale) and ``bicubic.png`` (Pillow bicubic 4x up of
``lr.png``: the baseline nano must beat, computed by Pillow, not by tadsr-edge).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", type=Path)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/heldout"))
    parser.add_argument("--crop", type=int, default=256)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from export.degrade import clean_downscale

    image = Image.open(args.photo).convert("RGB")
    w, h = image.size
    cw, ch = min(args.crop, w) // 32 * 32, min(args.crop, h) // 32 * 32
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    hr = image.crop((x0, y0, x0 + cw, y0 + ch))
    lr_values = clean_downscale(np.asarray(hr, dtype=np.float32) / 255.0)
    lr = Image.fromarray(np.clip(np.round(lr_values * 255.0), 0, 255).astype(np.uint8), "RGB")
    args.out.mkdir(parents=True, exist_ok=True)
    hr.save(args.out / "hr.png")
    lr.save(args.out / "lr.png")
    lr.resize((cw, ch), Image.BICUBIC).save(args.out / "bicubic.png")
    print(f"{args.photo.name}: crop {cw}x{ch} at ({x0}, {y0}) -> {args.out}/hr.png, lr.png, bicubic.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
