"""Re-measure on the trained nano what random weights could not tell (issue 10, item 5).

    python scripts/measure_nano.py --checkpoint runs/nano2/last.pt --bundle models/nano \\
        --photos data/photos --work runs/measure [--bin target/release/tadsr-edge] [--threads 2]

Everything runs through the real runtime (the tadsr-edge binary) on the CPU:

1. precision: held-out photos (export.photos split; centered crops <= 512 px, clean 4x-down LR) upscaled by
   the fp32 bundle, an fp16 export of the same checkpoint and an int8 QDQ bundle (export.quantize,
   calibrated on training photos). PSNR of each against the fp32 output and against the original;
   time: ``tadsr-edge bench --size 512 --tile 0`` p50 of each bundle.
2. tiling: LR crops giving 1024^2 and 2048^2 outputs, ``--tile 512`` (staged) against ``--tile 0``:
   PSNR between them, and the seam measure: mean absolute difference between horizontally / vertically
   adjacent pixels across the columns / rows where tiles start or end (the borders of the balanced plan,
   recomputed here by ``balanced_axis`` from src/tiling.rs's rule), divided by the same mean elsewhere.
   When --tile auto finds --tile 0 over the memory budget (VAE self-attention over every latent cell),
   that is reported instead of a PSNR. ``--torch-reference``: PyTorch runs the same checkpoint untiled
   (export.reference.super_resolve, memory-efficient scaled-dot-product attention, 8-bit output), an
   independent untiled reference at every size, also where the runtime's untiled run does not fit; the
   runtime's own untiled output is compared with it where both exist.
   The seam measure is given twice: against every other position ("raw"), and against the other 8 px
   block edges only ("block-matched"). nano's decoder shortcut works on 8x8 blocks, so its block edges
   differ from the rest of the image whether or not a tile ends there; tile edges always fall on block
   edges, and the block-matched measure compares like with like.

Prints a Markdown report and writes it to ``<work>/report.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
BORDER = 4


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a = a[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64) / 255.0
    b = b[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64) / 255.0
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    started = time.time()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}")
    print(f"  ran in {time.time() - started:.1f} s: {' '.join(map(str, cmd))[:160]}", flush=True)
    return proc


def upscale(binary: Path, bundle: Path, inputs, out_dir: Path, threads: int, extra=()) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    run([binary, "run", *inputs, "-o", out_dir, "--model", bundle, "--provider", "cpu", "--process-size", "0",
         "--threads", threads, "-q", *extra])


def bench_p50(binary: Path, bundle: Path, threads: int) -> float:
    proc = run([binary, "bench", "--model", bundle, "--provider", "cpu", "--size", "512", "--tile", "0",
                "--runs", "3", "--warmup", "1", "--threads", threads, "--json"])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(report["end_to_end_ms"]["p50"])


def balanced_axis(length: int, tile: int, overlap: int):
    """(tile starts, tile size) in pixels along one axis: src/tiling.rs's TilePlan::balanced and plan_axis,
    on latent cells of 8 px (the staged plan on the CPU)."""
    size, max_tile, overlap = length // 8, tile // 8, overlap // 8
    if size <= max_tile:
        return [0], length
    count = -(-(size - overlap) // (max_tile - overlap))
    tile_cells = -(-(size + (count - 1) * overlap) // count)
    stride = max(1, tile_cells - overlap)
    starts = []
    offset = 0
    while offset + tile_cells < size:
        starts.append(offset)
        offset += stride
    starts.append(size - tile_cells)
    return [s * 8 for s in starts], tile_cells * 8


def seam_ratio(image: np.ndarray, tile: int, overlap: int, block_matched: bool = False) -> float:
    """Mean |difference of adjacent pixels| across tile edges over the same elsewhere (1.0: no seam).
    ``block_matched``: "elsewhere" is the other 8 px block edges only (tile edges are block edges)."""
    img = image.astype(np.float64)
    h, w = img.shape[:2]
    gx = np.abs(img[:, 1:] - img[:, :-1]).mean(axis=(0, 2))  # between column x and x+1
    gy = np.abs(img[1:] - img[:-1]).mean(axis=(1, 2))
    ratios = []
    for grad, length in ((gx, w), (gy, h)):
        starts, size = balanced_axis(length, tile, overlap)
        if len(starts) == 1:
            continue
        edges = sorted({s for s in starts if s > 0} | {s + size for s in starts if s + size < length})
        at = np.array([e - 1 for e in edges])
        mask = np.zeros(len(grad), bool)
        mask[at] = True
        others = ~mask
        if block_matched:
            others &= (np.arange(len(grad)) + 1) % 8 == 0
        ratios.append((grad[mask].mean(), grad[others].mean()))
    if not ratios:
        return 1.0
    across = np.mean([r[0] for r in ratios])
    elsewhere = np.mean([r[1] for r in ratios])
    return float(across / elsewhere)


def seams(image: np.ndarray) -> str:
    """'raw / block-matched' seam measures of 512 px tiles with 64 px overlap."""
    return f"{seam_ratio(image, 512, 64):.3f} / {seam_ratio(image, 512, 64, block_matched=True):.3f}"


def torch_untiled(checkpoint: Path, lr_path: Path, out_path: Path, threads: int) -> np.ndarray:
    """The untiled output of PyTorch on the checkpoint's (EMA) weights, as the runtime's defaults
    (--process-size 0, t = 500, adain), quantized to 8 bit like the runtime's PNG."""
    if not out_path.is_file():
        import torch

        from export.reference import super_resolve, upscaled_input
        from export.train import models_from_checkpoint

        torch.set_num_threads(threads)
        started = time.time()
        models = models_from_checkpoint(checkpoint)
        upscaled = upscaled_input(Image.open(lr_path), 4, 0)
        with torch.no_grad():
            result = super_resolve(models, upscaled, 500, "adain")
        Image.fromarray(np.round(result * 255.0).clip(0, 255).astype(np.uint8)).save(out_path)
        print(f"  PyTorch untiled {lr_path.name} in {time.time() - started:.1f} s", flush=True)
    return load(out_path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, default=REPO / "models/nano")
    parser.add_argument("--photos", type=Path, default=REPO / "data/photos")
    parser.add_argument("--work", type=Path, default=REPO / "runs/measure")
    parser.add_argument("--bin", type=Path, default=REPO / "target/release/tadsr-edge")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: precision,tiling")
    parser.add_argument("--torch-reference", action="store_true",
                        help="tiling: also compare with PyTorch's untiled output of the checkpoint")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from export.degrade import clean_downscale
    from export.photos import split_files

    skip = set(filter(None, args.skip.split(",")))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    lines = [f"# nano re-measured ({time.strftime('%Y-%m-%d')}, `{' '.join(sys.argv)}`)", ""]
    heldout = split_files(args.photos, "heldout")

    def lr_of(hr: np.ndarray) -> Image.Image:
        lr = clean_downscale(hr.astype(np.float32) / 255.0)
        return Image.fromarray(np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8), "RGB")

    if "precision" not in skip:
        lr_dir, hr_dir = work / "lr", work / "hr"
        lr_dir.mkdir(exist_ok=True)
        hr_dir.mkdir(exist_ok=True)
        for path in heldout:
            image = load(path)
            h, w = image.shape[:2]
            ch, cw = min(512, h) // 32 * 32, min(512, w) // 32 * 32
            y0, x0 = (h - ch) // 2, (w - cw) // 2
            hr = image[y0:y0 + ch, x0:x0 + cw]
            Image.fromarray(hr).save(hr_dir / path.name)
            lr_of(hr).save(lr_dir / path.name)
        inputs = sorted(lr_dir.glob("*.png"))
        fp16 = work / "nano-fp16"
        int8 = work / "nano-int8"
        if not (fp16 / "manifest.json").is_file():
            run([py, "-m", "export.train", "--export-only", args.checkpoint, "--export-to", fp16,
                 "--precision", "fp16", "--no-memory"], cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})
        calib = work / "calibration"
        if not calib.is_dir():
            calib.mkdir()
            for path in split_files(args.photos, "train")[:8]:
                (calib / path.name).symlink_to(path.resolve())
        if not (int8 / "manifest.json").is_file():
            run([py, "-m", "export.quantize", "--bundle", args.bundle, "--out", int8, "--calibration-images", calib,
                 "--no-memory"], cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})
        outputs = {}
        for name, bundle in (("fp32", args.bundle), ("fp16", fp16), ("int8", int8)):
            upscale(args.bin, bundle, inputs, work / f"out-{name}", args.threads, ["--tile", "0"])
            outputs[name] = {p.name: load(work / f"out-{name}" / p.name) for p in inputs}
        times = {name: bench_p50(args.bin, bundle, args.threads)
                 for name, bundle in (("fp32", args.bundle), ("fp16", fp16), ("int8", int8))}
        lines += ["## Precision (held-out photos, clean LR, `--tile 0`)", "",
                  "| bundle | PSNR vs fp32 output (mean / min, dB) | PSNR vs original (mean, dB) | "
                  "bench 512^2 p50 (s) | time vs fp32 |", "| --- | --- | --- | --- | --- |"]
        for name in ("fp32", "fp16", "int8"):
            vs32 = [psnr(outputs[name][k], outputs["fp32"][k]) for k in outputs[name]]
            vshr = [psnr(outputs[name][k], load(hr_dir / k)) for k in outputs[name]]
            vs = "-" if name == "fp32" else f"{np.mean(vs32):.2f} / {min(vs32):.2f}"
            lines.append(f"| {name} | {vs} | {np.mean(vshr):.2f} | {times[name] / 1000:.2f} | "
                         f"{times[name] / times['fp32']:.2f}x |")
        lines.append("")

    if "tiling" not in skip:
        header = "| output | photo | PSNR tiled vs untiled (dB) | seam tiled (raw / block-matched) | seam untiled |"
        rule = "| --- | --- | --- | --- | --- |"
        if args.torch_reference:
            header += (" PSNR tiled vs PyTorch untiled (dB) | PSNR untiled vs PyTorch untiled (dB) |"
                       " seam PyTorch untiled |")
            rule += " --- | --- | --- |"
        lines += ["## Tiling (`--tile 512 --tiling staged`, overlap 64) against `--tile 0`", "",
                  "Seam measures: raw / block-matched (see the script's docstring).", "", header, rule]
        big = [p for p in heldout if min(Image.open(p).size) >= 1024][:2]
        for side in (1024, 2048):
            for path in big:
                image = load(path)
                h, w = image.shape[:2]
                hr_side = min(side, h, w) // 32 * 32
                y0, x0 = (h - hr_side) // 2, (w - hr_side) // 2
                lr = lr_of(image[y0:y0 + hr_side, x0:x0 + hr_side]).resize((side // 4, side // 4), Image.LANCZOS)
                lr_path = work / f"tile-{side}-{path.stem}.png"
                lr.save(lr_path)
                tiled_dir = work / f"tiled-{side}"
                upscale(args.bin, args.bundle, [lr_path], tiled_dir, args.threads, ["--tile", "512"])
                tiled = load(tiled_dir / lr_path.name)
                untiled_dir = work / f"untiled-{side}"
                proc = subprocess.run([str(args.bin), "run", str(lr_path), "-o", str(untiled_dir), "--model",
                                       str(args.bundle), "--provider", "cpu", "--process-size", "0", "--threads",
                                       str(args.threads), "--tile", "auto", "--json", "-q"],
                                      capture_output=True, text=True)
                decision = json.loads(proc.stdout.splitlines()[0])["tile"] if proc.returncode == 0 else {}
                untiled = None
                if decision.get("tile_px") == 0:
                    untiled = load(untiled_dir / lr_path.name)
                    cell = f"{psnr(tiled, untiled):.2f}"
                    seam_untiled = seams(untiled)
                else:
                    est = decision.get("untiled_bytes", 0) / 2**30
                    cell = f"untiled does not fit here (estimated {est:.1f} GiB; auto chose {decision.get('tile_px')})"
                    seam_untiled = "-"
                row = f"| {side}^2 | {path.name} | {cell} | {seams(tiled)} | {seam_untiled} |"
                if args.torch_reference:
                    reference = torch_untiled(args.checkpoint, lr_path, work / f"torch-{side}-{path.stem}.png",
                                              args.threads)
                    agree = "-" if untiled is None else f"{psnr(untiled, reference):.2f}"
                    row += f" {psnr(tiled, reference):.2f} | {agree} | {seams(reference)} |"
                lines.append(row)
        lines.append("")
    report = "\n".join(lines)
    (work / "report.md").write_text(report + "\n", encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
