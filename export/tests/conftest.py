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
