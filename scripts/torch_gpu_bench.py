#!/usr/bin/env python3
"""PyTorch eager timing of the TADSR one-step pipeline on a GPU (or the CPU).

Used by scripts/gpu_check.sh as the PyTorch side of the tadsr-edge/PyTorch
ratios; runnable by hand:

    PYTHONPATH=. python3 scripts/torch_gpu_bench.py --device cuda --config sd21
    PYTHONPATH=. python3 scripts/torch_gpu_bench.py --device cpu --config tiny --runs 2 --warmup 1

The models are the export package's own (export.synthetic.synthetic_models:
the same seeded weights as `python -m export --synthetic CONFIG --seed N`),
built once on the CPU in float32, then moved to the device; fp16 is a
``.half()`` copy (autocast off). fp32 runs with TF32 off
(torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 =
False) unless --tf32. Attention is diffusers' AttnProcessor2_0 (torch's
scaled_dot_product_attention), as export.synthetic sets it.

What one timed run is (the tensor part of export.reference.super_resolve, as
the authors' inference runs it, on the device):

    the image U as a float32 [1,3,H,W] CPU tensor in [0,1] -> device (and dtype)
    -> x = 2U - 1 -> VAE encoder at t (posterior mean) -> z = mean * scaling
    -> UNet(z, t, prompt) -> x0 = z / sqrt(acp[t]) - residual -> VAE decoder
    -> clamp(-1, 1) * 0.5 + 0.5 -> float32 -> adain color fix against U
    -> float32 [H,W,3] back on the CPU, then torch.cuda.synchronize().

Not in the timed run: decoding the photo and making U (Pillow Lanczos to
(size/4)^2 as `tadsr-edge bench` does, then export.reference.upscaled_input
with process size 0: Pillow bicubic x4), timed once on its own as
preprocess_ms, and 8-bit quantization / PNG writing (tadsr-edge bench's
end_to_end_ms includes its PNG write, reported apart as its `write` stage).
Medians of --runs after --warmup, torch.inference_mode(). Then --runs more
untiled runs with a synchronization after each stage give stages_ms (upload,
encoder, unet, decoder, color_fix, download): where PyTorch's time goes, to
set against `tadsr-edge bench`'s stages_ms (pipeline_ms stays the figure for
ratios: the extra synchronizations cost a little).

--tiled-size S (0 = off) also times an S x S output with the authors' UNet
latent tiling (export.reference.unet_latent_tiled: 96x96 latent tiles, 32
overlap, Gaussian weights), the VAE untiled, the same way.

Prints one JSON line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] torch_gpu_bench: {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--config", default="sd21", choices=["tiny", "sd21"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precisions", default="fp16,fp32", help="comma list of fp16, fp32 (default both)")
    p.add_argument("--size", type=int, default=512, help="output side in pixels (multiple of 32)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timestep", type=int, default=500)
    p.add_argument("--input", default=str(REPO_ROOT / "examples" / "coffee.png"))
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 (default off)")
    p.add_argument("--tiled-size", type=int, default=0,
                   help="also time this output side with the authors' UNet latent tiling (0 = off)")
    p.add_argument("--tiled-runs", type=int, default=2)
    p.add_argument("--tiled-warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    return p.parse_args(argv)


def make_upscaled(input_path: str, size: int):
    """The image U for a size x size output, as tadsr-edge bench makes its input."""
    from PIL import Image

    from export.reference import image_to_tensor, upscaled_input

    started = time.perf_counter()
    photo = Image.open(input_path).convert("RGB")
    low = photo.resize((size // 4, size // 4), Image.LANCZOS)
    upscaled = upscaled_input(low, upscale=4, process_size=0)
    source = image_to_tensor(upscaled)
    return source, (time.perf_counter() - started) * 1e3


def summarize(samples: List[float]) -> Dict[str, float]:
    ordered = sorted(samples)
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1],
            "mean": statistics.fmean(ordered), "n": len(ordered)}


class Pipeline:
    """The three graphs of one precision on one device, and the glue between them."""

    def __init__(self, models, device, dtype):
        import torch

        self.torch = torch
        self.device = device
        self.dtype = dtype
        encoder = models.encoder_graph()
        unet = models.unet_graph()
        decoder = models.decoder_graph()
        if dtype != torch.float32:
            encoder, unet, decoder = (copy.deepcopy(m) for m in (encoder, unet, decoder))
        self.encoder = encoder.to(device=device, dtype=dtype).eval()
        self.unet = unet.to(device=device, dtype=dtype).eval()
        self.decoder = decoder.to(device=device, dtype=dtype).eval()
        self.embeds = models.prompt_embeds.to(device=device, dtype=dtype)
        self.scaling = models.scaling_factor
        self.acp = models.alphas_cumprod.to(torch.float32)

    def unet_tiled(self, z, t, tile: int = 96, overlap: int = 32):
        """export.reference.unet_latent_tiled with its buffers on the device."""
        from export.reference import _gaussian_tile_weights, _tile_offsets

        torch = self.torch
        _, _, h, w = z.shape
        if h * w <= tile * tile:
            return self.unet(z, t, self.embeds)
        side = min(tile, h, w)
        step_overlap = overlap if overlap < side else side // 2
        weights = _gaussian_tile_weights(side).to(device=z.device, dtype=z.dtype)
        total = torch.zeros(h, w, device=z.device, dtype=z.dtype)
        blended = torch.zeros_like(z)
        for y in _tile_offsets(h, side, step_overlap):
            for x in _tile_offsets(w, side, step_overlap):
                residual = self.unet(z[:, :, y:y + side, x:x + side], t, self.embeds)
                blended[:, :, y:y + side, x:x + side] += residual * weights
                total[y:y + side, x:x + side] += weights
        return blended / total

    def __call__(self, source_cpu, timestep: int, latent_tiling: bool = False, lap=None):
        """One run; `lap(stage)`, when given, is called after each stage (stages() times them)."""
        from export.reference import adain_fix

        torch = self.torch
        lap = lap or (lambda _stage: None)
        with torch.inference_mode():
            source = source_cpu.to(self.device, non_blocking=False)
            x = (source * 2.0 - 1.0).to(self.dtype)
            t = torch.tensor([int(timestep)], dtype=torch.int64, device=self.device)
            lap("upload")
            mean, _logvar = self.encoder(x, t)
            z = mean * self.scaling
            lap("encoder")
            residual = self.unet_tiled(z, t) if latent_tiling else self.unet(z, t, self.embeds)
            x0 = z / float(self.acp[int(timestep)]) ** 0.5 - residual
            lap("unet")
            y = self.decoder(x0).clamp(-1.0, 1.0) * 0.5 + 0.5
            lap("decoder")
            fixed = adain_fix(y.to(torch.float32), source)
            lap("color_fix")
            result = fixed[0].permute(1, 2, 0).contiguous().cpu()
            self.sync()
            lap("download")
        return result

    def stages(self, source_cpu, timestep: int) -> Dict[str, float]:
        """One untiled run with a synchronization after each stage: milliseconds per stage, named as
        `tadsr-edge bench` names its stages where they match (upload and download are apart here).
        The synchronizations cost a little, so the pipeline's time comes from plain runs, not from this."""
        times: Dict[str, float] = {}
        self.sync()
        mark = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal mark
            self.sync()
            now = time.perf_counter()
            times[stage] = (now - mark) * 1e3
            mark = now

        self(source_cpu, timestep, lap=lap)
        return times

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def time_stages(pipe: Pipeline, source, timestep: int, runs: int) -> Dict[str, Dict[str, float]]:
    """Median milliseconds per stage over `runs` untiled runs (after time_runs has warmed up)."""
    samples: Dict[str, List[float]] = {}
    for _ in range(runs):
        for name, ms in pipe.stages(source, timestep).items():
            samples.setdefault(name, []).append(ms)
    return {name: summarize(values) for name, values in samples.items()}


