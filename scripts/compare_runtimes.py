#!/usr/bin/env python3
"""Compare PyTorch eager, onnxruntime from Python and tadsr-edge on one bundle.

Run by hand (not by `make test`), with the export venv's Python, on a quiet
machine:

    V=${XDG_CACHE_HOME:-~/.cache}/tadsr-edge/venv-$(sha256sum export/requirements.txt | cut -c1-16)
    python -m export --synthetic sd21 --seed 0 --out models/sd21      # once
    cargo build --release                                             # once
    $V/bin/python scripts/compare_runtimes.py --bundle models/sd21 --check

All three runtimes compute the same thing: examples/coffee.png resized
(Pillow Lanczos) to (size/4)^2, upscaled x4 with Pillow bicubic (process size
0, so the model image is size x size), untiled, posterior mean, the bundle's
prompt embedding, adain color fix, 8-bit PNG written. fp32 throughout, the
same number of threads everywhere.

Every measurement runs in a process of its own (so peak RSS belongs to one
runtime): 1 warm-up run, then 1 measured run. The driver interleaves the
runtimes (for each size, for each repeat, for each runtime) and reports the
median of the repeats. "other" is everything outside the three networks
(pre-processing, clean latent, color fix, quantization, PNG write).

  pytorch         the export package's model (export.model), weights rebuilt
                  from the bundle's provenance (synthetic config + seed),
                  cached once as safetensors in --torch-cache (sd21: about
                  40 s and 3.8 GB the first time), torch.inference_mode(),
                  torch.set_num_threads(T), diffusers' default attention
                  (AttnProcessor2_0: torch's scaled_dot_product_attention).
  onnxruntime-py  onnxruntime.InferenceSession on the bundle's three .onnx
                  files, CPUExecutionProvider, intra_op_num_threads=T,
                  ORT_ENABLE_ALL; the rest in numpy.
  tadsr-edge      `tadsr-edge bench --tile 0 --runs 1 --warmup 1 --json`.

--check prints whether the targets hold at --check-size (default 512) and
exits with 1 when one does not. --from-json FILE re-prints the tables (and
--check) of an earlier run without measuring anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PHOTO = REPO_ROOT / "examples" / "coffee.png"
DEFAULT_BINARY = REPO_ROOT / "target" / "release" / "tadsr-edge"
DEFAULT_TORCH_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tadsr-edge" / "torch-weights"

RUNTIMES = ("pytorch", "onnxruntime-py", "tadsr-edge")
PYTHON_WORKERS = {"pytorch": "pytorch", "onnxruntime-py": "onnxruntime"}
NETWORK_STAGES = ("encoder", "unet", "decoder")
COMPONENTS = ("vae_encoder", "unet", "vae_decoder")
REQUIRED_MODULES = ("numpy", "PIL", "torch", "diffusers", "safetensors", "onnxruntime")
UPSCALE = 4
ADAIN_EPS = 1e-5
# Output checks (max abs difference of the [0, 1] images): label, and the level above which a warning is printed.
OUTPUT_CHECKS = {
    "max_abs_diff_pytorch_vs_onnxruntime_py": ("max abs diff, PyTorch vs onnxruntime-py output (float)", 1e-2),
    "max_abs_diff_tadsr_edge_png_vs_onnxruntime_py": (
        "max abs diff, tadsr-edge run 8-bit PNG vs onnxruntime-py output (float)", 1e-2),
}

# Targets of --check: (name, limit); each value is computed by check_targets.
TARGETS = (
    ("tadsr-edge total / onnxruntime-py total", 1.02),
    ("tadsr-edge total / pytorch total", 0.75),
    ("tadsr-edge share outside ONNX Runtime (other / total)", 0.03),
)


class CompareError(Exception):
    """A problem to report in one line (exit code 2)."""


# ---------------------------------------------------------------------------
# What one measurement holds
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Measurement:
    """One measured run of one runtime at one size (seconds, bytes)."""

    runtime: str
    size: int
    encoder: float
    unet: float
    decoder: float
    other: float
    total: float
    load: float
    peak_rss_bytes: int
    details: Dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StageTimes:
    encoder: float = 0.0
    unet: float = 0.0
    decoder: float = 0.0
    total: float = 0.0

    @property
    def other(self) -> float:
        return self.total - self.encoder - self.unet - self.decoder


def timed(function: Callable, *args):
    """(function(*args), seconds it took)."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def peak_rss_bytes() -> int:
    """VmHWM of this process."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ---------------------------------------------------------------------------
# The shared input and the parts of the pipeline every Python worker runs
# ---------------------------------------------------------------------------


def low_res_input(photo: Path, size: int):
    """The photo resized (Lanczos) to (size/4) x (size/4), RGB."""
    from PIL import Image

    side = size // UPSCALE
    return Image.open(photo).convert("RGB").resize((side, side), Image.LANCZOS)


def upscale_bicubic(low_res):
    """The image U with process size 0: Pillow bicubic x4 (a multiple of 8 already)."""
    from PIL import Image

    return low_res.resize((low_res.size[0] * UPSCALE, low_res.size[1] * UPSCALE), Image.BICUBIC)


def image_chw(image):
    """float32 [3, H, W] in [0, 1]."""
    import numpy as np

    return np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def write_png_8bit(result_hwc, path: Path) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.round(result_hwc * 255.0).clip(0, 255).astype(np.uint8)).save(path)


def read_manifest(bundle: Path) -> Dict:
    with open(bundle / "manifest.json") as manifest:
        return json.load(manifest)


def python_versions() -> Dict[str, str]:
    import numpy
    import PIL

    return {"python": platform.python_version(), "numpy": numpy.__version__, "pillow": PIL.__version__}


# ---------------------------------------------------------------------------
# PyTorch eager worker
# ---------------------------------------------------------------------------


def torch_cache_file(cache_dir: Path, config: str, seed: int) -> Path:
    """Where the synthetic weights of (config, seed) are cached, keyed by the code that draws them."""
    import diffusers

    digest = hashlib.sha256()
    for source in ("export/synthetic.py", "export/model.py"):
        digest.update((REPO_ROOT / source).read_bytes())
    digest.update(diffusers.__version__.encode())
    return cache_dir / f"{config}-seed{seed}-{digest.hexdigest()[:12]}.safetensors"


def synthetic_source(manifest: Dict) -> Dict:
    source = manifest["provenance"]["source"]
    if source.get("kind") != "synthetic":
        raise CompareError("the PyTorch side rebuilds synthetic weights only; this bundle's provenance is "
                         f"{source.get('kind')!r} (export one with `python -m export --synthetic sd21`)")
    return source


def build_torch_cache(bundle: Path, cache_dir: Path) -> Dict:
    """Draw the bundle's synthetic weights once and save them (vae.*, unet.*) as safetensors."""
    from safetensors.torch import save_file

    from export.synthetic import synthetic_base_models

    source = synthetic_source(read_manifest(bundle))
    target = torch_cache_file(cache_dir, source["config"], int(source["seed"]))
    if target.is_file():
        return {"cache": str(target), "built": False, "seconds": 0.0}
    start = time.perf_counter()
    _cfg, vae, unet = synthetic_base_models(source["config"], int(source["seed"]))
    tensors = {f"vae.{k}": v.contiguous() for k, v in vae.state_dict().items()}
    tensors.update({f"unet.{k}": v.contiguous() for k, v in unet.state_dict().items()})
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(f"{source['config']}-seed{source['seed']}-*.safetensors"):
        stale.unlink()
    partial = target.with_suffix(".partial")
    save_file(tensors, str(partial))
    partial.rename(target)
    return {"cache": str(target), "built": True, "seconds": time.perf_counter() - start}


