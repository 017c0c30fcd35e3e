#!/usr/bin/env bash
# Sets up everything tadsr-edge needs, idempotently, in a cache outside the
# clone (${XDG_CACHE_HOME:-~/.cache}/tadsr-edge):
#   - ONNX Runtime's shared library from the pinned PyPI wheel
#     (onnxruntime, or onnxruntime-gpu with GPU=1), keyed by version;
#   - with GPU=1, the CUDA 13 / cuDNN 9 / TensorRT 10 libraries from NVIDIA's
#     PyPI wheels (scripts/gpu-requirements.txt), keyed by that file's hash;
#     their folders are recorded in gpu-libs.path, where the binary looks;
#   - the export package's Python venv, keyed by export/requirements.txt's hash
#     (skipped with RUNTIME_ONLY=1: the demo needs no torch);
#   - a real Triton Inference Server (CPU, Python backend) for the tests of
#     `tadsr-edge run --server`: the files of the wheel pinned in
#     export/triton-requirements.txt, keyed by that file's hash (skipped with
#     RUNTIME_ONLY=1; where it cannot be installed the tests that need it skip);
#   - the real CLIP BPE vocabulary for the tokenizer tests (one file of a
#     hash-pinned PyPI wheel, export/clip-vocab-requirements.txt);
#   - rustfmt and clippy when rustup can add them.
# A second run finds everything in place and installs nothing.
# Prints the venv's path on the last line of stdout (for the Makefile).
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

ORT_CPU_VERSION=1.32.0
ORT_GPU_VERSION=1.31.1
GPU=${GPU:-0}
RUNTIME_ONLY=${RUNTIME_ONLY:-0}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tadsr-edge
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
mkdir -p "$CACHE"

log() { echo "setup: $*" >&2; }

# --- ONNX Runtime shared library -------------------------------------------
if [ "$GPU" = 1 ]; then
  ort_pkg=onnxruntime-gpu; ort_ver=$ORT_GPU_VERSION
else
  ort_pkg=onnxruntime; ort_ver=$ORT_CPU_VERSION
fi
ort_dir=$CACHE/$ort_pkg-$ort_ver
ort_lib=$ort_dir/onnxruntime/capi/libonnxruntime.so.$ort_ver
if [ ! -f "$ort_dir/.complete" ] || [ ! -f "$ort_lib" ]; then
  log "installing $ort_pkg==$ort_ver into $ort_dir"
  rm -rf "$ort_dir"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$ort_dir" "$ort_pkg==$ort_ver" >&2
  [ -f "$ort_lib" ] || { log "the $ort_pkg wheel has no $ort_lib"; exit 1; }
  touch "$ort_dir/.complete"
fi
echo "$ort_lib" > "$CACHE/onnxruntime.path"
log "ONNX Runtime: $ort_lib"

# --- GPU libraries (GPU=1): CUDA 13, cuDNN 9, TensorRT 10 from PyPI -----------
if [ "$GPU" = 1 ]; then
  gpu_req=$ROOT/scripts/gpu-requirements.txt
  gpu_dir=$CACHE/gpu-libs-$(sha256sum "$gpu_req" | cut -c1-16)
  if [ ! -f "$gpu_dir/.complete" ]; then
    log "installing the CUDA 13, cuDNN 9 and TensorRT 10 libraries into $gpu_dir (CUDA + cuDNN: 1.1 GB download, once)"
    rm -rf "$gpu_dir"
    # CUDA and cuDNN first: the CUDA provider needs only these.
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
      --target "$gpu_dir" -r <(grep -v '^tensorrt' "$gpu_req") >&2
    # TensorRT 10's libs wheel on PyPI is a stub that fetches the real wheel
    # from pypi.nvidia.com while installing: where that fails, CUDA still works.
    if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
      --target "$gpu_dir" -r <(grep '^tensorrt' "$gpu_req") > "$CACHE/tensorrt-install.log" 2>&1; then
      log "warning: the TensorRT 10 libraries could not be installed (they come from pypi.nvidia.com;"
      log "         pip's output: $CACHE/tensorrt-install.log); the cuda provider works, tensorrt will"
      log "         say libnvinfer.so.10 is missing"
    fi
    touch "$gpu_dir/.complete"
  fi
  # One library folder per line: nvidia/<package>/lib and tensorrt_libs.
  find "$gpu_dir/nvidia" -mindepth 2 -maxdepth 2 -type d -name lib | sort > "$CACHE/gpu-libs.path"
  [ -d "$gpu_dir/tensorrt_libs" ] && echo "$gpu_dir/tensorrt_libs" >> "$CACHE/gpu-libs.path"
  log "GPU libraries: $(tr '\n' ' ' < "$CACHE/gpu-libs.path")"
