"""Measure how much memory each graph of a bundle needs, and record it in its manifest.

    python -m export.memory --bundle DIR [--sides 256,512,768] [--dry-run]

For each of vae_encoder, unet and vae_decoder, and each output side S of
``--sides`` (two or more increasing multiples of 8; a square S x S image, so an
S/8 x S/8 latent), one fresh Python process imports numpy and onnxruntime,
creates an InferenceSession (CPUExecutionProvider, 1 intra-op thread,
ORT_ENABLE_ALL, arena on) and reads its peak RSS (Linux: ``VmHWM``, see
``_peak_rss``; elsewhere ``ru_maxrss``): ``created_peak(S)``; it then runs the
graph once on seeded random inputs of that size and reads the peak again:
``run_peak(S)``. One more process only imports numpy and onnxruntime:
``import_peak``. Right after creating the session the probe also reads its
resident size and sets the peak back to it (Linux: "5" to
/proc/self/clear_refs): ``created_resident(S)``, so that ``run_peak`` is the
run's own peak even when creation went higher (an fp16 graph on the CPU holds
its weights in both precisions while it is created). With sides S1 < S2 < ...
each component gets

    weights_bytes = max(0, created_peak(S1) - import_peak)
    activations   = [[S1*S1, max(0, run_peak(S1) - created_resident(S1))],
                     [S2*S2, max(0, run_peak(S2) - created_resident(S2))], ...]

(``created_peak`` instead of ``created_resident`` where the peak cannot be
reset; ``measured_with`` says which).

that is the measured points [pixels, bytes] themselves (integers, pixels
strictly increasing), not a fit: self-attention over the latent (the VAE's mid
block, the UNet's transformer blocks) makes activation memory grow faster than
the pixel count (models/tiny's decoder, run peak at 256/384/512/768/1024 px:
112/151/222/803/2306 MB), so a straight line through two sides underestimates
beyond them. "Pixels" are those of the S x S image the pipeline processes (the
upscaled image), for all three graphs, the UNet's (S/8)^2 latent included.

The figures land in the manifest under ``memory`` (``measured_with``,
``output_sides_px``: the sides, ``import_bytes``: import_peak, ``components``;
docs/bundle-format.md). The runtime's ``--tile auto`` reads them: for an image
(or tile) of P pixels it interpolates each graph's activation bytes linearly
between the points, takes the first point's bytes below the first point, and
beyond the last point scales the last point's bytes by (P / P_last)^2
(attention's quadratic growth; conservative); it takes the largest of the
three graphs' activations on the CPU (each session's arena is handed back
after its run) and their sum on GPUs and servers, adds their weights_bytes
(on a GPU: the graph files' bytes instead) and 62 bytes per pixel of
pipeline buffers, and compares that with the memory budget. ``--dry-run`` prints the figures only.

The probe processes run ``python -m export.memory --probe ...``; this module
imports only the standard library at the top, so that they hold numpy and
onnxruntime and nothing else of note.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

MAIN_COMPONENTS = ("vae_encoder", "unet", "vae_decoder")
DEFAULT_SIDES = (256, 512, 768)
VAE_SCALE = 8
SEED = 0
TIMESTEP = 500
PROBE_TIMEOUT_S = 1800
REPO = Path(__file__).resolve().parent.parent
MEASURED_WITH = ("onnxruntime {version}, CPUExecutionProvider, 1 intra-op thread, ORT_ENABLE_ALL; "
                 "peak RSS ({rss}) of one process per measurement")
PEAK_RESET = "{rss} reset once the session is created"


# ---------------------------------------------------------------------------
# The probe (runs in its own process)
# ---------------------------------------------------------------------------


def _peak_rss() -> tuple:
    """(peak resident set size of this process in bytes, where it was read).

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process's own address space.
    Not ``ru_maxrss`` there: Linux carries the parent's resident size over fork and exec into the
    child's ``ru_maxrss``, so a probe started from a big process (seen: ~980 MB, a pytest run
    holding PyTorch and the tiny model) reads the parent's size, not its own. In a process started
    from a small one the two agree (49.4 vs 49.3 MB after importing numpy and onnxruntime).
    Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (int(peak) if sys.platform == "darwin" else int(peak) * 1024), "ru_maxrss"