def attention_processors(*modules) -> List[str]:
    from diffusers.models.attention_processor import Attention

    return sorted({type(m.processor).__name__ for module in modules for m in module.modules()
                   if isinstance(m, Attention)})


def read_safetensors_f32(path: Path) -> Dict:
    """Every tensor of a float32 safetensors file, read into memory of its own.

    Not safetensors.torch.load_file: that memory-maps the file, and conv/matmul
    kernels on weights at the file's (unaligned) offsets take other code paths
    (outputs differ by ~1e-4 from the same model built in memory). Reading
    tensor by tensor keeps the peak at one copy of the weights.
    """
    import torch

    tensors = {}
    with open(path, "rb") as file:
        header_size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(header_size))
        header.pop("__metadata__", None)
        for name, entry in header.items():
            if entry["dtype"] != "F32":
                raise CompareError(f"{path}: {name} is {entry['dtype']}, expected F32")
            begin, end = entry["data_offsets"]
            tensor = torch.empty(entry["shape"], dtype=torch.float32)
            file.seek(8 + header_size + begin)
            if tensor.numel() and file.readinto(memoryview(tensor.numpy()).cast("B")) != end - begin:
                raise CompareError(f"{path}: {name} is truncated")
            tensors[name] = tensor
    return tensors


class TorchPipeline:
    """The export package's three graphs on the weights of the cache."""

    def __init__(self, bundle: Path, cache_dir: Path):
        import numpy as np
        import torch

        from export.model import TadsrModels, alphas_cumprod, build_unet, build_vae, get_config

        manifest = read_manifest(bundle)
        source = synthetic_source(manifest)
        cache = torch_cache_file(cache_dir, source["config"], int(source["seed"]))
        if not cache.is_file():
            raise CompareError(f"{cache}: no cached PyTorch weights (the driver builds them first)")
        cfg = get_config(source["config"])
        with torch.device("meta"):
            vae, unet = build_vae(cfg), build_unet(cfg)
        tensors = read_safetensors_f32(cache)
        vae.load_state_dict(split_prefix(tensors, "vae."), strict=True, assign=True)
        unet.load_state_dict(split_prefix(tensors, "unet."), strict=True, assign=True)
        embeds = np.load(bundle / manifest["prompt"]["embeds_file"]).astype(np.float32)
        models = TadsrModels(config_name=source["config"], vae=vae.eval(), unet=unet.eval(),
                             alphas_cumprod=alphas_cumprod(), prompt_embeds=torch.from_numpy(embeds),
                             prompt_text=None, source=source)
        self.encoder = models.encoder_graph()
        self.unet = models.unet_graph()
        self.decoder = models.decoder_graph()
        self.scaling_factor = models.scaling_factor
        self.alphas_cumprod = models.alphas_cumprod
        self.prompt_embeds = models.prompt_embeds
        self.attention = attention_processors(vae, unet)

    def super_resolve(self, low_res, timestep: int, png_path: Path):
        """(StageTimes, float32 [H, W, 3] in [0, 1]): export.reference.super_resolve, timed per stage."""
        import torch

        from export.reference import adain_fix

        times = StageTimes()
        start = time.perf_counter()
        source = torch.from_numpy(image_chw(upscale_bicubic(low_res)))[None]
        t = torch.tensor([timestep], dtype=torch.int64)
        (mean, _logvar), times.encoder = timed(self.encoder, source * 2.0 - 1.0, t)
        z = mean * self.scaling_factor
        residual, times.unet = timed(self.unet, z, t, self.prompt_embeds)
        x0 = z / self.alphas_cumprod[timestep] ** 0.5 - residual
        decoded, times.decoder = timed(self.decoder, x0)
        fixed = adain_fix(decoded.clamp(-1.0, 1.0) * 0.5 + 0.5, source)
        result = fixed[0].permute(1, 2, 0).contiguous().numpy()
        write_png_8bit(result, png_path)
        times.total = time.perf_counter() - start
        return times, result


