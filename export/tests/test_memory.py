"""export.memory: the graphs' measured memory in the manifest (``memory``, read by the runtime's --tile auto)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

import export.memory
from export.manifest import MANIFEST_NAME, read_manifest, schema_errors
from export.memory import MAIN_COMPONENTS, _check_sides, component_figures, concrete_shape, main

# Small sides keep the measurement quick (the default, 256,512,768, takes ~11 s on tiny).
SIDES = (256, 384)


@pytest.fixture(scope="module")
def measured_bundle(tiny_models, tmp_path_factory):
    """A tiny bundle exported with the memory measurement on (export_bundle's default), at SIDES."""
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("tiny_memory")
    record = export.memory.record_bundle_memory
    with pytest.MonkeyPatch.context() as patch:  # export_bundle imports it when it measures
        patch.setattr(export.memory, "record_bundle_memory",
                      lambda bundle, quiet=False: record(bundle, SIDES, quiet))
        manifest = export_bundle(tiny_models, out, precision="fp32", name="tiny", verify=False, quiet=True,
                                 tiled_vae=False)
    return out, manifest


def test_export_records_memory(measured_bundle):
    bundle, returned = measured_bundle
    manifest = read_manifest(bundle)
    assert manifest == returned
    assert schema_errors(manifest) == []
    memory = manifest["memory"]
    assert memory["measured_with"].startswith("onnxruntime ")
    if sys.platform.startswith("linux"):  # the peak is reset after creating each session
        assert "VmHWM reset once the session is created" in memory["measured_with"]
    assert memory["output_sides_px"] == list(SIDES)
    # numpy + onnxruntime: ~49 MB; not the ~1 GB of this pytest process (ru_maxrss would inherit it)
    assert 10_000_000 < memory["import_bytes"] < 400_000_000
    assert set(memory["components"]) == set(MAIN_COMPONENTS)
    for figures in memory["components"].values():
        assert set(figures) == {"weights_bytes", "activations"}
        assert isinstance(figures["weights_bytes"], int) and figures["weights_bytes"] >= 0
        points = figures["activations"]
        assert isinstance(points, list)
        assert all(isinstance(point, list) and len(point) == 2 for point in points)
        assert all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for point in points for v in point)
        assert [pixels for pixels, _ in points] == [side * side for side in memory["output_sides_px"]]
    # Far from the noise (ORT 1.32, x86-64): the tiny UNet session holds ~40 MB, the decoder's
    # activations grow from ~43 MB at 256 px to ~80 MB at 384 px (~730 MB at 768 px).
    assert memory["components"]["unet"]["weights_bytes"] > 1_000_000
    decoder = memory["components"]["vae_decoder"]["activations"]
    assert decoder[-1][1] > decoder[0][1]


def test_cli_dry_run_leaves_the_manifest_alone(measured_bundle, capsys):
    bundle, _ = measured_bundle
    before = (bundle / MANIFEST_NAME).read_bytes()
    assert main(["--bundle", str(bundle), "--sides", ",".join(map(str, SIDES)), "--dry-run"]) == 0
    assert (bundle / MANIFEST_NAME).read_bytes() == before
    out = capsys.readouterr().out
    for name in MAIN_COMPONENTS:
        line = next(line for line in out.splitlines() if f"{name}: weights " in line)
        assert all(f"{side} px: " in line for side in SIDES), line
    assert "measured in" in out and "wrote" not in out


def test_cli_copies_figures_measured_elsewhere_and_refuses_what_is_not_figures(repo, tmp_path, capsys):
    import json
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(repo / "models" / "tiny", bundle)
    manifest = read_manifest(bundle)
    del manifest["memory"]
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    source = repo / "docs" / "measurements" / "sd21-fp16-memory-2026-11-28.json"
    assert main(["--bundle", str(bundle), "--copy-from", str(source)]) == 0
    copied = read_manifest(bundle)["memory"]
    original = json.loads(source.read_text())
    assert copied["components"] == original["components"]
    assert copied["measured_with"] == original["measured_with"] + f"; copied from {source.name}"
    assert "copied from" in capsys.readouterr().out
    # a manifest holding figures is a source too
    again = tmp_path / "again"
    shutil.copytree(bundle, again)
    assert main(["--bundle", str(again), "--copy-from", str(repo / "models" / "tiny" / MANIFEST_NAME)]) == 0
    assert read_manifest(again)["memory"]["components"] == read_manifest(repo / "models" / "tiny")["memory"][
        "components"]

    before = (bundle / MANIFEST_NAME).read_bytes()
    negative = copy.deepcopy(original)
    negative["components"]["unet"]["weights_bytes"] = -1
    bad_sources = {"not.json": "{", "list.json": "[1, 2]", "no-unet.json": json.dumps(
        {"components": {"vae_encoder": {}, "vae_decoder": {}}}), "negative.json": json.dumps(negative)}
    for name, text in bad_sources.items():
        (tmp_path / name).write_text(text)
        assert main(["--bundle", str(bundle), "--copy-from", str(tmp_path / name)]) == 1, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (name, err)
    assert main(["--bundle", str(bundle), "--copy-from", str(tmp_path / "missing.json")]) == 1
    assert (bundle / MANIFEST_NAME).read_bytes() == before


def test_cli_without_a_manifest_fails(repo, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "export.memory", "--bundle", str(tmp_path)],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and MANIFEST_NAME in proc.stderr
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_cli_refuses_bad_sides(tmp_path):
    for sides in ("256", "512,256", "256,500", "256,256", "0,256", ""):
        with pytest.raises(SystemExit):
            main(["--bundle", str(tmp_path), "--sides", sides])


