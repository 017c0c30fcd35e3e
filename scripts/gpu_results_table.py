#!/usr/bin/env python3
"""README rows from what scripts/gpu_quick_check.sh left in its $OUT folder.

    python3 scripts/gpu_results_table.py OUT_DIR

Reads OUT_DIR/bench.jsonl and bench-fused.jsonl (one `tadsr-edge bench --json`
report per line), torch_fp16_512.json (scripts/torch_gpu_bench.py) and the
golden_cuda*.json reports, and prints:

- one Markdown row per bench report, in the order measured, with the columns
  of the README's GPU table: output, bundle and settings, encoder / UNet /
  decoder p50 ms, end to end p50 ms, in memory p50 ms (decoded photo to output
  image, no PNG: what PyTorch's timing covers), PyTorch eager fp16 median ms
  at the same size, the ratio in memory / PyTorch, and the device memory
  NVML saw the run take beside --tile auto's estimate (MiB);
- PyTorch's own stage medians;
- one line per golden report (worst error or lowest PSNR, pass or fail).

Reports that are missing or unreadable are said, not skipped silently. Every
figure is copied from the files; nothing is measured here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gpu_summary import json_lines, mib  # scripts/ is this script's folder, so first on sys.path

HEADER = ("| output | bundle, settings | encoder ms | UNet ms | decoder ms | end to end ms "
          "| in memory ms | PyTorch eager ms | in memory x PyTorch | GPU memory taken (--tile auto's estimate) |")
RULE = "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"


def p50(report: dict, *keys: str):
    value = report
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def ms(value) -> str:
    return "" if value is None else f"{value:.1f}"


def settings(report: dict) -> str:
    bundle = Path(str(report.get("model", "?"))).name
    parts = [bundle]
    tile = report.get("tile")
    parts.append("untiled" if tile == 0 else f"--tile {tile}")
    if (report.get("tile_batch") or 1) > 1:
        parts.append(f"--tile-batch {report['tile_batch']}")
    static = (report.get("static_shapes") or {}).get("unet")
    if static is not None:
        parts.append("static shapes" if static else "free shapes")
    if (report.get("cuda_graph") or {}).get("unet"):
        parts.append("CUDA graphs")
    for option in report.get("cuda_options") or []:
        parts.append(str(option))
    if report.get("tf32"):
        parts.append("TF32")
    search = report.get("cudnn_conv_search")
    if search and search != "heuristic":
        parts.append(f"cuDNN {search}")
    providers = sorted(set((report.get("provider") or {}).values()))
    if providers and providers != ["cuda"]:
        parts.append("providers " + "/".join(providers))
    return ", ".join(parts)


def memory(report: dict) -> str:
    """NVML's device memory taken by the run and --tile auto's estimate for it, in MiB (empty when neither)."""
    taken, estimate = report.get("device_memory_used_bytes"), report.get("estimated_peak_bytes")
    if taken is None and estimate is None:
        return ""
    return f"{mib(taken)} MiB ({mib(estimate)})"


def row(report: dict, torch_ms: dict) -> str:
    size = report.get("size")
    stages = report.get("stages_ms") or {}
    in_memory = p50(report, "upscale_ms", "p50")
    reference = torch_ms.get(size)
    ratio = f"{in_memory / reference:.2f}" if in_memory is not None and reference else ""
    cells = [f"{size}x{size}", settings(report),
             ms(p50(stages, "encoder", "p50")), ms(p50(stages, "unet", "p50")), ms(p50(stages, "decoder", "p50")),
             ms(p50(report, "end_to_end_ms", "p50")), ms(in_memory), ms(reference), ratio, memory(report)]
    return "| " + " | ".join(cells) + " |"


def torch_figures(path: Path, notes: list[str]) -> dict:
    """{size: fp16 median ms}, and PyTorch's stage medians added to notes."""
    if not path.is_file():
        notes.append(f"{path.name}: missing (no PyTorch figure)")
        return {}
    try:
        report = json.loads(path.read_text())
    except ValueError:
        notes.append(f"{path.name}: not JSON")
        return {}
    if "error" in report:
        notes.append(f"{path.name}: {report['error']}")
        return {}
    entry = (report.get("results") or {}).get("fp16") or {}
    if "error" in entry or "pipeline_ms" not in entry:
        notes.append(f"{path.name}: fp16 {entry.get('error', 'not measured')}")
        return {}
    stages = {k: round(v["median"], 1) for k, v in (entry.get("stages_ms") or {}).items()}
    notes.append(f"PyTorch eager fp16 {report.get('size')}x{report.get('size')} on {report.get('device_name')}: "
                 f"median {entry['pipeline_ms']['median']:.1f} ms; stages (synchronized) {stages or 'not measured'}")
    return {report.get("size"): entry["pipeline_ms"]["median"]}


def golden_line(path: Path) -> str:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"{path.name}: no report (see {path.with_suffix('.err').name})"
    figure = (f"lowest PSNR {report['lowest_psnr_db']:.1f} dB (bound {report['min_psnr_bound']})"
              if report.get("min_psnr_bound") is not None
              else f"worst {report.get('worst_max_abs_error')} (bound {report.get('max_abs_error_bound')})")
    return f"{path.name}: {report.get('model')}: {figure}: {'passed' if report.get('passed') else 'FAILED'}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    notes: list[str] = []
    torch_ms = torch_figures(out / "torch_fp16_512.json", notes)
    print(HEADER)
    print(RULE)
    for name in ("bench.jsonl", "bench-fused.jsonl"):
        path = out / name
        if not path.is_file():
            notes.append(f"{name}: missing")
            continue
        reports = json_lines(path)
        if not reports:
            notes.append(f"{name}: no report in it")
        for report in reports:
            print(row(report, torch_ms))
    print()
    for note in notes:
        print(note)
    for path in sorted(out.glob("golden_cuda*.json")):
        print(golden_line(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