def split_prefix(tensors: Dict, prefix: str) -> Dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def pytorch_worker(args) -> Dict:
    import diffusers
    import torch

    torch.set_num_threads(args.threads)
    pipeline, load_s = timed(TorchPipeline, args.bundle, args.torch_cache)
    with torch.inference_mode():
        measured = run_warm_and_measured(pipeline.super_resolve, args)
    details = {"attention": pipeline.attention, "torch_threads": torch.get_num_threads(),
               "versions": {**python_versions(), "torch": torch.__version__, "diffusers": diffusers.__version__}}
    return {"load": load_s, **measured, "details": details}


# ---------------------------------------------------------------------------
# onnxruntime-from-Python worker (imports no torch)
# ---------------------------------------------------------------------------


def adain_numpy(target, source):
    """export.reference.adain_fix on [3, H, W] float32 arrays (unbiased variance + eps)."""
    import numpy as np

    def mean_std(x):
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        return (flat.mean(axis=1)[:, None, None],
                np.sqrt(flat.var(axis=1, ddof=1) + ADAIN_EPS)[:, None, None])

    t_mean, t_std = mean_std(target)
    s_mean, s_std = mean_std(source)
    return np.clip((target - t_mean) / t_std * s_std + s_mean, 0.0, 1.0).astype(np.float32)


