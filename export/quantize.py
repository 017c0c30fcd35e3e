"""Experimental int8 (QDQ) CPU variant of an fp32 bundle.

    python -m export.quantize --bundle models/sd21 --out models/sd21-int8 \\
        --calibration-images examples [--components vae_decoder] [--keep-fp32 REGEX] [--timesteps 500]

Static int8 quantization with ONNX Runtime (QDQ format, per-channel int8
weights, uint8 activations, MinMax ranges) of the Conv nodes of the chosen
graphs. Calibration runs the fp32 bundle on low-resolution crops of the images
in --calibration-images (the 4x / 512 case), so each graph sees the inputs it
gets in the real pipeline. The graphs' inputs and outputs stay float32; the
manifest says ``"precision": "int8-qdq"`` and ``"quantization": {...}``.

Measured (see the report in the issue): on the AVX-512 VNNI CPU the int8 Conv
decoder runs in about 0.4x the fp32 time, but with 8-bit activations the output
of these random-weight models is only about 23-26 dB PSNR against fp32 (sd21; the
activation rounding adds up over ~35 convs). Use it for speed experiments, and
check the quality of a real checkpoint with ``--report`` before relying on it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from .manifest import component_entry, read_manifest, write_manifest
from .onnx_export import ort_session

COMPONENTS = ("vae_encoder", "unet", "vae_decoder")
PRECISION = "int8-qdq"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def calibration_inputs(images: Sequence[Path], upscale: int = 4, process_size: int = 512) -> List[np.ndarray]:
    """[1,3,S,S] float32 in [-1,1]: each image's centre square, shrunk to S/upscale, then the pipeline's U."""
    from .reference import upscaled_input

    low = process_size // upscale
    out = []
    for path in images:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        crop = image.crop(box).resize((low, low), Image.BICUBIC)
        u = np.asarray(upscaled_input(crop, upscale, process_size), dtype=np.float32) / 255.0
        out.append(np.ascontiguousarray(u.transpose(2, 0, 1)[None] * 2.0 - 1.0))
    return out


def pipeline_feeds(bundle: Path, sessions: Dict, image: np.ndarray, timestep: int) -> Dict[str, Dict[str, np.ndarray]]:
    """Each graph's feeds on the TADSR path (posterior mean, no noise), plus ``"_image"``: y in [0,1]."""
    manifest = read_manifest(bundle)
    acp = np.asarray(manifest["schedule"]["alphas_cumprod"], dtype=np.float32)
    sf = np.float32(manifest["scaling_factor"])
    embeds = np.load(bundle / manifest["prompt"]["embeds_file"]).astype(np.float32)
    t = np.array([int(timestep)], dtype=np.int64)
    enc = {"image": image, "timestep": t}
    mean = sessions["vae_encoder"].run(None, enc)[0]
    z = (mean * sf).astype(np.float32)
    unet = {"latent": z, "timestep": t, "encoder_hidden_states": embeds}
    residual = sessions["unet"].run(None, unet)[0]
    x0 = (z / np.sqrt(acp[int(timestep)]) - residual).astype(np.float32)
    dec = {"latent": x0}
    y = sessions["vae_decoder"].run(None, dec)[0]
    return {"vae_encoder": enc, "unet": unet, "vae_decoder": dec, "_image": np.clip(y, -1, 1) * 0.5 + 0.5}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def _bundle_sessions(bundle: Path, threads: int) -> Dict:
    manifest = read_manifest(bundle)
    return {c: ort_session(bundle / manifest["components"][c]["file"], threads) for c in COMPONENTS}


