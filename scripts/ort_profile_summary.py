"""Summarize ONNX Runtime profiles (`TADSR_EDGE_ORT_PROFILE=DIR tadsr-edge bench ...`): per graph,
one warm run's wall time (`model_run`), how long opening the session took (`model_loading_*`: reading
the graph; `session_initialization`: optimizing it, placing it on the provider, uploading the
weights), the host time of its nodes by execution provider, the time
the run spends outside any node, the op types that cost most, and the nodes a GPU run leaves on the
CPU (each one a device round trip between kernels, and what keeps ONNX Runtime from capturing the
graph as a CUDA graph).

On the CUDA provider a node's time is the host time of launching its kernels (they run
asynchronously), so a large total there with few nodes on the CPU points at launch overhead, which
pinned shapes (fewer nodes) and CUDA graphs (no launches) remove.

    python scripts/ort_profile_summary.py DIR [--top 12] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunSummary:
    graph: str
    runs: int
    run_index: int
    run_ms: float
    node_ms_by_provider: dict[str, float]
    nodes_by_provider: dict[str, int]
    outside_nodes_ms: float
    top_ops: list[tuple[str, str, float, int]]
    cpu_nodes: list[str] = field(default_factory=list)
    # opening the session: reading the graph, then initializing it (None: not in the profile)
    loading_ms: float | None = None
    initialization_ms: float | None = None


# ONNX Runtime's names for reading a graph, by where it came from
LOADING_EVENTS = ("model_loading_uri", "model_loading_array", "model_loading_from_saved_proto")


def session_event_ms(events: list[dict], names: tuple[str, ...]) -> float | None:
    """The summed duration (ms) of the session events named `names`, or None when there is none."""
    durations = [e["dur"] / 1e3 for e in events if e.get("cat") == "Session" and e.get("name") in names]
    return sum(durations) if durations else None


def graph_name(path: Path) -> str:
    """`unet-model_2026-11-27_14-22-12_205.json` -> `unet-model` (ONNX Runtime appends the date)."""
    stem = path.stem
    parts = stem.rsplit("_", 3)
    return parts[0] if len(parts) == 4 else stem


def summarize(events: list[dict], graph: str, run_index: int = -1, top: int = 12) -> RunSummary | None:
    """The summary of run `run_index` (default the last: warm) of one profile's events, or None
    when the profile holds no run."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    if not runs:
        return None
    run = runs[run_index]
    start, end = run["ts"], run["ts"] + run["dur"]
    nodes = [
        e for e in events if e.get("cat") == "Node" and start <= e["ts"] <= end and e["name"].endswith("_kernel_time")
    ]
    by_provider: dict[str, float] = collections.defaultdict(float)
    count_by_provider: collections.Counter = collections.Counter()
    by_op: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    cpu_nodes = []
    for node in nodes:
        args = node.get("args", {})
        provider = args.get("provider", "?")
        op = args.get("op_name", "?")
        by_provider[provider] += node["dur"] / 1e3
        count_by_provider[provider] += 1
        by_op[(op, provider)].append(node["dur"] / 1e3)
        if provider == "CPUExecutionProvider":
            cpu_nodes.append(node["name"].removesuffix("_kernel_time"))
    gpu_run = any(p != "CPUExecutionProvider" for p in count_by_provider)
    ranked = sorted(by_op.items(), key=lambda kv: -sum(kv[1]))[:top]
    return RunSummary(
        graph=graph,
        runs=len(runs),
        run_index=runs.index(run),
        run_ms=run["dur"] / 1e3,
        node_ms_by_provider=dict(by_provider),
        nodes_by_provider=dict(count_by_provider),
        outside_nodes_ms=run["dur"] / 1e3 - sum(by_provider.values()),
        top_ops=[(op, provider, sum(times), len(times)) for (op, provider), times in ranked],
        cpu_nodes=cpu_nodes if gpu_run else [],
        loading_ms=session_event_ms(events, LOADING_EVENTS),
        initialization_ms=session_event_ms(events, ("session_initialization",)),
    )


def profile_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return files


def format_summary(summary: RunSummary) -> str:
    providers = ", ".join(
        f"{p} {summary.node_ms_by_provider[p]:.1f} ms in {summary.nodes_by_provider[p]} nodes"
        for p in sorted(summary.node_ms_by_provider)
    )
    opened = ""
    if summary.loading_ms is not None or summary.initialization_ms is not None:
        parts = [
            f"{what} {ms:.0f} ms"
            for what, ms in (("loading", summary.loading_ms), ("initialization", summary.initialization_ms))
            if ms is not None
        ]
        opened = "; opened: " + ", ".join(parts)
    lines = [
        f"== {summary.graph}: run {summary.run_index + 1} of {summary.runs}: {summary.run_ms:.1f} ms; "
        f"nodes: {providers}; outside nodes {summary.outside_nodes_ms:.1f} ms{opened}"
    ]
    lines += [f"   {op:<24} {provider:<28} {ms:8.2f} ms  x{count}" for op, provider, ms, count in summary.top_ops]
    if summary.cpu_nodes:
        lines.append(
            f"   {len(summary.cpu_nodes)} node(s) on the CPU in a GPU run, e.g. " + ", ".join(summary.cpu_nodes[:5])
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="profile files or folders of them")
    parser.add_argument("--top", type=int, default=12, help="op types listed per graph")
    parser.add_argument("--json", action="store_true", help="one JSON object per graph instead of text")
    args = parser.parse_args(argv)
    files = profile_files(args.paths)
    if not files:
        print("error: no profile (*.json) found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 2
    for path in files:
        try:
            events = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            print(f"error: {path}: not a readable ONNX Runtime profile ({error})", file=sys.stderr)
            return 2
        summary = summarize(events, graph_name(path), top=args.top)
        if summary is None:
            print(f"== {graph_name(path)}: no run in {path.name}")
            continue
        print(json.dumps(summary.__dict__) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