class OrtPipeline:
    """The bundle's three graphs in onnxruntime sessions; everything else in numpy."""

    def __init__(self, bundle: Path, threads: int):
        import numpy as np
        import onnxruntime as ort

        manifest = read_manifest(bundle)
        if manifest["precision"] != "fp32":
            raise CompareError(f"{bundle}: a {manifest['precision']} bundle; the comparison is fp32")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {
            name: ort.InferenceSession(str(bundle / manifest["components"][name]["file"]), sess_options=options,
                                       providers=["CPUExecutionProvider"])
            for name in COMPONENTS
        }
        self.scaling_factor = np.float32(manifest["scaling_factor"])
        self.alphas_cumprod = np.asarray(manifest["schedule"]["alphas_cumprod"], dtype=np.float32)
        self.prompt_embeds = np.load(bundle / manifest["prompt"]["embeds_file"]).astype(np.float32)

    def super_resolve(self, low_res, timestep: int, png_path: Path):
        """(StageTimes, float32 [H, W, 3] in [0, 1])."""
        import numpy as np

        times = StageTimes()
        start = time.perf_counter()
        source = image_chw(upscale_bicubic(low_res))
        t = np.array([timestep], dtype=np.int64)
        (mean, _logvar), times.encoder = timed(
            self.sessions["vae_encoder"].run, None, {"image": (source * 2.0 - 1.0)[None], "timestep": t})
        z = mean * self.scaling_factor
        (residual,), times.unet = timed(
            self.sessions["unet"].run, None,
            {"latent": z, "timestep": t, "encoder_hidden_states": self.prompt_embeds})
        x0 = z / np.sqrt(self.alphas_cumprod[timestep]) - residual
        (decoded,), times.decoder = timed(self.sessions["vae_decoder"].run, None, {"latent": x0})
        fixed = adain_numpy(np.clip(decoded[0], -1.0, 1.0) * 0.5 + 0.5, source)
        result = np.ascontiguousarray(fixed.transpose(1, 2, 0))
        write_png_8bit(result, png_path)
        times.total = time.perf_counter() - start
        return times, result


def onnxruntime_worker(args) -> Dict:
    import onnxruntime as ort

    pipeline, load_s = timed(OrtPipeline, args.bundle, args.threads)
    measured = run_warm_and_measured(pipeline.super_resolve, args)
    details = {"providers": pipeline.sessions["unet"].get_providers(),
               "versions": {**python_versions(), "onnxruntime": ort.__version__}}
    return {"load": load_s, **measured, "details": details}


# ---------------------------------------------------------------------------
# What both Python workers share
# ---------------------------------------------------------------------------


def run_warm_and_measured(super_resolve: Callable, args) -> Dict:
    """One warm-up run, one measured run; saves the measured result when asked."""
    import numpy as np
    from PIL import Image

    low_res = Image.open(args.input_png).convert("RGB")
    with tempfile.TemporaryDirectory() as scratch:
        png_path = Path(scratch) / "out.png"
        super_resolve(low_res, args.timestep, png_path)
        times, result = super_resolve(low_res, args.timestep, png_path)
    if args.save_output:
        np.save(args.save_output, result)
    return {"encoder": times.encoder, "unet": times.unet, "decoder": times.decoder, "other": times.other,
            "total": times.total}


WORKERS = {"pytorch": pytorch_worker, "onnxruntime": onnxruntime_worker}


def worker_main(args) -> int:
    """Runs inside a subprocess; prints one JSON object on the last line of stdout."""
    sys.path.insert(0, str(REPO_ROOT))
    if args.worker == "torch-cache":
        report = build_torch_cache(args.bundle, args.torch_cache)
    else:
        report = WORKERS[args.worker](args)
        report["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(report))
    return 0


# ---------------------------------------------------------------------------
# Driver: launching measurements
# ---------------------------------------------------------------------------


def run_subprocess_json(command: List[str], env: Optional[Dict[str, str]] = None) -> Dict:
    """Run a command, return the JSON object on the last line of its stdout; stop with its stderr on failure."""
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-20:])
        raise CompareError(f"failed (exit {completed.returncode}): {shlex.join(command)}\n{tail}")
    lines = completed.stdout.strip().splitlines()
    if not lines:
        raise CompareError(f"no output from: {shlex.join(command)}")
    return json.loads(lines[-1])