def time_runs(pipe: Pipeline, source, timestep: int, runs: int, warmup: int, latent_tiling: bool):
    samples = []
    result = None
    for i in range(warmup + runs):
        pipe.sync()
        started = time.perf_counter()
        result = pipe(source, timestep, latent_tiling=latent_tiling)
        ms = (time.perf_counter() - started) * 1e3
        if i >= warmup:
            samples.append(ms)
        log(f"  {'warm-up' if i < warmup else 'run'} {i + 1 - (0 if i < warmup else warmup)}: {ms:.1f} ms")
    return samples, result


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from export.synthetic import synthetic_models

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "torch.cuda.is_available() is False", "torch": torch.__version__}))
        return 2
    if args.size <= 0 or args.size % 32:
        print(json.dumps({"error": f"--size {args.size} must be a positive multiple of 32"}))
        return 2
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    dtypes = {"fp16": torch.float16, "fp32": torch.float32}
    for p in precisions:
        if p not in dtypes:
            print(json.dumps({"error": f"unknown precision {p!r}"}))
            return 2
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)

    report = {
        "tool": "torch_gpu_bench",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "config": args.config,
        "seed": args.seed,
        "size": args.size,
        "timestep": args.timestep,
        "runs": args.runs,
        "warmup": args.warmup,
        "tf32": bool(args.tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "timed": "U (float32 CPU tensor) -> device -> encoder, UNet, clean latent, decoder, adain (fp32) "
                 "-> float32 [H,W,3] on the CPU, synchronized; excludes making U (preprocess_ms) and PNG",
        "results": {},
    }
    import diffusers

    report["diffusers"] = diffusers.__version__

    started = time.perf_counter()
    models = synthetic_models(args.config, args.seed)
    report["model_build_s"] = time.perf_counter() - started
    log(f"{args.config} seed {args.seed} built in {report['model_build_s']:.1f} s")

    source, pre_ms = make_upscaled(args.input, args.size)
    report["preprocess_ms"] = pre_ms
    tiled_source = None
    if args.tiled_size:
        tiled_source, tiled_pre_ms = make_upscaled(args.input, args.tiled_size)
        report["tiled_size"] = args.tiled_size
        report["tiled_preprocess_ms"] = tiled_pre_ms

    outputs = {}
    for name in precisions:
        entry: Dict = {}
        report["results"][name] = entry
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            load_start = time.perf_counter()
            pipe = Pipeline(models, device, dtypes[name])
            pipe.sync()
            entry["to_device_s"] = time.perf_counter() - load_start
            log(f"{name}: {args.size}x{args.size}, {args.warmup} warm-up + {args.runs} runs")
            samples, result = time_runs(pipe, source, args.timestep, args.runs, args.warmup, False)
            entry["pipeline_ms"] = summarize(samples)
            entry["samples_ms"] = samples
            entry["stages_ms"] = time_stages(pipe, source, args.timestep, args.runs)
            log(f"{name}: stage medians (synchronized after each) " + ", ".join(
                f"{stage} {summary['median']:.1f}" for stage, summary in entry["stages_ms"].items()) + " ms")
            outputs[name] = result
            if not torch.isfinite(result).all():
                entry["warning"] = "non-finite values in the output"
            if device.type == "cuda":
                entry["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
            if tiled_source is not None:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                log(f"{name}: {args.tiled_size}x{args.tiled_size} latent-tiled, "
                    f"{args.tiled_warmup} warm-up + {args.tiled_runs} runs")
                tiled_samples, _ = time_runs(pipe, tiled_source, args.timestep, args.tiled_runs,
                                             args.tiled_warmup, True)
                entry["tiled"] = {"size": args.tiled_size, "pipeline_ms": summarize(tiled_samples),
                                  "samples_ms": tiled_samples}
                if device.type == "cuda":
                    entry["tiled"]["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
            del pipe
        except Exception as err:  # one precision failing (out of memory, no kernel) must not lose the other
            entry["error"] = f"{type(err).__name__}: {err}"
            log(f"{name}: {entry['error']}")
    if "fp16" in outputs and "fp32" in outputs:
        diff = (outputs["fp16"] - outputs["fp32"]).abs().max().item()
        report["fp16_vs_fp32_max_abs_diff"] = diff
    print(json.dumps(report), flush=True)
    failed = [n for n in precisions if "error" in report["results"][n]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
