"""Largest per-channel difference, in 8-bit levels, between two images of one
size; exits 1 when it is over --max-levels (or the sizes differ).

    python scripts/png_diff.py a.png b.png --max-levels 1
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--max-levels", type=int, default=1)
    args = parser.parse_args()
    first = np.asarray(Image.open(args.first).convert("RGB"), dtype=np.int16)
    second = np.asarray(Image.open(args.second).convert("RGB"), dtype=np.int16)
    if first.shape != second.shape:
        print(json.dumps({"error": f"sizes differ: {first.shape} vs {second.shape}"}))
        return 1
    diff = np.abs(first - second)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    report = {
        "max_levels": int(diff.max()),
        "values_differing": int((diff > 0).sum()),
        "values": int(diff.size),
        "psnr_db": None if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2),
    }
    print(json.dumps(report))
    return 0 if report["max_levels"] <= args.max_levels else 1


if __name__ == "__main__":
    sys.exit(main())
