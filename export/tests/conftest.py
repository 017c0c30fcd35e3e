"""Shared fixtures: the tiny synthetic model, a fresh tiny bundle, a synthetic checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY_SEED = 0


torch.set_num_threads(2)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_models():
    from export.synthetic import synthetic_models

    return synthetic_models("tiny", TINY_SEED)


@pytest.fixture(scope="session")
def fresh_tiny_bundle(tmp_path_factory, tiny_models):
    """The tiny bundle exported afresh (fp32), the way models/tiny was made."""
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("tiny_fp32")
    export_bundle(tiny_models, out, precision="fp32", name="tiny", verify=False, quiet=True,
                  measure_memory=False)
    return out


@pytest.fixture(scope="session")
def fresh_tiny_fp16_bundle(tmp_path_factory, tiny_models):
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("tiny_fp16")
    export_bundle(tiny_models, out, precision="fp16", name="tiny-fp16", verify=False, quiet=True,
                  measure_memory=False)
    return out


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory):
    from export.synthetic_checkpoint import write_synthetic_checkpoint

    out = tmp_path_factory.mktemp("checkpoint")
    return write_synthetic_checkpoint(out, config="tiny", seed=3, rank=4)


# --- a checkpoint with a text encoder (tiny random CLIP) and its bundle (--text-encoder) -----------------------
TEXT_PROMPT = "The cat and the dog, on grass"


@pytest.fixture(scope="session")
def text_checkpoint(tmp_path_factory):
    from export.synthetic_checkpoint import write_synthetic_checkpoint

    return write_synthetic_checkpoint(tmp_path_factory.mktemp("ck_text"), config="tiny", seed=5, rank=2,
                                      text_encoder=True)


@pytest.fixture(scope="session")
def text_models(text_checkpoint):
    from export.checkpoint import load_checkpoint

    return load_checkpoint(text_checkpoint, prompt=TEXT_PROMPT, want_text_encoder=True)


@pytest.fixture(scope="session")
def text_bundle(text_models, tmp_path_factory):
    from export.bundle import export_bundle

    out = tmp_path_factory.mktemp("bundle_text")
    export_bundle(text_models, out, precision="fp32", text_encoder=True, verify=False, quiet=True,
                  measure_memory=False)
    return out


# --- a real Triton Inference Server (export/triton_server.py) -------------------------------------------
def start_triton_or_skip(repo: Path, **kwargs):
    """A started ``TritonServer`` for ``repo``; skips the test, saying why, when no server can run here
    (files not installed by ``make setup``, or the server itself does not start). A model of the repository
    that fails to load is a failure, not a skip. The caller stops the server (``with`` or ``stop()``)."""
    from export.triton_server import TritonNotInstalled, TritonServer, TritonUnavailable

    try:
        return TritonServer(repo, **kwargs)
    except TritonNotInstalled as error:
        pytest.skip(f"no Triton Inference Server here: {error}")
    except TritonUnavailable as error:
        if getattr(error, "model_failed", False):
            pytest.fail(f"tritonserver started but a model of {repo} failed to load: {error}")
        pytest.skip(f"Triton Inference Server cannot start here: {error}")


@pytest.fixture(scope="session")
def tiny_triton_repo(tmp_path_factory) -> Path:
    """models/tiny's Python-variant Triton model repository (export.triton --variant python)."""
    from export.triton import write_repository

    out = tmp_path_factory.mktemp("tiny_triton") / "repo"
    write_repository(REPO / "models" / "tiny", out, variant="python")
    return out


@pytest.fixture(scope="session")
def tiny_triton(tiny_triton_repo):
    """A tritonserver serving ``tiny_triton_repo`` on 127.0.0.1 for the whole session: ``.url``
    ("http://127.0.0.1:PORT"), ``.process``, ``.log_path`` (kept beside the repository). Shared, so do
    not kill it; start your own with ``start_triton_or_skip`` for tests of a server that dies."""
    server = start_triton_or_skip(tiny_triton_repo, log_path=tiny_triton_repo.parent / "tritonserver.log")
    with server:
        yield server


@pytest.fixture
def start_triton():
    """``start_triton(repo, **TritonServer_kwargs)`` -> a started server of the test's own (skips as
    ``start_triton_or_skip`` does); every server it started is stopped after the test."""
    servers = []

    def start(repo: Path, **kwargs):
        server = start_triton_or_skip(repo, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
