"""Make the small photo inputs of the golden tests and the demo examples.

    python -m export.sample_images --skimage-data DIR [--golden models/tiny/golden] [--examples examples]

``DIR`` is the ``skimage/data`` folder of a scikit-image wheel (0.26.0 was
used; ``pip download scikit-image==0.26.0 --no-deps`` and unzip it, or an
installed scikit-image).  The three photos used carry no copyright
restrictions: ``astronaut.png`` (NASA, public domain), ``coffee.png``
(Rachel Michetti, CC0) and ``chelsea.png`` (Stefan van der Walt, CC0).

Each output is a crop of one photo reduced with Pillow's Lanczos filter. The
results are committed, so this only needs running to remake them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

# name -> (photo, crop box (left, top, right, bottom), output size)
GOLDEN_INPUTS = {
    "square.png": ("astronaut.png", (150, 30, 310, 190), (16, 16)),
    "wide.png": ("coffee.png", (60, 0, 510, 250), (36, 20)),
    "small.png": ("chelsea.png", (100, 20, 380, 272), (20, 18)),
}
EXAMPLES = {
    "astronaut.png": ("astronaut.png", (0, 0, 512, 512), (128, 128)),
    "coffee.png": ("coffee.png", (34, 0, 567, 400), (160, 120)),
    "chelsea.png": ("chelsea.png", (0, 0, 450, 300), (144, 96)),
}


def make(data_dir: Path, table, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (photo, box, size) in table.items():
        image = Image.open(data_dir / photo).convert("RGB")
        small = image.crop(box).resize(size, Image.LANCZOS)
        small.save(out_dir / name, optimize=False)
        print(f"{out_dir / name}: {size[0]}x{size[1]} from {photo} {box}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.sample_images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skimage-data", help="skimage/data folder (default: the installed scikit-image's)")
    parser.add_argument("--golden", default="models/tiny/golden")
    parser.add_argument("--examples", default="examples")
    args = parser.parse_args(argv)
    if args.skimage_data:
        data_dir = Path(args.skimage_data)
    else:
        try:
            import skimage
        except ImportError:
            raise SystemExit("pass --skimage-data DIR (scikit-image is not installed)") from None
        data_dir = Path(skimage.__file__).parent / "data"
    make(data_dir, GOLDEN_INPUTS, Path(args.golden))
    make(data_dir, EXAMPLES, Path(args.examples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
