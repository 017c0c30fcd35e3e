#!/usr/bin/env bash
# Prepare, HERE, everything scripts/gpu_check.sh needs on a lent GPU machine
# (no network there), under .device/ (git-ignored by .gitignore, so a fresh checkout has it ignored too):
#
#   .device/payload/tadsr-edge     the release binary (build it first: cargo build --release --locked)
#   .device/chunk1/ ... chunkN/    the onnxruntime-gpu 1.31.1 libraries (libonnxruntime.so.1.31.1 and
#                                  the shared, CUDA and TensorRT providers) as one xz-compressed tar,
#                                  split in pieces of at most 44 MiB, one piece per folder, each folder
#                                  with the SHA256SUMS of all pieces and of the whole archive
#   .device/chunks/                the same pieces side by side, and SHA256SUMS (kept here, not carried)
#   .device/whl/                   wheels the device's python3 lacks (diffusers, jsonschema and its
#                                  compiled/pure dependencies the device image does not hold)
#   .device/tiny-fp16/             an fp16 export of models/tiny (seed 0)
#   .device/tiny-text/             a tiny bundle with a text encoder (--prompt-dir on CUDA)
#
# A device call carries at most 64 MiB with the work tree (50 MiB with the committed demo bundle
# models/nano; ~15 MiB without it: scripts/gpu_lean_tree.sh on|off around the calls), so the pieces travel one
# per call: calls 1..N-1 carry .device/chunkK and run `bash scripts/gpu_reassemble.sh`; the last
# call carries the smallest piece (chunkN) with .device/payload, .device/whl, .device/tiny-fp16 and .device/tiny-text
# and runs `bash scripts/gpu_check.sh` (which reassembles first). The plan is printed at the end.
#
# xz, not zstd: the device image is not known to have zstd (nor python's zstandard), while
# python3's lzma always decompresses xz. Idempotent: a second run reuses the archive (kept in
# $GPUWHEEL) and the tiny-fp16 bundle when still current.
#
# Env: GPUWHEEL (default /tmp/gpuwheel), PYTHON (default: the set-up's venv python),
#      CHUNK_MIB (default 44), FORCE=1 rebuilds the archive and tiny-fp16.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
GPUWHEEL=${GPUWHEEL:-/tmp/gpuwheel}
CHUNK_MIB=${CHUNK_MIB:-44}
FORCE=${FORCE:-0}
ORT_VERSION=1.31.1
LIBS=(libonnxruntime.so.$ORT_VERSION libonnxruntime_providers_shared.so
      libonnxruntime_providers_cuda.so libonnxruntime_providers_tensorrt.so)
ARCHIVE=$GPUWHEEL/ort-gpu.tar.xz

die() { echo "gpu_payload: error: $*" >&2; exit 1; }
say() { echo "[$(date +%H:%M:%S)] gpu_payload: $*"; }

if [[ -z ${PYTHON:-} ]]; then
  PYTHON=${XDG_CACHE_HOME:-$HOME/.cache}/tadsr-edge/venv-$(sha256sum export/requirements.txt | cut -c1-16)/bin/python
fi
[[ -x $PYTHON ]] || die "no python at $PYTHON (run make setup, or set PYTHON)"
mkdir -p .device/payload .device/chunks .device/whl
git check-ignore -q .device/x || die ".device/ is not git-ignored (.gitignore lists /.device; add it back)"

# (a) the release binary ------------------------------------------------------------------------
BIN=${CARGO_TARGET_DIR:-target}/release/tadsr-edge
[[ -x $BIN ]] || die "$BIN missing: cargo build --release --locked first"
file -b "$BIN" 2>/dev/null | grep -q 'x86-64' || die "$BIN is not an x86-64 executable"
cp -f "$BIN" .device/payload/tadsr-edge
say "binary: $("$BIN" --version 2>/dev/null || echo '?'), $(stat -c %s "$BIN") bytes -> .device/payload/tadsr-edge"