def worker_command(args, worker: str, size: Optional[int] = None, input_png: Optional[Path] = None,
                   save_output: Optional[Path] = None) -> List[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--bundle", str(args.bundle),
               "--threads", str(args.threads), "--timestep", str(args.timestep),
               "--torch-cache", str(args.torch_cache)]
    if size is not None:
        command += ["--size", str(size), "--input-png", str(input_png)]
    if save_output is not None:
        command += ["--save-output", str(save_output)]
    return command


def worker_env(threads: int) -> Dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def measure_python(args, runtime: str, size: int, input_png: Path, save_output: Optional[Path]) -> Measurement:
    report = run_subprocess_json(
        worker_command(args, PYTHON_WORKERS[runtime], size, input_png, save_output), worker_env(args.threads))
    return Measurement(runtime=runtime, size=size, encoder=report["encoder"], unet=report["unet"],
                       decoder=report["decoder"], other=report["other"], total=report["total"], load=report["load"],
                       peak_rss_bytes=report["peak_rss_bytes"], details=report["details"])


def tadsr_edge_bench_command(args, size: int, input_png: Path) -> List[str]:
    return [str(args.binary), "bench", "--model", str(args.bundle), "--size", str(size), "--tile", "0",
            "--runs", "1", "--warmup", "1", "--threads", str(args.threads), "--provider", "cpu",
            "--timestep", str(args.timestep), "--input", str(input_png), "--json"]


def measure_tadsr_edge(args, size: int, input_png: Path) -> Measurement:
    report = run_subprocess_json(tadsr_edge_bench_command(args, size, input_png))
    stages_s = {name: report["stages_ms"][name]["p50"] / 1e3 for name in report["stages_ms"]}
    total = report["end_to_end_ms"]["p50"] / 1e3
    networks = sum(stages_s[name] for name in NETWORK_STAGES)
    return Measurement(runtime="tadsr-edge", size=size, encoder=stages_s["encoder"], unet=stages_s["unet"],
                       decoder=stages_s["decoder"], other=total - networks, total=total,
                       load=report["session_creation_ms"] / 1e3, peak_rss_bytes=report["peak_rss_bytes"],
                       details={"stages_s": stages_s, "provider": report["provider"],
                                "rust_side_share_p50": report["rust_side_share_p50"]})


def measure(args, runtime: str, size: int, input_png: Path, save_output: Optional[Path]) -> Measurement:
    if runtime == "tadsr-edge":
        return measure_tadsr_edge(args, size, input_png)
    return measure_python(args, runtime, size, input_png, save_output)


def max_abs_diff_npy(first: Path, second: Path) -> float:
    import numpy as np

    return float(np.max(np.abs(np.load(first).astype(np.float64) - np.load(second).astype(np.float64))))


