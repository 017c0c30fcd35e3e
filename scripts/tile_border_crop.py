"""The README's picture across a tile border: tiled, untiled and their difference, side by side.

    python scripts/tile_border_crop.py --tiled runs/measure6-tiling/tiled-2048/tile-2048-lomiri-life.png \\
        --untiled runs/measure6-tiling/torch-2048-lomiri-life.png --out docs/images/nano-tile-border.png

Both images are outputs of ``scripts/measure_nano.py`` (``--tile 512`` balanced, and an untiled run of the
same input). The crop (``--crop`` px, scaled ``--zoom`` x nearest) is centered on the overlap of the first
two tiles along x, at the image's vertical middle; red marks above each panel show where tile 2 starts and
tile 1 ends (the tile plan of src/tiling.rs, as measure_nano.balanced_axis recomputes it). The third panel
is |tiled - untiled| x ``--gain``. Prints the largest and mean difference inside the crop (8-bit levels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure_nano import balanced_axis, load  # noqa: E402

MARK = 10
LABEL = 18
GAP = 6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiled", type=Path, required=True)
    parser.add_argument("--untiled", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--zoom", type=int, default=3)
    parser.add_argument("--gain", type=float, default=20.0)
    args = parser.parse_args(argv)
    tiled, untiled = load(args.tiled), load(args.untiled)
    if tiled.shape != untiled.shape:
        raise SystemExit(f"sizes differ: {tiled.shape} vs {untiled.shape}")
    h, w = tiled.shape[:2]
    starts, size = balanced_axis(w, args.tile, args.overlap)
    if len(starts) < 2:
        raise SystemExit(f"one tile across {w} px: no border to show")
    second_start, first_end = starts[1], starts[0] + size
    x0 = max(0, min(w - args.crop, (second_start + first_end) // 2 - args.crop // 2))
    y0 = max(0, h // 2 - args.crop // 2)
    window = (slice(y0, y0 + args.crop), slice(x0, x0 + args.crop))
    a, b = tiled[window], untiled[window]
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    print(f"crop x {x0}..{x0 + args.crop}, y {y0}..{y0 + args.crop}; tile 2 starts at x {second_start}, tile 1 "
          f"ends at x {first_end}; difference: max {diff.max()} levels, mean {diff.mean():.2f}")
    panels = [a, b, np.clip(diff * args.gain, 0, 255).astype(np.uint8)]
    side = args.crop * args.zoom
    labels = ["tiled (--tile 512)", "untiled", f"|tiled - untiled| x{args.gain:g}"]
    canvas = Image.new("RGB", (3 * side + 2 * GAP, LABEL + MARK + side), "white")
    draw = ImageDraw.Draw(canvas)
    for index, panel in enumerate(panels):
        left = index * (side + GAP)
        draw.text((left + 2, 3), labels[index], fill=(0, 0, 0))
        canvas.paste(Image.fromarray(panel).resize((side, side), Image.NEAREST), (left, LABEL + MARK))
        for x in (second_start, first_end):
            px = left + (x - x0) * args.zoom
            draw.rectangle([px - 1, LABEL, px + 1, LABEL + MARK - 2], fill=(220, 0, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out} ({canvas.width}x{canvas.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
