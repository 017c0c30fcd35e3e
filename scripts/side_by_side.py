"""Put images side by side with a label strip above each (the README's nano picture).

    python scripts/side_by_side.py --out docs/images/nano-chelsea.png \\
        "input (nearest x4)=runs/x/lr.png" "bicubic=runs/x/bicubic.png" "nano=runs/x/nano.png" "original=runs/x/hr.png"

Each argument is LABEL=PATH; every image is scaled (nearest) to the height of the tallest, so a small input
shows its pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

LABEL_HEIGHT = 18
GAP = 6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("panels", nargs="+", help="LABEL=PATH")
    args = parser.parse_args(argv)
    panels = []
    for item in args.panels:
        label, _, path = item.partition("=")
        panels.append((label, Image.open(path).convert("RGB")))
    height = max(image.height for _, image in panels)
    scaled = [(label, image.resize((image.width * height // image.height, height), Image.NEAREST))
              for label, image in panels]
    width = sum(image.width for _, image in scaled) + GAP * (len(scaled) - 1)
    canvas = Image.new("RGB", (width, height + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, image in scaled:
        canvas.paste(image, (x, LABEL_HEIGHT))
        draw.text((x + 4, 3), label, fill="black")
        x += image.width + GAP
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, optimize=True)
    print(f"wrote {args.out} ({canvas.width}x{canvas.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