def tadsr_edge_output_diff(args, size: int, input_png: Path, reference_npy: Path, scratch: Path) -> float:
    """Max abs diff (in [0, 1] units) of `tadsr-edge run`'s 8-bit output against onnxruntime-py's float result."""
    import numpy as np
    from PIL import Image

    output = scratch / f"tadsr-edge-{size}.png"
    command = [str(args.binary), "run", str(input_png), "-o", str(output), "--model", str(args.bundle),
               "--process-size", "0", "--tile", "0", "--threads", str(args.threads), "--provider", "cpu",
               "--timestep", str(args.timestep), "--color-fix", "adain", "--quiet"]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        raise CompareError(f"failed: {shlex.join(command)}\n{completed.stderr.strip()}")
    got = np.asarray(Image.open(output).convert("RGB"), dtype=np.float64) / 255.0
    return float(np.max(np.abs(got - np.load(reference_npy).astype(np.float64))))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_size(args, size: int, scratch: Path) -> Dict:
    """All repeats of all runtimes at one size, interleaved; plus the output checks."""
    input_png = scratch / f"input-{size // UPSCALE}.png"
    low_res_input(args.photo, size).save(input_png)
    outputs = {runtime: scratch / f"{runtime}-{size}.npy" for runtime in PYTHON_WORKERS}
    runs: List[Measurement] = []
    for repeat in range(args.repeats):
        for runtime in RUNTIMES:
            save_output = outputs.get(runtime) if repeat == 0 else None
            log(f"size {size}, repeat {repeat + 1}/{args.repeats}: {runtime} ...")
            measurement = measure(args, runtime, size, input_png, save_output)
            log(f"  total {measurement.total:.3f} s, load {measurement.load:.2f} s, "
                f"peak RSS {measurement.peak_rss_bytes / 2 ** 30:.2f} GiB")
            runs.append(measurement)
    checks = {"max_abs_diff_pytorch_vs_onnxruntime_py": max_abs_diff_npy(outputs["pytorch"],
                                                                          outputs["onnxruntime-py"])}
    if args.verify_tadsr_edge:
        log(f"size {size}: tadsr-edge run, output check ...")
        checks["max_abs_diff_tadsr_edge_png_vs_onnxruntime_py"] = tadsr_edge_output_diff(
            args, size, input_png, outputs["onnxruntime-py"], scratch)
    return {"runs": [dataclasses.asdict(run) for run in runs], "medians": medians_by_runtime(runs),
            "checks": checks}


def medians_by_runtime(runs: List[Measurement]) -> Dict[str, Dict[str, float]]:
    fields = ("encoder", "unet", "decoder", "other", "total", "load", "peak_rss_bytes")
    medians = {}
    for runtime in RUNTIMES:
        mine = [run for run in runs if run.runtime == runtime]
        medians[runtime] = {field: statistics.median(getattr(run, field) for run in mine) for field in fields}
    return medians


def ensure_torch_cache(args) -> Dict:
    log("PyTorch weights: checking the cache (the first time draws the synthetic weights) ...")
    report = run_subprocess_json(worker_command(args, "torch-cache"), worker_env(args.threads))
    state = f"built in {report['seconds']:.1f} s" if report["built"] else "cached"
    log(f"  {report['cache']}: {state}")
    return report


# ---------------------------------------------------------------------------
# Driver: context, tables, targets
# ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return None


def machine_info() -> Dict:
    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "cpu_model": cpu_model(),
            "memory_gib": memory_total_gib(), "kernel": platform.release(),
            "load_average_at_start": list(os.getloadavg())}


def tadsr_edge_versions(binary: Path) -> Dict[str, str]:
    """`tadsr-edge --version` and the ONNX Runtime line of `tadsr-edge info` (version, library, how found)."""
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.split()
    info = subprocess.run([str(binary), "info"], capture_output=True, text=True, cwd=REPO_ROOT).stdout
    ort_line = next((line for line in info.splitlines() if line.startswith("ONNX Runtime ")), "")
    return {"tadsr-edge": version[-1] if version else "unknown",
            "tadsr-edge's ONNX Runtime": ort_line[len("ONNX Runtime "):] or "unknown"}


def collect_versions(results: Dict, binary: Path) -> Dict[str, str]:
    versions: Dict[str, str] = {}
    for size_result in results.values():
        for run in size_result["runs"]:
            versions.update(run["details"].get("versions", {}))
    versions.update(tadsr_edge_versions(binary))
    return versions


def pytorch_attention(results: Dict) -> List[str]:
    for size_result in results.values():
        for run in size_result["runs"]:
            if run["runtime"] == "pytorch":
                return run["details"]["attention"]
    return []