def _resident_after_reset() -> Optional[int]:
    """This process's resident size in bytes, with its peak (``VmHWM``) set back to it; None where
    that cannot be done (not Linux, or /proc/self/clear_refs not writable).

    Creating a session can pass through a higher peak than it ends at: an fp16 graph on the CPU
    provider holds its float16 weights and their float32 casts at once (sd21 fp16 UNet: peak 6.1 GB,
    resident 4.0 GB after). Measured against that peak, the run's own activations vanish (0 MB at
    256 and 512 px). With the peak reset ("5" to clear_refs, Linux >= 4.0), the run's peak minus
    this resident size is what running adds, whatever creation went through.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB; equal to VmRSS just after the reset
    except OSError:
        pass
    return None


def _probe(spec: Optional[Dict]) -> Dict:
    """In a fresh process: import numpy and onnxruntime; with ``spec``, create a session and run it once."""
    import numpy as np
    import onnxruntime as ort

    peak, source = _peak_rss()
    result = {"onnxruntime": ort.__version__, "rss": source, "import_peak": peak}
    if spec is None:
        return result
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(spec["file"], sess_options=opts, providers=["CPUExecutionProvider"])
    result["created_peak"] = _peak_rss()[0]
    result["created_resident"] = _resident_after_reset()
    rng = np.random.default_rng(spec.get("seed", SEED))
    feeds = {}
    for port in spec["inputs"]:
        shape, dtype = port["shape"], np.dtype(port["dtype"])
        if dtype.kind == "i":
            feeds[port["name"]] = np.full(shape, spec.get("timestep", TIMESTEP), dtype=dtype)
        elif port["name"] == "image":
            feeds[port["name"]] = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        else:
            feeds[port["name"]] = rng.standard_normal(size=shape).astype(dtype)
    started = time.perf_counter()
    session.run(None, feeds)
    result["run_seconds"] = time.perf_counter() - started
    result["run_peak"] = _peak_rss()[0]
    return result


# ---------------------------------------------------------------------------
# Driving the probes
# ---------------------------------------------------------------------------


def concrete_shape(shape: Sequence, side: int) -> List[int]:
    """A port's manifest shape with its named axes set for one S x S image (batch 1)."""
    named = {"batch": 1, "height": side, "width": side,
             "latent_height": side // VAE_SCALE, "latent_width": side // VAE_SCALE}
    out = []
    for dim in shape:
        if isinstance(dim, int):
            out.append(dim)
        elif dim in named:
            out.append(named[dim])
        else:
            raise ValueError(f"unknown axis {dim!r} in shape {list(shape)}")
    return out


def _run_probe(spec: Optional[Dict]) -> Dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    cmd = [sys.executable, "-m", "export.memory", "--probe", json.dumps(spec)]
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        what = "import" if spec is None else f"{Path(spec['file']).name} at {spec['side']} px"
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"memory probe ({what}) failed with exit code {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def probe_component(bundle: Path, entry: Dict, side: int) -> Dict:
    """created_peak and run_peak (bytes) of one graph of ``bundle`` at an S x S image, in a fresh process."""
    if side % VAE_SCALE:
        raise ValueError(f"side must be a multiple of {VAE_SCALE}, not {side}")
    inputs = [{"name": p["name"], "dtype": p["dtype"], "shape": concrete_shape(p["shape"], side)}
              for p in entry["inputs"]]
    return _run_probe({"file": str(Path(bundle) / entry["file"]), "side": side, "seed": SEED,
                       "timestep": TIMESTEP, "inputs": inputs})


def probe_import() -> Dict:
    return _run_probe(None)


def component_figures(import_peak: int, probes: Sequence[Dict], sides: Sequence[int]) -> Dict:
    """weights_bytes and the activation points [[pixels, bytes], ...] from the probes at ``sides``.

    A run's activations are its peak minus the resident size the session settled at
    (``created_resident``, the peak reset there), or, where the peak could not be reset, minus the
    session's creation peak (an underestimate when creation peaked higher than it settled)."""
    def run_bytes(probe: Dict) -> int:
        base = probe.get("created_resident")
        return int(max(0, probe["run_peak"] - (probe["created_peak"] if base is None else base)))

    activations = [[side * side, run_bytes(probe)] for side, probe in zip(sides, probes, strict=True)]
    return {"weights_bytes": int(max(0, probes[0]["created_peak"] - import_peak)), "activations": activations}


def _check_sides(sides: Sequence[int]) -> tuple:
    sides = tuple(int(s) for s in sides)
    if (len(sides) < 2 or sides[0] <= 0 or any(b <= a for a, b in zip(sides, sides[1:], strict=False))
            or any(s % VAE_SCALE for s in sides)):
        raise ValueError(f"sides must be two or more increasing multiples of {VAE_SCALE}, not {list(sides)}")
    return sides


def measure_bundle_memory(bundle: Path, sides: Sequence[int] = DEFAULT_SIDES, quiet: bool = False) -> Dict:
    """The manifest's ``memory`` object for ``bundle`` (measured, not written)."""
    from .manifest import read_manifest

    bundle = Path(bundle)
    sides = _check_sides(sides)
    manifest = read_manifest(bundle)
    base = probe_import()
    components = {}
    peak_reset = True
    for name in MAIN_COMPONENTS:
        entry = manifest["components"][name]
        started = time.time()
        probes = [probe_component(bundle, entry, side) for side in sides]
        peak_reset = peak_reset and all(probe.get("created_resident") is not None for probe in probes)
        components[name] = component_figures(base["import_peak"], probes, sides)
        if not quiet:
            print(f"  {name}: measured in {time.time() - started:.1f} s", flush=True)
    rss = PEAK_RESET.format(rss=base["rss"]) if peak_reset else base["rss"]
    return {
        "measured_with": MEASURED_WITH.format(version=base["onnxruntime"], rss=rss),
        "output_sides_px": list(sides),
        "import_bytes": int(base["import_peak"]),
        "components": components,
    }


def record_bundle_memory(bundle: Path, sides: Sequence[int] = DEFAULT_SIDES, quiet: bool = False) -> Dict:
    """Measure ``bundle`` and write the figures into its manifest.json (``memory``). Returns them."""
    from .manifest import read_manifest, write_manifest

    memory = measure_bundle_memory(bundle, sides, quiet)
    manifest = read_manifest(bundle)  # read again: nothing else in it changes
    manifest["memory"] = memory
    write_manifest(bundle, manifest)
    return memory


def copy_bundle_memory(bundle: Path, source: Path, write: bool = True) -> Dict:
    """The ``memory`` object of ``source`` (one, or a manifest.json holding one), recorded in ``bundle``'s
    manifest (``write``) with ``measured_with`` saying where it came from. The manifest's schema is checked
    before anything is written (ValueError when the figures do not fit it)."""
    from .manifest import read_manifest, validate_manifest, write_manifest

    loaded = json.loads(Path(source).read_text(encoding="utf-8"))
    memory = loaded.get("memory", loaded) if isinstance(loaded, dict) else None
    if not isinstance(memory, dict) or set(memory.get("components", {})) != set(MAIN_COMPONENTS):
        raise ValueError(f"{source} holds no memory figures for {', '.join(MAIN_COMPONENTS)}")
    memory = dict(memory, measured_with=f"{memory.get('measured_with', '')}; copied from {Path(source).name}")
    manifest = read_manifest(bundle)
    manifest["memory"] = memory
    validate_manifest(manifest)
    if write:
        write_manifest(bundle, manifest)
    return memory


def memory_lines(memory: Dict) -> List[str]:
    """One line per component: weights MB, then the activations MB at each measured side."""
    return [f"{name}: weights {c['weights_bytes'] / 1e6:.1f} MB; activations "
            + ", ".join(f"{int(round(p ** 0.5))} px: {b / 1e6:.0f} MB" for p, b in c["activations"])
            for name, c in memory["components"].items()]


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _parse_sides(text: str) -> tuple:
    try:
        return _check_sides([int(s) for s in text.split(",") if s.strip()])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--probe"]:  # internal: one measurement in this fresh process
        spec = json.loads(argv[1]) if len(argv) > 1 else None
        print(json.dumps(_probe(spec)), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m export.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="bundle folder (its manifest.json is updated)")
    parser.add_argument("--sides", type=_parse_sides, default=DEFAULT_SIDES,
                        help="the output sides in pixels to measure at (default 256,512,768)")
    parser.add_argument("--dry-run", action="store_true", help="print the figures, leave manifest.json alone")
    parser.add_argument("--copy-from", metavar="FILE",
                        help="record figures measured elsewhere for the same graphs instead of measuring: a "
                             "`memory` object, or a manifest.json holding one (the GPU checks use the sd21 fp16 "
                             "figures measured on a 2-core machine rather than spend minutes of GPU time)")
    args = parser.parse_args(argv)

    from .manifest import MANIFEST_NAME

    bundle = Path(args.bundle)
    if not (bundle / MANIFEST_NAME).is_file():
        print(f"error: {bundle / MANIFEST_NAME} not found (not a bundle folder)", file=sys.stderr)
        return 2
    from .manifest import read_manifest

    if read_manifest(bundle).get("provenance", {}).get("fusions") == "cuda":
        print(f"error: {bundle} was exported with --fusions cuda: ONNX Runtime's CPU, which this measures with, "
              "cannot open its graphs (python -m export measures the same graphs unfused for it)", file=sys.stderr)
        return 2
    started = time.time()
    try:
        if args.copy_from:
            memory = copy_bundle_memory(bundle, Path(args.copy_from), write=not args.dry_run)
        elif args.dry_run:
            memory = measure_bundle_memory(bundle, args.sides, quiet=True)
        else:
            memory = record_bundle_memory(bundle, args.sides, quiet=True)
    except (RuntimeError, KeyError, ValueError, OSError, subprocess.TimeoutExpired) as err:
        lines = [line.strip() for line in f"error: {err}".splitlines() if line.strip()]
        print(" ".join(lines[:2]), file=sys.stderr)  # one line: the error and its first detail
        return 1
    for line in memory_lines(memory):
        print(f"  {line}", flush=True)
    done = f"copied from {args.copy_from}" if args.copy_from else f"measured in {time.time() - started:.1f} s"
    print(f"import {memory['import_bytes'] / 1e6:.1f} MB; {done}"
          + ("" if args.dry_run else f"; wrote {bundle / MANIFEST_NAME}"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
