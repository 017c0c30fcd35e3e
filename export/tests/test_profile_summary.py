"""scripts/ort_profile_summary.py on a real ONNX Runtime profile (tadsr-edge bench on models/tiny with
TADSR_EDGE_ORT_PROFILE) and on a GPU-run layout, where nodes left on the CPU must be named."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from export.tests.binary import BIN, needs_binary

REPO = Path(__file__).resolve().parents[2]

spec = importlib.util.spec_from_file_location("ort_profile_summary", REPO / "scripts" / "ort_profile_summary.py")
summary_module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = summary_module  # dataclasses look their module up there
spec.loader.exec_module(summary_module)


def node(name: str, ts: int, dur: int, provider: str, op: str) -> dict:
    return {
        "cat": "Node",
        "name": f"{name}_kernel_time",
        "ts": ts,
        "dur": dur,
        "args": {"provider": provider, "op_name": op},
    }


def run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def test_a_gpu_run_names_its_cpu_nodes_and_the_time_outside_nodes():
    events = [
        run(0, 1000),
        node("/first/Conv", 10, 900, "CUDAExecutionProvider", "Conv"),
        run(2000, 1000),
        node("/first/Conv", 2010, 300, "CUDAExecutionProvider", "Conv"),
        node("/first/Gather", 2400, 100, "CPUExecutionProvider", "Gather"),
        node("/second/Conv", 2600, 200, "CUDAExecutionProvider", "Conv"),
    ]
    last = summary_module.summarize(events, "unet-model")
    assert (last.runs, last.run_index, last.run_ms) == (2, 1, 1.0)
    assert last.nodes_by_provider == {"CUDAExecutionProvider": 2, "CPUExecutionProvider": 1}
    assert last.node_ms_by_provider["CUDAExecutionProvider"] == pytest.approx(0.5)
    assert last.outside_nodes_ms == pytest.approx(0.4)
    assert last.top_ops[0] == ("Conv", "CUDAExecutionProvider", pytest.approx(0.5), 2)
    assert last.cpu_nodes == ["/first/Gather"]
    assert (last.loading_ms, last.initialization_ms) == (None, None)
    assert "opened" not in summary_module.format_summary(last)
    opened = [
        {"cat": "Session", "name": "model_loading_uri", "ts": 0, "dur": 120_000},
        {"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 2_500_000},
    ]
    with_start = summary_module.summarize(opened + events, "unet-model")
    assert (with_start.loading_ms, with_start.initialization_ms) == (120.0, 2500.0)
    assert "; opened: loading 120 ms, initialization 2500 ms" in summary_module.format_summary(with_start)
    first = summary_module.summarize(events, "unet-model", run_index=0)
    assert first.nodes_by_provider == {"CUDAExecutionProvider": 1} and first.cpu_nodes == []
    assert summary_module.summarize([node("/x", 0, 1, "CPUExecutionProvider", "Add")], "g") is None
    assert summary_module.graph_name(Path("unet-model_2026-11-27_14-22-12_205.json")) == "unet-model"


@needs_binary
def test_a_real_cpu_profile_of_the_three_graphs(tmp_path: Path, capsys):
    env = dict(os.environ, TADSR_EDGE_ORT_PROFILE=str(tmp_path))
    bench = subprocess.run(
        [
            str(BIN),
            "bench",
            "--model",
            str(REPO / "models" / "tiny"),
            "--size",
            "64",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bench.returncode == 0, bench.stderr
    assert summary_module.main([str(tmp_path), "--top", "3"]) == 0
    text = capsys.readouterr().out
    for graph in ("vae_encoder-model", "unet-model", "vae_decoder-model"):
        assert f"== {graph}: run 3 of 3:" in text, text
    assert "on the CPU in a GPU run" not in text
    for path in sorted(tmp_path.glob("*.json")):
        summary = summary_module.summarize(json.loads(path.read_text()), summary_module.graph_name(path))
        assert set(summary.nodes_by_provider) == {"CPUExecutionProvider"}
        # the nodes' host time is part of the run's, never more
        assert 0 < sum(summary.node_ms_by_provider.values()) <= summary.run_ms
        assert summary.outside_nodes_ms >= 0
        # ONNX Runtime records opening the session: reading the graph, then initializing it
        assert summary.loading_ms is not None and summary.loading_ms > 0
        assert summary.initialization_ms is not None and summary.initialization_ms > 0
    assert "; opened: loading " in text


def test_no_profile_is_an_error(tmp_path: Path, capsys):
    assert summary_module.main([str(tmp_path)]) == 2
    assert "no profile" in capsys.readouterr().err