def format_table(size: int, size_result: Dict, repeats: int) -> str:
    medians = size_result["medians"]
    pytorch_total = medians["pytorch"]["total"]
    onnxruntime_total = medians["onnxruntime-py"]["total"]
    header = (f"{'runtime':<15} {'encoder s':>10} {'unet s':>9} {'decoder s':>10} {'other s':>8} {'total s':>9} "
              f"{'x PyTorch':>10} {'x onnxruntime-py':>17} {'peak RSS GiB':>13} {'load s':>7}")
    lines = [f"{size}x{size} output ({size // UPSCALE}x{size // UPSCALE} input), median of {repeats} repeat(s)",
             header, "-" * len(header)]
    for runtime in RUNTIMES:
        m = medians[runtime]
        lines.append(f"{runtime:<15} {m['encoder']:>10.3f} {m['unet']:>9.3f} {m['decoder']:>10.3f} "
                     f"{m['other']:>8.3f} {m['total']:>9.3f} {m['total'] / pytorch_total:>10.3f} "
                     f"{m['total'] / onnxruntime_total:>17.3f} {m['peak_rss_bytes'] / 2 ** 30:>13.2f} "
                     f"{m['load']:>7.2f}")
    for name, value in size_result["checks"].items():
        label, warn_above = OUTPUT_CHECKS[name]
        warning = f"  WARNING: above {warn_above:g}, not the same computation?" if value > warn_above else ""
        lines.append(f"{label}: {value:.3g}{warning}")
    return "\n".join(lines)


