"""The hand-made graphs under tests/fixtures/graphs are what their script writes."""

from __future__ import annotations

import importlib.util


def test_committed_fixture_graphs_are_reproducible(repo, tmp_path):
    script = repo / "tests" / "fixtures" / "graphs" / "make_graphs.py"
    spec = importlib.util.spec_from_file_location("make_graphs", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.onnx"))
    assert made, "the script wrote no graphs"
    for rel in made:
        committed = script.parent / rel
        assert committed.is_file(), f"{committed} missing: run python {script.relative_to(repo)}"
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} differs from a fresh run"
