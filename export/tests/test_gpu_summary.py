"""scripts/gpu_summary.py, the one-line results of scripts/gpu_quick_check.sh: the figures of real
tadsr-edge golden and bench reports, and the binary's own error line (never a traceback) when a step
wrote no result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from export.tests.binary import BIN, needs_binary

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_summary.py"


def summary(kind: str, result: Path, errors: Path) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), kind, str(result), str(errors)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return lines[0]


def run_binary(tmp_path: Path, name: str, *args: str) -> tuple[int, Path, Path]:
    result, errors = tmp_path / f"{name}.json", tmp_path / f"{name}.err"
    with result.open("w") as out, errors.open("w") as err:
        code = subprocess.run([str(BIN), *args], stdout=out, stderr=err, cwd=REPO, timeout=300).returncode
    return code, result, errors


@needs_binary
def test_real_golden_and_bench_reports_become_one_line_of_figures(tmp_path):
    code, result, errors = run_binary(tmp_path, "golden", "golden", "--model", "models/tiny", "--provider", "cpu",
                                      "--json")
    assert code == 0
    worst = json.loads(result.read_text())["worst_max_abs_error"]
    line = summary("golden", result, errors)
    assert "passed=True" in line and f"worst_max_abs_error={worst}" in line

    code, result, errors = run_binary(tmp_path, "bench", "bench", "--model", "models/tiny", "--provider", "cpu",
                                      "--size", "64", "--runs", "1", "--warmup", "0", "--json")
    assert code == 0
    report = json.loads(result.read_text())
    line = summary("bench", result, errors)
    assert f"e2e {report['end_to_end_ms']['p50']:.1f}" in line
    assert "'unet':" in line and "cuda graph False" in line
    # how long the sessions took to open (the start-up a one-image run pays)
    assert f" opened {report['session_creation_ms']:.0f} ms " in line, line
    # on the CPU: no device memory, the estimate and the peak RSS in MiB
    estimate, rss = (round(report[k] / 2**20) for k in ("estimated_peak_bytes", "peak_rss_bytes"))
    assert line.endswith(f"MiB: estimate {estimate} device - rss {rss}"), line


@needs_binary
def test_a_step_without_a_result_says_the_binarys_own_error_line(tmp_path):
    code, result, errors = run_binary(tmp_path, "missing", "golden", "--model", str(tmp_path / "no-bundle"), "--json")
    assert code == 2
    reason = [line for line in errors.read_text().splitlines() if line.strip()][-1]
    assert reason.startswith("error: ")
    assert summary("golden", result, errors) == f"no result: {reason}"
    # the same for a bench that died, with a report file that is not there at all
    assert summary("bench", tmp_path / "never-written.json", errors) == f"no result: {reason}"


def test_a_traceback_a_timeout_and_an_error_report_each_give_one_line(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    traceback = tmp_path / "traceback.err"
    traceback.write_text("Traceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'results'\n\n")
    assert summary("torch", empty, traceback) == "no result: KeyError: 'results'"
    silent = tmp_path / "silent.err"
    silent.write_text("")
    assert "nothing on stderr" in summary("bench", empty, silent)
    # torch_gpu_bench.py's own refusal, and one precision failing while the other ran
    refused = tmp_path / "refused.json"
    refused.write_text(json.dumps({"error": "torch.cuda.is_available() is False", "torch": "2.11.0"}) + "\n")
    assert summary("torch", refused, silent) == "no result: torch.cuda.is_available() is False"
    mixed = tmp_path / "mixed.json"
    mixed.write_text("progress line\n" + json.dumps({"size": 512, "results": {
        "fp16": {"pipeline_ms": {"median": 49.4}, "stages_ms": {"unet": {"median": 15.25}}},
        "fp32": {"error": "OutOfMemoryError: CUDA out of memory"}}}) + "\n")
    assert summary("torch", mixed, silent) == (
        "PyTorch fp16 512 median ms 49.4 stages {'unet': 15.2}; fp32: OutOfMemoryError: CUDA out of memory")


TABLE = REPO / "scripts" / "gpu_results_table.py"
MEASUREMENTS = REPO / "docs" / "measurements"


def table(out: Path) -> list[str]:
    done = subprocess.run([sys.executable, str(TABLE), str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_h200_files_of_2026_11_27_become_readme_rows(tmp_path):
    """The bench lines and the PyTorch report of a real H200 run (older binary: no in-memory figure)."""
    (tmp_path / "bench.jsonl").write_text(
        (MEASUREMENTS / "h200-sd21-fp16-after-iobinding-2026-11-27.jsonl").read_text())
    check = json.loads((MEASUREMENTS / "gpu-check-h200-2026-11-27.json").read_text())
    (tmp_path / "torch_fp16_512.json").write_text(json.dumps(check["torch"]))
    (tmp_path / "golden_cuda.json").write_text(
        (MEASUREMENTS / "h200-golden-cuda-after-iobinding-2026-11-27.json").read_text())
    lines = table(tmp_path)
    assert lines[0].startswith("| output | bundle, settings |")
    assert "| 512x512 | sd21-fp16, untiled | 14.0 | 22.3 | 21.1 | 68.5 |  | 49.4 |  |  |" in lines
    assert any(line.startswith("| 2048x2048 | sd21-fp16, --tile 512 | 366.1 |") for line in lines)
    assert "bench-fused.jsonl: missing" in lines
    assert any(line.startswith("PyTorch eager fp16 512x512 on NVIDIA H200: median 49.4 ms") for line in lines)
    assert any(line.startswith("golden_cuda.json: models/tiny: worst 1.99") and line.endswith(": passed")
               for line in lines)


@needs_binary
def test_a_current_bench_report_gets_its_in_memory_ratio(tmp_path):
    code, result, _ = run_binary(tmp_path, "bench", "bench", "--model", "models/tiny", "--provider", "cpu",
                                 "--size", "64", "--tile", "64", "--tile-batch", "2", "--runs", "1", "--warmup", "0",
                                 "--json")
    assert code == 0
    report = json.loads(result.read_text())
    (tmp_path / "bench.jsonl").write_text(result.read_text())
    (tmp_path / "torch_fp16_512.json").write_text(json.dumps({"size": 64, "device_name": "cpu", "results": {
        "fp16": {"pipeline_ms": {"median": 10.0}}}}))
    in_memory = report["upscale_ms"]["p50"]
    row = next(line for line in table(tmp_path) if line.startswith("| 64x64 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "tiny, --tile 64, --tile-batch 2, providers cpu"
    # on the CPU no device memory is read; the estimate is there
    estimate = report["estimated_peak_bytes"] / 2**20
    assert cells[6:] == [f"{in_memory:.1f}", "10.0", f"{in_memory / 10.0:.2f}", f"- MiB ({estimate:.0f})"]
