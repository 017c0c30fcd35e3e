"""export/triton_server.py: a real tritonserver (the nvidia-pytriton wheel's, installed by `make setup`)
serving models/tiny's Python-variant repository, spoken to in plain KServe v2 JSON over HTTP.

The tests that need the server skip, saying why, when its files are not installed or it cannot start
here; the others always run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from export import triton_server as TS
from export.tests.conftest import REPO

TINY = REPO / "models" / "tiny"


def _post(url: str, body: dict, timeout: float = 30):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def _decoder_reference(latent: np.ndarray) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # as the server's model.py (TADSR_TRITON_THREADS=1)
    session = onnxruntime.InferenceSession(str(TINY / "vae_decoder" / "model.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    (image,) = session.run(["image"], {"latent": latent})
    return image


def test_vae_decoder_answers_like_onnxruntime(tiny_triton):
    manifest = json.loads((TINY / "manifest.json").read_text())
    port = manifest["components"]["vae_decoder"]["inputs"][0]
    assert port["name"] == "latent" and port["shape"][1] == 4
    latent = np.random.default_rng(7).standard_normal((2, 4, 5, 7)).astype(np.float32)  # batch 2, odd sides
    want = _decoder_reference(latent)

    status, reply = _post(f"{tiny_triton.url}/v2/models/vae_decoder/infer", {
        "inputs": [{"name": "latent", "datatype": "FP32", "shape": list(latent.shape),
                    "data": latent.ravel().tolist()}],
        "outputs": [{"name": "image"}],
    })
    assert status == 200, reply
    (out,) = reply["outputs"]
    assert out["name"] == "image" and out["datatype"] == "FP32"
    assert out["shape"] == list(want.shape) and want.shape[:2] == (2, 3)
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_models_are_described_and_a_missing_model_is_an_error(tiny_triton):
    with urllib.request.urlopen(f"{tiny_triton.url}/v2/models/vae_decoder", timeout=10) as reply:
        meta = json.loads(reply.read())
    assert meta["inputs"] == [{"name": "latent", "datatype": "FP32", "shape": [-1, 4, -1, -1]}]
    for name in ("vae_encoder", "unet", "vae_decoder", "vae_encoder_tiled", "vae_decoder_tiled"):
        assert _get_status(f"{tiny_triton.url}/v2/models/{name}/ready") == 200, name
    assert _get_status(f"{tiny_triton.url}/v2/models/no_such_model") in (400, 404)
    status, reply = _post(f"{tiny_triton.url}/v2/models/no_such_model/infer", {
        "inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 4, 1, 1], "data": [0, 0, 0, 0]}]})
    assert status in (400, 404) and "no_such_model" in reply.get("error", ""), reply


def test_a_killed_server_refuses_connections_and_leaves_no_process(tiny_triton_repo, start_triton, tmp_path):
    server = start_triton(tiny_triton_repo, models=["vae_decoder"], log_path=tmp_path / "log")
    assert _get_status(f"{server.url}/v2/health/ready") == 200
    assert _get_status(f"{server.url}/v2/models/unet/ready") != 200  # only vae_decoder was loaded
    pgid = server.process.pid
    regions = TS._shm_regions(TS._group_members(pgid))
    assert regions  # the stub's shared memory, which a killed server leaves behind
    server.kill()
    assert not server.running and TS._group_members(pgid) == []
    assert not [name for name in regions if Path("/dev/shm", name).exists()]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=5)


def test_a_model_that_fails_to_load_is_reported_with_the_log(tiny_triton_repo, tmp_path):
    files = _files_or_skip()
    repo = tmp_path / "repo"
    shutil.copytree(tiny_triton_repo / "vae_decoder", repo / "vae_decoder")
    (repo / "vae_decoder" / "1" / "model.py").write_text("raise ImportError('planted failure')\n")
    with pytest.raises(TS.TritonStartError) as caught:
        TS.TritonServer(repo, files=files, startup_timeout=30, log_path=tmp_path / "log").stop()
    if not caught.value.model_failed:
        pytest.skip(f"Triton Inference Server cannot start here: {caught.value}")
    assert "planted failure" in str(caught.value)


def test_a_busy_port_or_a_slow_start_is_a_start_error_with_the_log_kept(tiny_triton, tiny_triton_repo,
                                                                         monkeypatch, tmp_path):
    files = _files_or_skip()
    with pytest.raises(TS.TritonStartError, match="in use") as caught:  # the shared server's port
        TS.TritonServer(tiny_triton_repo, files=files, http_port=tiny_triton.http_port, models=["vae_decoder"])
    assert not caught.value.model_failed
    # Past that check, the shared server's answers on the port are not taken for ours (GET /v2 names
    # another server); ours fails to bind once its model is loaded, and exits.
    monkeypatch.setattr(TS, "port_is_free", lambda port: True)
    with pytest.raises(TS.TritonStartError, match="exited") as caught:
        TS.TritonServer(tiny_triton_repo, files=files, http_port=tiny_triton.http_port, models=["vae_decoder"],
                        log_path=tmp_path / "log")
    assert not caught.value.model_failed and "already in use" in caught.value.log_tail
    with pytest.raises(TS.TritonStartError, match="not ready after 0 s") as caught:
        TS.TritonServer(tiny_triton_repo, files=files, startup_timeout=0.01)
    log = Path(str(caught.value).split("(log: ")[1].split(")")[0])
    assert log.is_file() and "tritonserver" not in [p.name for p in log.parents]
    log.unlink()


def _files_or_skip() -> TS.ServerFiles:
    try:
        return TS.find_server()
    except TS.TritonNotInstalled as error:
        pytest.skip(f"no Triton Inference Server here: {error}")


def test_install_dir_is_the_one_setup_sh_writes(tmp_path):
    digest = hashlib.sha256((REPO / "export" / "triton-requirements.txt").read_bytes()).hexdigest()[:16]
    assert TS.install_dir(tmp_path) == tmp_path / f"triton-{digest}"
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert 'triton_dir=$CACHE/triton-$(sha256sum "$req" | cut -c1-16)' in setup
    assert "nvidia-pytriton==" in (REPO / "export" / "triton-requirements.txt").read_text()


def test_find_server_says_to_run_make_setup(tmp_path, monkeypatch):
    with pytest.raises(TS.TritonNotInstalled, match="make setup"):
        TS.find_server(tmp_path)
    monkeypatch.setenv(TS.ENV_DIR, str(tmp_path))
    with pytest.raises(TS.TritonNotInstalled, match="TADSR_TRITON_DIR"):
        TS.find_server()
    monkeypatch.delenv(TS.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(TS.TritonNotInstalled, match=str(tmp_path / "xdg" / "tadsr-edge" / "triton-")):
        TS.find_server()


def test_the_stub_python_imports_numpy_1_and_the_models_packages(tmp_path):
    files = _files_or_skip()
    out = tmp_path / "python"
    version = TS.make_stub_python(Path(sys.executable).parent, files.root, out, dict(os.environ))
    assert version == f"{sys.version_info.major}.{sys.version_info.minor}"
    probe = "import numpy, onnxruntime; print(numpy.__version__, onnxruntime.__file__)"
    numpy_version, ort_file = subprocess.run([str(out / "bin" / "python3"), "-c", probe], capture_output=True,
                                             text=True, check=True, env=TS._clean_env(os.environ)).stdout.split()
    assert numpy_version.startswith("1.")
    import onnxruntime

    if not (files.root / "onnxruntime").is_dir():  # (TADSR_TRITON_DIR may be a venv's site-packages)
        assert ort_file == onnxruntime.__file__  # the export venv's


def test_environment_puts_the_stub_python_first_and_the_libraries_on_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    server = TS.TritonServer.__new__(TS.TritonServer)
    server.files, server._workdir = TS.ServerFiles(tmp_path), tmp_path / "work"
    env = server._environment(threads=3)
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "work" / "python" / "bin")
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(tmp_path / "nvidia_pytriton.libs")
    assert "PYTHONPATH" not in env and env["TADSR_TRITON_THREADS"] == "3"