def test_sides():
    assert _check_sides([256, 384, 512]) == (256, 384, 512)
    assert _check_sides(("256", "512")) == (256, 512)
    for bad in ([256], [512, 256], [256, 500], [256, 256], [0, 256], [-8, 256], []):
        with pytest.raises(ValueError):
            _check_sides(bad)


def test_figures_from_the_peaks():
    mb = 1_000_000
    probes = [{"created_peak": 70 * mb, "run_peak": 100 * mb},
              {"created_peak": 71 * mb, "run_peak": 171 * mb},
              {"created_peak": 70 * mb, "run_peak": 470 * mb}]
    got = component_figures(50 * mb, probes, (256, 512, 768))
    assert got == {"weights_bytes": 20 * mb,
                   "activations": [[256 * 256, 30 * mb], [512 * 512, 100 * mb], [768 * 768, 400 * mb]]}
    assert all(isinstance(v, int) for point in got["activations"] for v in point)
    # clamped: a run peak below the session's (cannot happen, but never negative), a session
    # smaller than the import baseline
    probes = [{"created_peak": 70 * mb, "run_peak": 60 * mb}, {"created_peak": 70 * mb, "run_peak": 130 * mb}]
    got = component_figures(80 * mb, probes, (256, 512))
    assert got == {"weights_bytes": 0, "activations": [[256 * 256, 0], [512 * 512, 60 * mb]]}
    with pytest.raises(ValueError):  # one probe per side
        component_figures(50 * mb, probes, (256, 512, 768))


def test_activations_count_from_where_the_session_settled():
    # sd21 fp16 UNet on the CPU (measured): creation peaks at 6.1 GB holding its float16 weights and
    # their float32 casts, settles at 4.0 GB; the run at 512 px peaks at 4.6 GB. Against the creation
    # peak the run would add nothing.
    mb = 1_000_000
    probes = [{"created_peak": 6100 * mb, "created_resident": 3950 * mb, "run_peak": 3958 * mb},
              {"created_peak": 6120 * mb, "created_resident": 3970 * mb, "run_peak": 4616 * mb}]
    got = component_figures(45 * mb, probes, (256, 512))
    assert got == {"weights_bytes": 6055 * mb, "activations": [[256 * 256, 8 * mb], [512 * 512, 646 * mb]]}
    # where the peak could not be reset (None): against the creation peak, as before
    probes[1]["created_resident"] = None
    assert component_figures(45 * mb, probes, (256, 512))["activations"][1] == [512 * 512, 0]


def test_concrete_shapes():
    assert concrete_shape(["batch", 3, "height", "width"], 256) == [1, 3, 256, 256]
    assert concrete_shape(["batch", 16, "latent_height", "latent_width"], 512) == [1, 16, 64, 64]
    assert concrete_shape(["batch", 77, 1024], 512) == [1, 77, 1024]
    with pytest.raises(ValueError):
        concrete_shape(["batch", "frames"], 256)


MEMORY = {
    "measured_with": "onnxruntime 1.32.0, CPUExecutionProvider",
    "output_sides_px": [256, 512, 768],
    "import_bytes": 49_000_000,
    "components": {name: {"weights_bytes": 1,
                          "activations": [[65536, 27_000_000], [262144, 221_000_000], [589824, 888_000_000]]}
                   for name in MAIN_COMPONENTS},
}


def _unet(m):
    return m["components"]["unet"]


@pytest.mark.parametrize("edit", [
    lambda m: _unet(m).update(weights_bytes=-1),
    lambda m: _unet(m).update(weights_bytes=1.5),
    lambda m: _unet(m)["activations"][1].__setitem__(1, -1),
    lambda m: _unet(m)["activations"][1].__setitem__(1, 221_000_000.5),
    lambda m: _unet(m)["activations"][0].__setitem__(0, -65536),
    lambda m: _unet(m)["activations"][1].append(1),
    lambda m: _unet(m)["activations"][1].pop(),
    lambda m: _unet(m).update(activations=[[65536, 27_000_000]]),
    lambda m: _unet(m).update(activations={"65536": 27_000_000, "262144": 221_000_000}),
    lambda m: _unet(m).pop("weights_bytes"),
    lambda m: _unet(m).pop("activations"),
    lambda m: _unet(m).update(bytes_per_pixel=563.5),
    lambda m: m.update(output_sides_px=[256]),
    lambda m: m.update(output_sides_px=[256, 512.5]),
    lambda m: m.update(import_bytes=-5),
    lambda m: m.pop("measured_with"),
    lambda m: m.update(extra=1),
], ids=["negative-weights", "float-weights", "negative-bytes", "float-bytes", "negative-pixels",
        "three-numbers", "one-number", "one-point", "not-a-list", "missing-weights", "missing-activations",
        "extra-field", "one-side", "float-side", "negative-import", "no-measured-with", "extra-key"])
def test_schema_guards_the_memory_object(repo, edit):
    manifest = read_manifest(repo / "models" / "tiny")
    manifest["memory"] = copy.deepcopy(MEMORY)
    assert schema_errors(manifest) == []
    edit(manifest["memory"])
    assert schema_errors(manifest) != []
    del manifest["memory"]
    assert schema_errors(manifest) == []  # optional


def test_two_points_and_many_sides_are_valid(repo):
    manifest = read_manifest(repo / "models" / "tiny")
    assert schema_errors(manifest) == []  # as committed (export.memory's default sides)
    manifest["memory"] = copy.deepcopy(MEMORY)
    manifest["memory"]["output_sides_px"] = [256, 384]
    for figures in manifest["memory"]["components"].values():
        figures["activations"] = [[65536, 0], [147456, 1]]
    assert schema_errors(manifest) == []
    manifest["memory"]["output_sides_px"] = [256, 384, 512, 768, 1024]
    assert schema_errors(manifest) == []
