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