def quantize_graph(src: Path, dst: Path, feeds: List[Dict[str, np.ndarray]], keep_fp32: Optional[str] = None,
                   external_data: bool = False) -> Dict:
    """Static QDQ int8 of the Conv nodes of ``src`` (those matching ``keep_fp32`` stay float)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    graph = onnx.load(str(src), load_external_data=False).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    excluded = [n for n in convs if keep_fp32 and re.search(keep_fp32, n)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                    nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                    use_external_data_format=external_data)
    return {"op_types": ["Conv"], "int8_nodes": len(convs) - len(excluded), "fp32_nodes": len(excluded)}


def quantize_bundle(bundle: Path, out: Path, calibration_images: Sequence[Path],
                    components: Sequence[str] = COMPONENTS, keep_fp32: Optional[str] = None,
                    timesteps: Sequence[int] = (500,), threads: int = 2, quiet: bool = False,
                    measure_memory: bool = True) -> Dict:
    """Write ``out``: ``bundle`` with the chosen graphs int8-quantized. Returns the new manifest.

    The fp32 bundle's ``memory`` figures do not hold for the int8 graphs: they are left out, and
    measured afresh when ``measure_memory`` (export/memory.py).
    """
    bundle, out = Path(bundle), Path(out)
    manifest = read_manifest(bundle)
    if manifest["precision"] != "fp32":
        raise SystemExit(f"{bundle}: quantize an fp32 bundle, not {manifest['precision']!r}")
    if manifest.get("provenance", {}).get("fusions") == "cuda":
        raise SystemExit(f"{bundle}: exported with --fusions cuda (CUDA-only graphs); int8 is for the CPU: "
                         "quantize a bundle exported without --fusions")
    if out.resolve() == bundle.resolve():
        raise SystemExit("--out must differ from --bundle")
    images = calibration_inputs(calibration_images)
    if not images:
        raise SystemExit("no calibration images")
    started = time.time()
    sessions = _bundle_sessions(bundle, threads)
    calib = [pipeline_feeds(bundle, sessions, x, t) for x in images for t in timesteps]
    del sessions
    if not quiet:
        print(f"calibration feeds: {len(calib)} in {time.time() - started:.1f} s", flush=True)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    new = json.loads(json.dumps(manifest))
    new.pop("memory", None)
    info = {"method": "onnxruntime.quantization static QDQ, per-channel int8 weights, uint8 activations, MinMax",
            "keep_fp32": keep_fp32, "timesteps": [int(t) for t in timesteps],
            "calibration_images": [Path(p).name for p in calibration_images], "components": {}}
    for comp in COMPONENTS:
        entry = manifest["components"][comp]
        src = bundle / entry["file"]
        dst = out / entry["file"]
        if comp in components:
            t0 = time.time()
            with tempfile.TemporaryDirectory(prefix="tadsr-q.") as tmp:
                tmp_file = Path(tmp) / "model.onnx"
                big = bool(entry.get("external_data"))
                info["components"][comp] = quantize_graph(src, tmp_file, [f[comp] for f in calib], keep_fp32, big)
                import onnx

                from .onnx_export import save_onnx

                model = onnx.load(str(tmp_file), load_external_data=True)
                data_files = save_onnx(model, dst)
                del model
            extra = {k: v for k, v in entry.items()
                     if k not in ("file", "sha256", "external_data", "inputs", "outputs")}
            new["components"][comp] = component_entry(out, entry["file"], data_files,
                                                      {"inputs": entry["inputs"], "outputs": entry["outputs"]}, extra)
            if not quiet:
                print(f"  {comp}: int8 in {time.time() - t0:.1f} s {info['components'][comp]}", flush=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            for rel in [entry["file"]] + [d["file"] for d in entry.get("external_data", [])]:
                shutil.copy2(bundle / rel, out / rel)
    for comp, entry in manifest["components"].items():
        if comp not in COMPONENTS:  # text encoder, tiled VAE graphs: copied as they are (fp32)
            files = [entry["file"]] + [d["file"] for d in entry.get("external_data", [])]
            if "tokenizer" in entry:
                files.append(entry["tokenizer"]["file"])
            for rel in files:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(bundle / rel, out / rel)
    for segment in manifest.get("vae_encoder_segments", {}).get("segments", []):  # cut from the tiled encoder
        (out / segment["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle / segment["file"], out / segment["file"])
    shutil.copy2(bundle / manifest["prompt"]["embeds_file"], out / manifest["prompt"]["embeds_file"])
    new["precision"] = PRECISION
    new["name"] = f"{manifest['name']}-int8"
    new["quantization"] = info
    write_manifest(out, new)
    if measure_memory:
        from .memory import memory_lines, record_bundle_memory

        new["memory"] = record_bundle_memory(out, quiet=True)
        if not quiet:
            for line in memory_lines(new["memory"]):
                print(f"  memory {line}", flush=True)
    return new


def compare(fp32_bundle: Path, q_bundle: Path, image: np.ndarray, timestep: int = 500, threads: int = 2) -> float:
    """PSNR (dB) of the quantized bundle's y in [0,1] against the fp32 bundle's, on one image."""
    want = pipeline_feeds(fp32_bundle, _bundle_sessions(fp32_bundle, threads), image, timestep)["_image"]
    got = pipeline_feeds(q_bundle, _bundle_sessions(q_bundle, threads), image, timestep)["_image"]
    return psnr(got, want)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="fp32 bundle to quantize")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--calibration-images", required=True, help="folder of images (or one image)")
    parser.add_argument("--components", default="vae_encoder,unet,vae_decoder",
                        help="comma-separated graphs to quantize (default: all three)")
    parser.add_argument("--keep-fp32", help="regex of Conv node names to keep in float, e.g. 'upsamplers|conv_out'")
    parser.add_argument("--timesteps", default="500", help="comma-separated calibration timesteps (default 500)")
    parser.add_argument("--report", help="image to measure PSNR of the result against the fp32 bundle on")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip measuring the new graphs' memory (the manifest's memory, used by --tile auto)")
    args = parser.parse_args(argv)

    src = Path(args.calibration_images)
    images = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if src.is_dir() else [src]
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        parser.error(f"unknown components {sorted(unknown)}; choose from {COMPONENTS}")
    timesteps = [int(t) for t in args.timesteps.split(",")]
    quantize_bundle(Path(args.bundle), Path(args.out), images, components, args.keep_fp32, timesteps,
                    measure_memory=not args.no_memory)
    if args.report:
        x = calibration_inputs([Path(args.report)])[0]
        print(f"PSNR vs fp32 on {args.report}: {compare(Path(args.bundle), Path(args.out), x):.2f} dB", flush=True)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