# (b) the GPU ONNX Runtime libraries, compressed and split --------------------------------------
CAPI=$GPUWHEEL/onnxruntime/capi
have_libs() { local l; for l in "${LIBS[@]}"; do [[ -s $CAPI/$l ]] || return 1; done; }
if ! have_libs; then
  say "extracting onnxruntime-gpu==$ORT_VERSION into $GPUWHEEL"
  mkdir -p "$GPUWHEEL"
  wheel=$(ls "$GPUWHEEL"/onnxruntime_gpu-"$ORT_VERSION"-*.whl 2>/dev/null | head -n 1)
  if [[ -z $wheel ]]; then
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$GPUWHEEL" "onnxruntime-gpu==$ORT_VERSION" || die "pip download failed"
    wheel=$(ls "$GPUWHEEL"/onnxruntime_gpu-"$ORT_VERSION"-*.whl | head -n 1)
  fi
  (cd "$GPUWHEEL" && unzip -qo "$wheel" "${LIBS[@]/#/onnxruntime/capi/}") || die "unzip of $wheel failed"
  have_libs || die "the wheel lacks one of ${LIBS[*]}"
fi

# The archive is current when its recorded source list (name, size, sha256) is the libraries'.
sources=$( cd "$GPUWHEEL" && for l in "${LIBS[@]}"; do
  printf '%s %s %s\n' "onnxruntime/capi/$l" "$(stat -c %s "onnxruntime/capi/$l")" \
    "$(sha256sum "onnxruntime/capi/$l" | cut -c1-64)"; done )
if [[ $FORCE != 1 && -s $ARCHIVE && -f $ARCHIVE.sources && $(cat "$ARCHIVE.sources") == "$sources" ]]; then
  say "reusing $ARCHIVE ($(stat -c %s "$ARCHIVE") bytes)"
else
  say "compressing the libraries with xz -9 -T2 (a few minutes)"
  started=$SECONDS
  rm -f "$ARCHIVE" "$ARCHIVE.sources"
  tar -C "$GPUWHEEL" --owner=0 --group=0 -cf - "${LIBS[@]/#/onnxruntime/capi/}" | xz -9 -T2 -c > "$ARCHIVE.part" \
    && mv "$ARCHIVE.part" "$ARCHIVE" || die "compression failed"
  printf '%s\n' "$sources" > "$ARCHIVE.sources"
  say "compressed in $((SECONDS - started)) s: $(stat -c %s "$ARCHIVE") bytes"
fi
# Check the archive lists exactly the libraries with their sizes (decompresses it once, ~10 s).
listing=$(tar -tvJf "$ARCHIVE" | awk '{print $6, $3}' | sort)
wanted=$(printf '%s\n' "$sources" | awk '{print $1, $2}' | sort)
[[ $listing == "$wanted" ]] || die "$ARCHIVE does not hold the libraries (listing: $listing)"

rm -rf .device/chunks .device/chunk[0-9]*
mkdir -p .device/chunks
split -b "${CHUNK_MIB}M" -d -a 2 "$ARCHIVE" .device/chunks/ort-gpu.tar.xz.part || die "split failed"
(
  cd .device/chunks || exit 1
  sha256sum ort-gpu.tar.xz.part* > SHA256SUMS
  printf '%s  %s\n' "$(sha256sum "$ARCHIVE" | cut -c1-64)" ort-gpu.tar.xz >> SHA256SUMS
)
n=0
for part in .device/chunks/ort-gpu.tar.xz.part*; do
  n=$((n + 1))
  mkdir -p ".device/chunk$n"
  cp "$part" ".device/chunk$n/"
  cp .device/chunks/SHA256SUMS ".device/chunk$n/"
done
say "archive split into $n pieces of at most $CHUNK_MIB MiB"

# (c) wheels: what `python -m export --synthetic` imports that the device image lacks ------------
# The device image (/work/.library/device/KINDS.md) holds torch, numpy, onnx, onnxruntime,
# transformers, peft, safetensors, pillow, huggingface_hub 1.33, accelerate, attrs, requests,
# filelock, regex, packaging, pyyaml: not diffusers, not jsonschema (nor jsonschema's own
# referencing / jsonschema-specifications / rpds-py). Versions as export/requirements.txt pins.
pin() { grep -i "^$1==" export/requirements.txt | cut -d= -f3; }
declare -A WANT=(
  [diffusers]=$(pin diffusers)
  [jsonschema]=$(pin jsonschema)
  [jsonschema_specifications]=2025.9.1
  [referencing]=0.37.0
  [rpds_py]=2026.9.1
)
for name in "${!WANT[@]}"; do
  version=${WANT[$name]}
  if ! ls .device/whl/"$name"-"$version"-*.whl > /dev/null 2>&1; then
    say "downloading wheel $name==$version"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .device/whl "${name//_/-}==$version" || die "pip download $name==$version failed"
  fi
