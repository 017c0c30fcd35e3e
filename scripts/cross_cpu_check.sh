#!/usr/bin/env bash
# How far fp32 results move between CPUs of our machine kind: the evidence
# behind the parity tests' bounds (tests/golden_parity.rs MAX_ABS_ERROR,
# export/tests/tolerances.py). Run by hand after `make setup`; not in `make test`.
#
# 1. The PyTorch reference (export/reference.py) with each of PyTorch's CPU
#    kernel sets (ATEN_CPU_CAPABILITY=default, avx2, avx512 where the CPU has
#    it) against the committed golden files: the largest difference per set.
# 2. tests/golden_parity.rs natively and, when qemu-x86_64 is installed
#    (Debian: qemu-user), under `qemu-x86_64 -cpu Haswell`: an AVX2-only CPU,
#    so ONNX Runtime's MLAS takes its AVX2 kernels (slow: minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$(scripts/setup.sh 2>/dev/null | tail -n 1)/bin/python}

echo "== PyTorch reference, per ATen kernel set, vs models/tiny/golden"
for capability in default avx2 avx512; do
  ATEN_CPU_CAPABILITY=$capability PYTHONPATH=. "$PY" - <<'PYTHON' 2>/dev/null
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from export.reference import super_resolve, upscaled_input
from export.synthetic import synthetic_models

torch.set_num_threads(2)
golden = Path("models/tiny/golden")
models = synthetic_models("tiny", 0)
worst = 0.0
for case in json.loads((golden / "cases.json").read_text()):
    upscaled = Image.open(golden / case["upscaled"]).convert("RGB")
    result = super_resolve(models, upscaled, case["timestep"], case["color_fix"])
    worst = max(worst, float(np.abs(result - np.load(golden / case["reference"])).max()))
large = json.loads((golden / "latent_tiling.json").read_text())
upscaled = upscaled_input(Image.open(golden / large["input"]), large["upscale"], large["process_size"])
tiled = super_resolve(models, upscaled, large["timestep"], large["color_fix"], latent_tiling=True)
large_error = float(np.abs(tiled[:: large["row_step"]] - np.load(golden / large["reference_rows"])).max())
print(f"  {torch.backends.cpu.get_cpu_capability():8s} small cases: max |error| {worst:.2e}; "
      f"896x832 latent tiling: {large_error:.2e}")
PYTHON
done

echo "== tadsr-edge (tests/golden_parity.rs)"
cargo test --release --locked --test golden_parity --no-run 2>/dev/null
binary=$(ls -t target/release/deps/golden_parity-* | grep -v '\.d$' | head -n 1)
summarize() {
  local log
  log=$(cat)
  small=$(grep -v '^large' <<<"$log" | grep -Eo 'max \|error\| [0-9.e-]+' | awk '{print $3}' | sort -g | tail -n 1)
  large=$(grep '^large' <<<"$log" | grep -Eo 'max \|error\| [0-9.e-]+' | awk '{print $3}' | sort -g | tail -n 1)
  echo "small cases: max |error| $small; 896x832 latent tiling: $large"
}
echo "  native ($(grep -q avx512f /proc/cpuinfo && echo AVX-512 || echo AVX2)): $("$binary" --nocapture 2>&1 | summarize)"
if command -v qemu-x86_64 >/dev/null; then
  echo "  qemu-x86_64 -cpu Haswell (AVX2 only): $(qemu-x86_64 -cpu Haswell "$binary" --nocapture 2>&1 | summarize)"
else
  echo "  (qemu-x86_64 not installed: apt-get install qemu-user for the AVX2-only run)"
fi
