"""The tadsr-edge binary the tests run: the one `make test` builds.

`make test` passes its path in TADSR_EDGE_BIN (under $CARGO_TARGET_DIR when that is set); then a missing binary
is a failure. Run by hand without it, the tests look in target/release and skip when nothing is built there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ["TADSR_EDGE_BIN"]) if os.environ.get("TADSR_EDGE_BIN") else REPO / "target/release/tadsr-edge"

# skip only where nobody said which binary to test
needs_binary = pytest.mark.skipif(not BIN.is_file() and not os.environ.get("TADSR_EDGE_BIN"),
                                  reason=f"{BIN} is not built (make test builds it first)")