def format_load(load_average: List[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load_average)


def format_context(report: Dict) -> str:
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return "\n".join([
        f"date: {report['date']} (took {report['duration_s'] / 60:.1f} min)",
        f"command: {report['command']}",
        f"machine: {machine['cpu_model']}, nproc {machine['nproc']} ({machine['usable_cpus']} usable), "
        f"{machine['memory_gib']:.1f} GiB, load average (1/5/15 min) at start "
        f"{format_load(machine['load_average_at_start'])}, at end {format_load(machine['load_average_at_end'])}",
        f"bundle: {report['bundle']} ({report['precision']}), timestep {report['timestep']}, "
        f"threads {report['threads']}, untiled, posterior mean, adain, input {report['photo']}",
        f"PyTorch attention processors: {', '.join(report['pytorch_attention'])} "
        f"(AttnProcessor2_0 = torch scaled_dot_product_attention); weights read from "
        f"{report['torch_cache']['cache']}",
        f"versions: {versions}",
        "ratios are total time / total time of that runtime (below 1 = faster); "
        "other = everything outside the three networks",
    ])


def check_targets(report: Dict, check_size: int) -> List[Dict]:
    size_result = report["sizes"].get(str(check_size))
    if size_result is None:
        return []
    medians = size_result["medians"]
    edge = medians["tadsr-edge"]
    values = (edge["total"] / medians["onnxruntime-py"]["total"],
              edge["total"] / medians["pytorch"]["total"],
              edge["other"] / edge["total"])
    return [{"target": name, "value": value, "limit": limit, "holds": value <= limit}
            for (name, limit), value in zip(TARGETS, values, strict=True)]


def bench_rust_side_shares(report: Dict, check_size: int) -> List[float]:
    """`tadsr-edge bench`'s own rust_side_share_p50 (named non-ONNX stages only) of each repeat."""
    runs = report["sizes"].get(str(check_size), {}).get("runs", [])
    return [run["details"]["rust_side_share_p50"] for run in runs if run["runtime"] == "tadsr-edge"]


def format_checks(checks: List[Dict], check_size: int) -> str:
    if not checks:
        return f"check: size {check_size} was not measured; nothing to check"
    lines = [f"targets at {check_size}x{check_size}:"]
    for check in checks:
        verdict = "holds" if check["holds"] else "FAILS"
        lines.append(f"  {verdict:<6} {check['target']}: {check['value']:.3f} (limit {check['limit']})")
    return "\n".join(lines)


def print_report(report: Dict, show_checks: bool, check_size: int) -> int:
    print(format_context(report))
    for size, size_result in report["sizes"].items():
        print()
        print(format_table(int(size), size_result, report["repeats"]))
    if not show_checks:
        return 0
    checks = check_targets(report, check_size)
    print()
    print(format_checks(checks, check_size))
    shares = bench_rust_side_shares(report, check_size)
    if shares:
        print(f"  (tadsr-edge bench's own rust_side_share_p50, without the time between stages: "
              f"{', '.join(f'{share:.3f}' for share in shares)})")
    return 0 if checks and all(check["holds"] for check in checks) else 1


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_sizes(text: str) -> List[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    for size in sizes:
        if size <= 0 or size % (8 * UPSCALE):
            raise argparse.ArgumentTypeError(f"size {size} is not a positive multiple of {8 * UPSCALE}")
    return sizes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="compare_runtimes.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=REPO_ROOT / "models" / "sd21",
                        help="fp32 synthetic bundle (default models/sd21)")
    parser.add_argument("--sizes", type=parse_sizes, default=[128, 256, 512],
                        help="output sides, comma-separated (default 128,256,512)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for every runtime (default: usable CPUs)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per runtime and size (default 3)")
    parser.add_argument("--timestep", type=int, default=500)
    parser.add_argument("--binary", type=Path, default=DEFAULT_BINARY, help="tadsr-edge binary")
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="source photo (default examples/coffee.png)")
    parser.add_argument("--json-out", type=Path, default=REPO_ROOT / "bench-results" / "compare.json")
    parser.add_argument("--torch-cache", type=Path, default=DEFAULT_TORCH_CACHE,
                        help=f"folder of the cached PyTorch weights (default {DEFAULT_TORCH_CACHE})")
    parser.add_argument("--verify-tadsr-edge", action="store_true",
                        help="also run `tadsr-edge run` once per size and compare its PNG with onnxruntime-py")
    parser.add_argument("--check", action="store_true", help="print whether the targets hold; exit 1 if not")
    parser.add_argument("--check-size", type=int, default=512, help="size the targets apply to (default 512)")
    parser.add_argument("--from-json", type=Path, help="print the report of an earlier --json-out; measure nothing")
    # Internal: one measurement in a subprocess of its own.
    parser.add_argument("--worker", choices=["pytorch", "onnxruntime", "torch-cache"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--input-png", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be at least 1")
    for path in ("bundle", "binary", "photo", "json_out", "torch_cache"):
        setattr(args, path, getattr(args, path).resolve())
    return args


def check_prerequisites(args) -> None:
    if not (args.bundle / "manifest.json").is_file():
        raise CompareError(f"{args.bundle}: no manifest.json (python -m export --synthetic sd21 --seed 0 "
                         f"--out models/sd21)")
    manifest = read_manifest(args.bundle)
    if manifest["precision"] != "fp32":
        raise CompareError(f"{args.bundle}: a {manifest['precision']} bundle; the comparison is fp32")
    if manifest["defaults"]["upscale"] != UPSCALE:
        raise CompareError(f"{args.bundle}: upscale {manifest['defaults']['upscale']}; this script assumes {UPSCALE}")
    synthetic_source(manifest)
    if not args.binary.is_file():
        raise CompareError(f"{args.binary}: no tadsr-edge binary (cargo build --release)")
    missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise CompareError(f"{sys.executable} lacks {', '.join(missing)}: run this with the export venv's Python "
                         "(${XDG_CACHE_HOME:-~/.cache}/tadsr-edge/venv-*/bin/python; `make setup` makes it)")


def driver_main(args) -> int:
    if args.from_json:
        return print_report(json.loads(args.from_json.read_text()), args.check, args.check_size)
    check_prerequisites(args)
    started = datetime.datetime.now().astimezone()
    machine = machine_info()
    torch_cache = ensure_torch_cache(args)
    with tempfile.TemporaryDirectory(prefix="compare-runtimes-") as scratch:
        sizes = {str(size): measure_size(args, size, Path(scratch)) for size in args.sizes}
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "machine": {**machine, "load_average_at_end": list(os.getloadavg())},
        "bundle": str(args.bundle),
        "precision": read_manifest(args.bundle)["precision"],
        "photo": str(args.photo),
        "threads": args.threads,
        "repeats": args.repeats,
        "timestep": args.timestep,
        "torch_cache": torch_cache,
        "pytorch_attention": pytorch_attention(sizes),
        "versions": collect_versions(sizes, args.binary),
        "duration_s": (datetime.datetime.now().astimezone() - started).total_seconds(),
        "sizes": sizes,
    }
    if args.check:
        report["check"] = {"size": args.check_size, "targets": check_targets(report, args.check_size)}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    status = print_report(report, args.check, args.check_size)
    print(f"\nwritten: {args.json_out}")
    return status


def main(argv=None) -> int:
    """Exit code: 0 done (and, with --check, every target holds); 1 a target fails; 2 an error."""
    args = parse_args(argv)
    try:
        if args.worker:
            return worker_main(args)
        return driver_main(args)
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
