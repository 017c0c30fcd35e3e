#!/usr/bin/env python3
"""One line about one result of scripts/gpu_quick_check.sh, whatever happened.

    python3 scripts/gpu_summary.py golden|torch|bench RESULT [ERRORS]

RESULT is what the step wrote on stdout (`tadsr-edge golden --json`,
`tadsr-edge bench --json`, scripts/torch_gpu_bench.py); ERRORS its stderr.
When RESULT holds the figures, prints them on one line. When it does not (the
step failed: no CUDA, an ONNX Runtime error, a timeout), prints "no result:"
and the last line of ERRORS that says something, which is the binary's own
one-line reason, instead of a Python traceback: the device tool returns only
the last 12,000 characters of a run's output, and every line counts there.
Always exits 0 (the step's own exit code is printed by the caller).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def json_lines(path: Path) -> list[dict]:
    """The lines of `path` that parse as JSON objects, in order (none when it cannot be read)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    reports = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                reports.append(json.loads(line))
            except ValueError:
                continue
    return reports


def last_json(path: Path):
    """The last line of `path` that parses as a JSON object, or None."""
    reports = json_lines(path)
    return reports[-1] if reports else None


def last_reason(path: Path | None) -> str:
    """The last non-empty line of an error file, shortened, or why there is none."""
    if path is None:
        return "(no error file)"
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError as err:
        return f"({path}: {err.strerror})"
    if not lines:
        return f"(nothing on stderr: {path.name} is empty; a timeout?)"
    reason = lines[-1]
    return reason if len(reason) <= 400 else reason[:397] + "..."


def golden(report: dict) -> str:
    scalars = {k: v for k, v in report.items() if not isinstance(v, (list, dict))}
    return " ".join(f"{k}={v}" for k, v in scalars.items())


def torch_bench(report: dict) -> str:
    parts = []
    for precision, entry in report.get("results", {}).items():
        if "error" in entry:
            parts.append(f"{precision}: {entry['error']}")
            continue
        stages = {k: round(v["median"], 1) for k, v in entry.get("stages_ms", {}).items()}
        parts.append(f"PyTorch {precision} {report.get('size')} median ms "
                     f"{entry['pipeline_ms']['median']:.1f} stages {stages}")
    return "; ".join(parts) or "no precision measured"


def ms(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def bench(report: dict) -> str:
    stages = {k: round(v["p50"], 1) for k, v in report.get("stages_ms", {}).items()}
    upscale = report.get("upscale_ms", {}).get("p50")
    # --tile auto's estimate beside what was taken: NVML's device memory on a GPU, peak RSS on the host
    return (f"{stages} e2e {report['end_to_end_ms']['p50']:.1f}"
            f" in memory {upscale if upscale is None else round(upscale, 1)}"
            f" static {report.get('static_shapes', {}).get('unet')}"
            f" cuda graph {report.get('cuda_graph', {}).get('unet')}"
            f" opened {ms(report.get('session_creation_ms'))} ms"
            f" MiB: estimate {mib(report.get('estimated_peak_bytes'))}"
            f" device {mib(report.get('device_memory_used_bytes'))}"
            f" rss {mib(report.get('peak_rss_bytes'))}")


KINDS = {"golden": golden, "torch": torch_bench, "bench": bench}


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[0] not in KINDS:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    kind, result = argv[0], Path(argv[1])
    errors = Path(argv[2]) if len(argv) == 3 else None
    report = last_json(result)
    if report is not None and "error" in report:
        print(f"no result: {report['error']}")
        return 0
    if report is None:
        print(f"no result: {last_reason(errors)}")
        return 0
    try:
        print(KINDS[kind](report))
    except (KeyError, TypeError, ValueError) as err:
        print(f"unexpected {kind} report ({type(err).__name__}: {err}); last error line: {last_reason(errors)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