done
# One version per distribution, or the install on the device stops.
dups=$(ls .device/whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[[ -z $dups ]] || die "several versions of: $dups in .device/whl"
# What the wheels need beyond themselves must be on the device (see KINDS.md's list).
for w in .device/whl/*.whl; do
  unzip -p "$w" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' \
    | sed "s|^Requires-Dist: |  $(basename "$w" | cut -d- -f1) needs |"
done | sort -u

# (d) the fp16 tiny bundle -----------------------------------------------------------------------
TINY=.device/tiny-fp16
stale=1
if [[ $FORCE != 1 && -f $TINY/manifest.json ]]; then
  stale=0
  for f in export/*.py; do [[ $f -nt $TINY/manifest.json ]] && stale=1; done
fi
if [[ $stale == 1 ]]; then
  say "exporting models/tiny as fp16 into $TINY"
  rm -rf "$TINY"
  PYTHONPATH=$ROOT "$PYTHON" -m export --synthetic tiny --seed 0 --precision fp16 --out "$TINY" --no-verify \
    || die "tiny fp16 export failed"
else
  say "reusing $TINY"
fi

# (e) a tiny bundle with a text encoder (for --prompt-dir's text encoder on CUDA) ---------------
TEXT=.device/tiny-text
stale=1
if [[ $FORCE != 1 && -f $TEXT/manifest.json ]]; then
  stale=0
  for f in export/*.py; do [[ $f -nt $TEXT/manifest.json ]] && stale=1; done
fi
if [[ $stale == 1 ]]; then
  say "exporting a tiny bundle with a text encoder into $TEXT"
  rm -rf "$TEXT" "$GPUWHEEL/tiny-text-checkpoint"
  PYTHONPATH=$ROOT "$PYTHON" -m export.synthetic_checkpoint --config tiny --seed 0 --text-encoder \
    --out "$GPUWHEEL/tiny-text-checkpoint" >/dev/null || die "tiny text checkpoint failed"
  PYTHONPATH=$ROOT "$PYTHON" -m export --weights "$GPUWHEEL/tiny-text-checkpoint" --text-encoder --out "$TEXT" \
    --no-verify --no-memory --no-tiled-vae >/dev/null || die "tiny text export failed"
else
  say "reusing $TEXT"
fi

# Sizes and the plan ----------------------------------------------------------------------------
tree_bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
dir_bytes() { du -sb "$1" | cut -f1; }
echo
echo "work tree (travels with every call): $(mib "$tree_bytes")"
for d in .device/payload .device/whl .device/tiny-fp16 .device/tiny-text .device/chunk[0-9]*; do
  printf '  %-20s %s\n' "$d" "$(mib "$(dir_bytes "$d")")"
done
last_bytes=$(( tree_bytes + $(dir_bytes ".device/chunk$n") + $(dir_bytes .device/payload) \
  + $(dir_bytes .device/whl) + $(dir_bytes .device/tiny-fp16) + $(dir_bytes .device/tiny-text) ))
echo "sha256: .device/chunks/SHA256SUMS"
echo
echo "device calls (back to back, so that /tmp/ortchunks survives on the warm machine):"
for ((k = 1; k < n; k++)); do
  echo "  $k. carry [\".device/chunk$k\"]  command: bash scripts/gpu_reassemble.sh"
done
echo "  $n. carry [\".device/chunk$n\", \".device/payload\", \".device/whl\", \".device/tiny-fp16\", \".device/tiny-text\"]" \
  " command: bash scripts/gpu_check.sh   ($(mib "$last_bytes") with the work tree)"
largest_chunk=$(for d in .device/chunk[0-9]*; do dir_bytes "$d"; done | sort -n | tail -1)
over=0
(( tree_bytes + largest_chunk < 64 * 1048576 )) || { echo "warning: a chunk call is over 64 MiB" >&2; over=1; }
(( last_bytes < 64 * 1048576 )) || { echo "warning: the last call is over 64 MiB" >&2; over=1; }
if (( over )); then
  echo "the work tree ($(mib "$tree_bytes")) leaves too little room: around the device calls run" >&2
  echo "  bash scripts/gpu_lean_tree.sh on   (a temporary branch without models/nano, ~15 MiB)" >&2
  echo "  bash scripts/gpu_lean_tree.sh off  (after the last call)" >&2
fi