fi

# --- Python venv for export/ -------------------------------------------------
setup_export_venv() {
  local req=$ROOT/export/requirements.txt req_hash
  req_hash=$(sha256sum "$req" | cut -c1-16)
  venv=$CACHE/venv-$req_hash
  if [ ! -f "$venv/.complete" ]; then
    log "creating the export venv $venv (torch brings ~3 GB once per machine)"
    rm -rf "$venv"
    if ! "$PYTHON" -m venv "$venv" >/dev/null 2>&1; then
      # Debian without python3-venv: fall back to virtualenv from PyPI.
      rm -rf "$venv"
      "$PYTHON" -m pip install --quiet --disable-pip-version-check --user virtualenv >&2 \
        || "$PYTHON" -m pip install --quiet --disable-pip-version-check --user --break-system-packages virtualenv >&2
      "$PYTHON" -m virtualenv --quiet "$venv" >&2
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
    touch "$venv/.complete"
  fi
  log "Python venv: $venv"
}

# --- Triton Inference Server for the tests (export/triton_server.py) ----------
# Only the wheel's files (--no-deps): tritonserver, its libraries, the Python
# backend and its per-Python stubs. Started by export/triton_server.py, which
# finds this folder by the same hash. A failed install (no network, another
# platform) is not fatal: the tests that need a server skip, saying why.
setup_triton() {
  local req=$ROOT/export/triton-requirements.txt triton_dir
  triton_dir=$CACHE/triton-$(sha256sum "$req" | cut -c1-16)
  if [ ! -f "$triton_dir/.complete" ]; then
    log "installing Triton Inference Server (the nvidia-pytriton wheel's files and numpy 1.26: 73 MB download, 225 MB on disk, once) into $triton_dir"
    rm -rf "$triton_dir"
    if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$triton_dir" -r "$req" >&2 \
      && [ -x "$triton_dir/pytriton/tritonserver/bin/tritonserver" ]; then
      touch "$triton_dir/.complete"
    else
      rm -rf "$triton_dir"
      log "warning: Triton Inference Server could not be installed into $triton_dir"
      log "         (pip install -r $req failed: no network or not Linux x86_64?);"
      log "         the tests that need a Triton server will skip"
      return 0
    fi
  fi
  log "Triton Inference Server: $triton_dir"
}

# --- The real CLIP vocabulary for the tokenizer tests --------------------------
# One 1.5 MB wheel downloaded (not installed), its vocabulary file kept; found
# by export/tests/clip_vocab.py by the same hash.
setup_clip_vocab() {
  local req=$ROOT/export/clip-vocab-requirements.txt vocab_dir
  vocab_dir=$CACHE/clip-vocab-$(sha256sum "$req" | cut -c1-16)
  if [ ! -f "$vocab_dir/.complete" ]; then
    log "downloading the CLIP BPE vocabulary (open_clip_torch wheel, 1.5 MB, once) into $vocab_dir"
    rm -rf "$vocab_dir"
    mkdir -p "$vocab_dir"
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
      --only-binary=:all: --require-hashes -r "$req" -d "$vocab_dir/wheel" >&2
    "$venv/bin/python" - "$vocab_dir" <<'PY'
import pathlib, sys, zipfile
folder = pathlib.Path(sys.argv[1])
(wheel,) = (folder / "wheel").glob("*.whl")
with zipfile.ZipFile(wheel) as archive:
    (folder / "bpe_simple_vocab_16e6.txt.gz").write_bytes(archive.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
PY
    rm -rf "$vocab_dir/wheel"
    touch "$vocab_dir/.complete"
  fi
  log "CLIP vocabulary: $vocab_dir"
}

# --- Rust components (tests only: rustfmt and clippy) -------------------------
setup_rust_components() {
  command -v rustup >/dev/null 2>&1 || return 0
  local component
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      log "adding rust component $component"
      rustup component add "$component" >&2 || log "could not add $component"
    fi
  done
}

venv=""
if [ "$RUNTIME_ONLY" != 1 ]; then
  setup_export_venv
  setup_triton
  setup_clip_vocab
  setup_rust_components
fi

echo "$venv"
