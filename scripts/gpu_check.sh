#!/usr/bin/env bash
# The GPU check of issue 9, as one script for a lent GPU machine (no network; python3 with torch
# and CUDA 13 there; no Rust: the release binary travels). Prepare here with scripts/gpu_payload.sh
# (it prints the device calls), then on the device, from the repository root:
#
#   bash scripts/gpu_check.sh
#
# Without a GPU (nvidia-smi missing or listing none) it prints `SKIP: <reason>` and exits 0.
# Steps, each under `timeout`, each recorded (status, exit code, seconds, parsed JSON) whatever
# happens to the others; heavy steps are skipped ("skipped: deadline") when the overall deadline
# nears:
#   1. probe: nvidia-smi, the wheels, python3's torch/diffusers, `tadsr-edge --version`, `info --json`
#   2. golden parity of models/tiny: cuda fp32 (TF32 off) <= 1e-3, cpu <= 1e-4, fp16 bundle on cuda psnr >= 35;
#      `run --provider cuda` with the default --tile auto (the budget from the GPU's memory); the same
#      image with --static-shapes on and off, and with --cuda-graph (within one 8-bit level:
#      scripts/png_diff.py)
#   3. python3 -m export --synthetic sd21 fp16 (then fp32 if time allows), timed
#   4. tadsr-edge bench: 512 untiled, 2048 tile 512, per bundle (and --tf32 when the binary has it);
#      fp16 2048 with --tile-batch 4
#   5. PyTorch eager on the same GPU and weights: scripts/torch_gpu_bench.py (fp16, fp32; 512, 2048 latent-tiled)
#   5b. A/B: --static-shapes off, --cuda-option prefer_nhwc=1, --cuda-graph (sd21 fp16, 512 and 2048);
#       an sd21 fp16 export in the GPU forms (--group-norm instance --attention fused), timed (also
#       with --cuda-graph), its image compared with the plain bundle's
#   6. $OUT/gpu_check.json: everything, and the tadsr-edge/PyTorch ratios at 512
#
# Env (defaults): OUT (./bench-results/gpu-check), BIN (.device/payload/tadsr-edge, else
# target/release/tadsr-edge), ORT_GPU_DIR (.device/payload/onnxruntime/capi, else the folder
# scripts/gpu_reassemble.sh unpacks to, /tmp/ortpayload/onnxruntime/capi), TINY_FP16
# (.device/tiny-fp16, else built into /tmp/tiny-fp16), PYTHON (python3), GPU_CHECK_DEADLINE_S (500:
# seconds for the whole check), GPU_CHECK_FP32 (1: also export and bench the fp32 sd21 bundle),
# GPU_CHECK_REEXPORT (0: reuse /tmp/sd21-fp16 and /tmp/sd21 left by an earlier run on this machine),
# GPU_CHECK_FORCE (0; 1 runs every step even without a GPU: for testing this script).
# Output: $OUT/gpu_check.json and $OUT/gpu_check.log (each step's command and output tails).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1
START_EPOCH=$(date +%s)
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-500}
OUT=${OUT:-./bench-results/gpu-check}
PYTHON=${PYTHON:-python3}
FP32=${GPU_CHECK_FP32:-1}
REEXPORT=${GPU_CHECK_REEXPORT:-0}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
JSON=$OUT/gpu_check.json
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
STEPS=$WORK/steps.tsv
: > "$STEPS"
: > "$LOG"

elapsed() { echo $(( $(date +%s) - START_EPOCH )); }
left() { echo $(( DEADLINE_S - $(elapsed) )); }
stamp() { echo "[$(date +%H:%M:%S) +$(elapsed)s] $*" | tee -a "$LOG"; }

# --- no GPU: SKIP -------------------------------------------------------------------------------
skip_reason=""
if ! command -v nvidia-smi > /dev/null 2>&1; then
  skip_reason="nvidia-smi not found (no NVIDIA driver on this machine)"
elif ! gpus=$(timeout 30 nvidia-smi -L 2>&1) || ! grep -q '^GPU ' <<< "$gpus"; then
  skip_reason="nvidia-smi lists no GPU ($(head -n 1 <<< "$gpus"))"
fi
if [[ -n $skip_reason && ${GPU_CHECK_FORCE:-0} != 1 ]]; then
  echo "SKIP: $skip_reason"
  printf '{"skipped": true, "reason": "%s"}\n' "${skip_reason//\"/\'}" > "$JSON"
  rm -rf "$WORK"
  exit 0
fi
[[ -n $skip_reason ]] && stamp "GPU_CHECK_FORCE=1: going on without a GPU ($skip_reason)"

# --- the step runner ----------------------------------------------------------------------------
# record NAME STATUS RC SECONDS CMD: one line of $STEPS (outputs in $WORK/NAME.out / .err).
record() {
  local cmd=${5//$'\n'/ }
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${cmd//$'\t'/ }" >> "$STEPS"
}

# step NAME TIMEOUT_S NEEDS_S CMD...: runs CMD under timeout (at most what is left of the deadline),
# unless less than NEEDS_S is left. Returns CMD's exit code (99 when skipped).
step() {
  local name=$1 limit=$2 needs=$3
  shift 3
  local cmd="$*" remaining
  remaining=$(left)
  if (( remaining < needs )); then
    record "$name" "skipped: deadline (${remaining} s left, needs ${needs} s)" "" 0 "$cmd"
    stamp "step $name: skipped: deadline (${remaining} s left, needs ${needs} s)"
    return 99
  fi
  (( limit > remaining )) && limit=$remaining
  (( limit < 5 )) && limit=5
  stamp "step $name: start (timeout ${limit} s): $cmd"
  local t0 t1 rc status
  t0=$(date +%s%N)
  timeout -k 10 "$limit" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
  rc=$?
  t1=$(date +%s%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  record "$name" "$status" "$rc" "$secs" "$cmd"
  {
    echo "----- $name: $status (exit $rc, $secs s): $cmd"
    echo "--- stdout (tail)"
    tail -c 100000 "$WORK/$name.out"
    echo "--- stderr (tail)"
    tail -c 100000 "$WORK/$name.err"
  } >> "$LOG"
  tail -n 3 "$WORK/$name.err" | sed 's/^/    | /'
  tail -c 600 "$WORK/$name.out" | tail -n 2 | cut -c1-300 | sed 's/^/    > /'
  stamp "step $name: $status (exit $rc, $secs s)"
  return $rc
}
# not_run NAME REASON: a step that could not run for another reason than the deadline.
not_run() { record "$1" "skipped: $2" "" 0 ""; stamp "step $1: skipped: $2"; }

# --- inputs -------------------------------------------------------------------------------------
BIN=${BIN:-.device/payload/tadsr-edge}
[[ -x $BIN ]] || BIN=${CARGO_TARGET_DIR:-target}/release/tadsr-edge
TINY_FP16=${TINY_FP16:-.device/tiny-fp16}

# 1. probe ---------------------------------------------------------------------------------------
step nvidia_smi 30 0 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
step nvidia_smi_full 30 0 nvidia-smi

if [[ -z ${ORT_GPU_DIR:-} ]]; then
  ORT_GPU_DIR=.device/payload/onnxruntime/capi
  if [[ ! -f $ORT_GPU_DIR/libonnxruntime.so.1.31.1 ]]; then
    ORT_GPU_DIR=${ORT_UNPACK:-/tmp/ortpayload}/onnxruntime/capi
    if [[ ! -f $ORT_GPU_DIR/libonnxruntime.so.1.31.1 ]] || compgen -G '.device/chunk[0-9]*' > /dev/null; then
      step reassemble 180 0 bash scripts/gpu_reassemble.sh
    fi
  fi
fi
export ORT_DYLIB_PATH=$ORT_GPU_DIR/libonnxruntime.so.1.31.1
stamp "BIN=$BIN ORT_DYLIB_PATH=$ORT_DYLIB_PATH TINY_FP16=$TINY_FP16 OUT=$OUT deadline ${DEADLINE_S} s"

if compgen -G '.device/whl/*.whl' > /dev/null; then
  step wheels 120 0 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  not_run wheels "no .device/whl/*.whl"
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
cat > "$WORK/python_env.py" << 'PYTHON'
import glob, json, os, site, sys
info = {"python": sys.version.split()[0], "executable": sys.executable}
for name in ("torch", "diffusers", "transformers", "peft", "onnx", "onnxruntime", "jsonschema", "numpy", "PIL"):
    try:
        mod = __import__(name)
        info[name] = getattr(mod, "__version__", "?")
    except Exception as err:
        info[name] = "missing: %s: %s" % (type(err).__name__, err)
try:
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    info["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
except Exception as err:
    info["torch_error"] = str(err)
dirs = []
for sp in site.getsitepackages():
    dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib")))
info["nvidia_lib_dirs"] = dirs
print(json.dumps(info))
PYTHON
step python_env 60 0 "$PYTHON" "$WORK/python_env.py"
step bin_version 30 0 "$BIN" --version
step info 120 0 "$BIN" info --json
# The binary finds python3's nvidia/*/lib folders by itself; where its info says cuda is not usable,
# point TADSR_EDGE_GPU_LIBS at those folders (python_env's nvidia_lib_dirs) and ask again.
cuda_usable() {
  "$PYTHON" -c 'import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if any(p.get("name") == "cuda" and p.get("usable") for p in d.get("providers", [])) else 1)' "$1" 2> /dev/null
}
if [[ -z ${TADSR_EDGE_GPU_LIBS:-} ]] && ! cuda_usable "$WORK/info.out"; then
  libs=$("$PYTHON" -c 'import json, sys; print(":".join(json.load(open(sys.argv[1]))["nvidia_lib_dirs"]))' \
    "$WORK/python_env.out" 2> /dev/null)
  if [[ -n $libs ]]; then
    export TADSR_EDGE_GPU_LIBS=$libs
    stamp "cuda not usable as found by the binary; TADSR_EDGE_GPU_LIBS=$libs"
    step info_with_gpu_libs 120 0 "$BIN" info --json
  fi
fi
step info_tiny 120 0 "$BIN" info --json --model models/tiny

# 2. golden parity of models/tiny ---------------------------------------------------------------
step golden_cuda_fp32 180 30 "$BIN" golden --model models/tiny --provider cuda --max-abs-error 1e-3 --json
step golden_cpu_fp32 180 30 "$BIN" golden --model models/tiny --provider cpu --max-abs-error 1e-4 --json
if [[ ! -f $TINY_FP16/manifest.json ]]; then
  TINY_FP16=/tmp/tiny-fp16
  if [[ ! -f $TINY_FP16/manifest.json ]]; then
    step export_tiny_fp16 180 60 "$PYTHON" -m export --synthetic tiny --seed 0 --precision fp16 \
      --out "$TINY_FP16" --no-verify
  fi
fi
if [[ -f $TINY_FP16/manifest.json ]]; then
  step golden_cuda_fp16 180 30 "$BIN" golden --model "$TINY_FP16" --golden models/tiny/golden --provider cuda \
    --min-psnr 35 --json
else
  not_run golden_cuda_fp16 "no fp16 tiny bundle"
fi

# A tiny bundle exported here with --fusions cuda (ONNX Runtime's CUDA-only fused operators: no CPU can
# run them, so this is their only check against the PyTorch references).
if "$PYTHON" -m export --help 2>/dev/null | grep -q -- '--fusions'; then
  step export_tiny_fused 180 60 "$PYTHON" -m export --synthetic tiny --seed 0 --fusions cuda --out /tmp/tiny-fused \
    --no-memory
  step golden_cuda_fused_fp32 180 30 "$BIN" golden --model /tmp/tiny-fused --golden models/tiny/golden \
    --provider cuda --max-abs-error 1e-3 --json
  # fp16: the float16 converter runs after fusing (timestep embeddings kept float32)
  step export_tiny_fused_fp16 180 60 "$PYTHON" -m export --synthetic tiny --seed 0 --precision fp16 \
    --fusions cuda --out /tmp/tiny16-fused --no-memory
  step golden_cuda_fused_fp16 180 30 "$BIN" golden --model /tmp/tiny16-fused --golden models/tiny/golden \
    --provider cuda --min-psnr 35 --json
else
  not_run export_tiny_fused "this export has no --fusions"
  not_run golden_cuda_fused_fp32 "this export has no --fusions"
fi

# --tile auto (run's default) on CUDA: its budget must come from the GPU's memory (the JSON line's
# tile.budget.source names the GPU), and a photo that fits runs untiled (issue 11, item 1, on a GPU).
step tile_auto_cuda 120 30 "$BIN" run examples/coffee.png -o "$WORK/tile-auto-cuda.png" --model models/tiny \
  --provider cuda --json

# --static-shapes (auto: on for CUDA): the graphs pinned to the image's one size give the image the
# free graphs give, within one 8-bit level (fp32 sums in another order).
has_static=0
"$BIN" bench --help 2>/dev/null | grep -q -- '--static-shapes' && has_static=1
if [[ $has_static == 1 ]]; then
  step static_shapes_cuda_on 120 30 "$BIN" run examples/coffee.png -o "$WORK/static-on.png" --model models/tiny \
    --provider cuda --tile 0 --static-shapes on --json
  step static_shapes_cuda_off 120 30 "$BIN" run examples/coffee.png -o "$WORK/static-off.png" --model models/tiny \
    --provider cuda --tile 0 --static-shapes off --json
  step static_shapes_cuda_same_image 60 10 "$PYTHON" scripts/png_diff.py "$WORK/static-on.png" \
    "$WORK/static-off.png" --max-levels 1
  # --cuda-graph: inputs and outputs in GPU memory at fixed addresses, the kernels replayed; the
  # same image again (its JSON line says whether the graphs ran as CUDA graphs or were refused)
  step cuda_graph_cuda_on 120 30 "$BIN" run examples/coffee.png -o "$WORK/cuda-graph.png" --model models/tiny \
    --provider cuda --tile 0 --cuda-graph --json
  step cuda_graph_cuda_same_image 60 10 "$PYTHON" scripts/png_diff.py "$WORK/cuda-graph.png" \
    "$WORK/static-off.png" --max-levels 1
else
  not_run static_shapes_cuda_on "the binary has no --static-shapes"
fi

# 3.-5. sd21: export, tadsr-edge bench, PyTorch ------------------------------------------------
# export_sd21 PRECISION DIR: export unless a complete bundle (manifest.json, written last) is there.
export_sd21() {
  local precision=$1 dir=$2 name=export_sd21_$1
  if [[ $REEXPORT != 1 && -f $dir/manifest.json ]]; then
    not_run "$name" "reused $dir from an earlier run on this machine"
    return 0
  fi
  # the tiled VAE graphs stay: tadsr-edge's tiled runs (2048, tile 512) use them; the check
  # against PyTorch (--no-verify), golden files and the memory figures (--no-memory: --tile auto's
  # estimates, measured on the CPU; 187 s for the fp16 bundle on a 2-core machine, and every bench
  # here names its tile) are not needed for benching.
  step "$name" 330 150 "$PYTHON" -m export --synthetic sd21 --seed 0 --precision "$precision" \
    --out "$dir" --no-verify --no-memory
}
bench_args_common=(--provider cuda --json --input examples/coffee.png)
has_tf32=0
"$BIN" bench --help 2>/dev/null | grep -q -- '--tf32' && has_tf32=1
bench_bundle() {
  local tag=$1 dir=$2
  if [[ ! -f $dir/manifest.json ]]; then
    not_run "bench_${tag}_512" "no bundle at $dir"
    not_run "bench_${tag}_2048" "no bundle at $dir"
    return
  fi
  step "bench_${tag}_512" 180 45 "$BIN" bench --model "$dir" "${bench_args_common[@]}" --size 512 --tile 0 \
    --runs 10 --warmup 3
  step "bench_${tag}_2048" 240 60 "$BIN" bench --model "$dir" "${bench_args_common[@]}" --size 2048 --tile 512 \
    --runs 3 --warmup 1
}

export_sd21 fp16 /tmp/sd21-fp16
# the same graphs' memory figures, measured on a 2-core CPU machine: each bench holds --tile auto's
# estimate (estimated_peak_bytes) beside the device memory NVML saw taken (device_memory_used_bytes)
if [[ -f /tmp/sd21-fp16/manifest.json ]]; then
  step memory_figures_fp16 30 5 "$PYTHON" -m export.memory --bundle /tmp/sd21-fp16 \
    --copy-from docs/measurements/sd21-fp16-memory-2026-11-28.json
fi
bench_bundle fp16 /tmp/sd21-fp16
# cuDNN's exhaustive search (ONNX Runtime's default; tadsr-edge's is heuristic): the comparison
# that set the default.
if [[ -f /tmp/sd21-fp16/manifest.json ]] && "$BIN" bench --help 2>/dev/null | grep -q -- '--cudnn-conv-search'; then
  step bench_fp16_exhaustive_512 180 45 "$BIN" bench --model /tmp/sd21-fp16 "${bench_args_common[@]}" --size 512 \
    --tile 0 --runs 10 --warmup 3 --cudnn-conv-search exhaustive
else
  not_run bench_fp16_exhaustive_512 "no fp16 bundle, or the binary's bench has no --cudnn-conv-search"
fi
# --tile-batch: the 2048 run's 512 px tiles in batches of 4 (compare with bench_fp16_2048).
if [[ -f /tmp/sd21-fp16/manifest.json ]] && "$BIN" bench --help 2>/dev/null | grep -q -- '--tile-batch'; then
  step bench_fp16_2048_batch4 240 60 "$BIN" bench --model /tmp/sd21-fp16 "${bench_args_common[@]}" --size 2048 \
    --tile 512 --runs 3 --warmup 1 --tile-batch 4
else
  not_run bench_fp16_2048_batch4 "no fp16 bundle, or the binary's bench has no --tile-batch"
fi
step torch_bench 360 120 "$PYTHON" scripts/torch_gpu_bench.py --device cuda --config sd21 --seed 0 \
  --precisions fp16,fp32 --size 512 --runs 10 --warmup 3 --input examples/coffee.png \
  --tiled-size 2048 --tiled-runs 2 --tiled-warmup 1
# A/B of the GPU settings on the same bundle (compare with bench_fp16_512 / bench_fp16_2048, which
# run with today's defaults: static shapes on), most telling first (the deadline cuts the tail):
# CUDA graphs, the graphs free (the default before static shapes), NHWC convolutions.
if [[ $has_static == 1 && -f /tmp/sd21-fp16/manifest.json ]]; then
  step bench_fp16_512_cuda_graph 180 45 "$BIN" bench --model /tmp/sd21-fp16 "${bench_args_common[@]}" --size 512 \
    --tile 0 --runs 10 --warmup 3 --cuda-graph
  step bench_fp16_512_static_off 180 45 "$BIN" bench --model /tmp/sd21-fp16 "${bench_args_common[@]}" --size 512 \
    --tile 0 --runs 10 --warmup 3 --static-shapes off
else
  not_run bench_fp16_512_cuda_graph "no fp16 bundle, or the binary has no --static-shapes"
fi
# Other forms of the same sd21 fp16 weights, each timed with today's defaults and with --cuda-graph, and
# its image of coffee.png (640x480) compared with the plain bundle's (informational: psnr_db, max_levels).
# export_form TAG FLAG EXPORT_TIMEOUT EXPORT_NEEDS EXPORT_ARGS...: FLAG is the export option the form needs.
export_form() {
  local tag=$1 flag=$2 timeout=$3 needs=$4 dir=/tmp/sd21-fp16-$1
  shift 4
  if [[ ! -f /tmp/sd21-fp16/manifest.json ]] || ! "$PYTHON" -m export --help 2>/dev/null | grep -q -- "$flag"; then
    not_run "export_sd21_fp16_$tag" "no fp16 bundle, or this export has no $flag"
    return
  fi
  if [[ $REEXPORT != 1 && -f $dir/manifest.json ]]; then
    not_run "export_sd21_fp16_$tag" "reused $dir from an earlier run on this machine"
  else
    step "export_sd21_fp16_$tag" "$timeout" "$needs" "$PYTHON" -m export --synthetic sd21 --seed 0 --precision fp16 \
      "$@" --out "$dir" --no-verify --no-tiled-vae --no-memory
  fi
  [[ -f $dir/manifest.json ]] || return
  step "bench_fp16_${tag}_512" 180 45 "$BIN" bench --model "$dir" "${bench_args_common[@]}" \
    --size 512 --tile 0 --runs 10 --warmup 3
  step "bench_fp16_${tag}_512_cuda_graph" 180 45 "$BIN" bench --model "$dir" \
    "${bench_args_common[@]}" --size 512 --tile 0 --runs 10 --warmup 3 --cuda-graph
  [[ -f $WORK/sd21-plain.png ]] || step sd21_plain_image 120 30 "$BIN" run examples/coffee.png \
    -o "$WORK/sd21-plain.png" --model /tmp/sd21-fp16 --provider cuda --process-size 0 --tile 0 --json
  step "sd21_${tag}_image" 120 30 "$BIN" run examples/coffee.png -o "$WORK/sd21-$tag.png" \
    --model "$dir" --provider cuda --process-size 0 --tile 0 --json
  step "sd21_${tag}_vs_plain" 60 10 "$PYTHON" scripts/png_diff.py "$WORK/sd21-$tag.png" \
    "$WORK/sd21-plain.png" --max-levels 255
}
# The GPU forms: --group-norm instance (InstanceNormalization instead of row-by-row statistics) and
# --attention fused (one com.microsoft.MultiHeadAttention node per attention: flash / memory-efficient kernels).
export_form gpuform --attention 240 90 --group-norm instance --attention fused
# ONNX Runtime's CUDA fusions (--fusions cuda: GroupNorm, SkipGroupNorm, NhwcConv, BiasSplitGelu).
export_form fused --fusions 300 150 --fusions cuda
if [[ $has_static == 1 && -f /tmp/sd21-fp16/manifest.json ]]; then
  step bench_fp16_512_nhwc 180 45 "$BIN" bench --model /tmp/sd21-fp16 "${bench_args_common[@]}" --size 512 \
    --tile 0 --runs 10 --warmup 3 --cuda-option prefer_nhwc=1
  step bench_fp16_2048_cuda_graph 240 60 "$BIN" bench --model /tmp/sd21-fp16 "${bench_args_common[@]}" --size 2048 \
    --tile 512 --runs 3 --warmup 1 --cuda-graph
  step bench_fp16_2048_static_off 240 60 "$BIN" bench --model /tmp/sd21-fp16 "${bench_args_common[@]}" --size 2048 \
    --tile 512 --runs 3 --warmup 1 --static-shapes off
fi
if [[ $FP32 == 1 ]]; then
  export_sd21 fp32 /tmp/sd21
  bench_bundle fp32 /tmp/sd21
  if [[ $has_tf32 == 1 && -f /tmp/sd21/manifest.json ]]; then
    step bench_fp32_tf32_512 180 45 "$BIN" bench --model /tmp/sd21 "${bench_args_common[@]}" --size 512 --tile 0 \
      --runs 10 --warmup 3 --tf32
    # PyTorch with TF32 too, for the --tf32 row's ratio
    step torch_bench_tf32 240 60 "$PYTHON" scripts/torch_gpu_bench.py --device cuda --config sd21 --seed 0 \
      --precisions fp32 --tf32 --size 512 --runs 10 --warmup 3 --input examples/coffee.png
  else
    not_run bench_fp32_tf32_512 "no fp32 bundle, or the binary's bench has no --tf32"
  fi
else
  not_run export_sd21_fp32 "GPU_CHECK_FP32=0"
fi

# 6. one JSON and a summary ----------------------------------------------------------------------
stamp "writing $JSON"
cat > "$WORK/assemble.py" << 'PYTHON'
import json
import sys
from pathlib import Path

work, out_json, meta = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])


def parse(text):
    """The whole text as JSON, else its lines that are JSON objects (one: that object)."""
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    if not found:
        return None
    return found[0] if len(found) == 1 else found


steps = {}
for line in (work / "steps.tsv").read_text().splitlines():
    name, status, rc, secs, cmd = (line.split("\t") + [""] * 5)[:5]
    entry = {"status": status, "exit_code": int(rc) if rc else None, "seconds": float(secs or 0), "command": cmd}
    out = work / f"{name}.out"
    err = work / f"{name}.err"
    if out.exists():
        text = out.read_text(errors="replace")
        parsed = parse(text)
        if parsed is not None:
            entry["json"] = parsed
        else:
            entry["stdout_tail"] = text[-4000:]
    if err.exists() and status != "ok":
        entry["stderr_tail"] = err.read_text(errors="replace")[-4000:]
    steps[name] = entry


def get(step, *keys):
    value = steps.get(step, {}).get("json")
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return None
    return value


machine = None
smi = steps.get("nvidia_smi", {}).get("stdout_tail", "").strip()
if smi:
    fields = [f.strip() for f in smi.splitlines()[0].split(",")]
    machine = dict(zip(["name", "driver_version", "memory_total", "compute_cap"], fields))
    machine["gpus"] = len(smi.splitlines())

report = {
    "meta": meta,
    "machine": machine,
    "binary_version": (steps.get("bin_version", {}).get("stdout_tail") or "").strip() or None,
    "python_env": get("python_env"),
    "info": get("info"),
    "info_with_gpu_libs": get("info_with_gpu_libs"),
    "info_tiny": get("info_tiny"),
    "golden": {k: steps[k] for k in steps if k.startswith("golden_")},
    "export_seconds": {k[len("export_"):]: steps[k]["seconds"] for k in steps
                       if k.startswith("export_") and steps[k]["status"] == "ok"},
    "bench": {k[len("bench_"):]: get(k) for k in steps if k.startswith("bench_")},
    "torch": get("torch_bench"),
    "ratios": {},
    "steps": steps,
}
for precision in ("fp16", "fp32"):
    edge = get(f"bench_{precision}_512", "end_to_end_ms", "p50")
    write = get(f"bench_{precision}_512", "stages_ms", "write", "p50") or 0.0
    # upscale_ms: the same runs image in memory to image in memory (the scope PyTorch's bench times)
    in_memory = get(f"bench_{precision}_512", "upscale_ms", "p50") or (edge - write if edge else None)
    torch_ms = get("torch_bench", "results", precision, "pipeline_ms", "median")
    if edge and torch_ms:
        report["ratios"][f"{precision}_512"] = {
            "tadsr_edge_p50_ms": edge, "tadsr_edge_without_png_write_ms": in_memory, "pytorch_median_ms": torch_ms,
            "ratio": edge / torch_ms, "ratio_without_png_write": in_memory / torch_ms}
out_json.write_text(json.dumps(report, indent=1) + "\n")

print("\n===== GPU check summary =====")
if machine:
    print(f"GPU: {machine.get('name')}, driver {machine.get('driver_version')}, {machine.get('memory_total')}, "
          f"compute capability {machine.get('compute_cap')}")
print(f"binary: {report['binary_version']}")
env = report["python_env"] or {}
print(f"python3: torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), diffusers {env.get('diffusers')}")
print(f"{'step':<24} {'status':<40} {'exit':>5} {'seconds':>9}")
for name, e in steps.items():
    rc = "" if e["exit_code"] is None else e["exit_code"]
    print(f"{name:<24} {e['status'][:40]:<40} {rc!s:>5} {e['seconds']:>9.1f}")
for name, e in report["golden"].items():
    j = e.get("json")
    if isinstance(j, dict):
        brief = {k: v for k, v in j.items() if not isinstance(v, (list, dict))}
        print(f"{name}: {json.dumps(brief)[:300]}")
for name, b in report["bench"].items():
    if isinstance(b, dict) and isinstance(b.get("end_to_end_ms"), dict):
        e2e = b["end_to_end_ms"]
        print(f"tadsr-edge bench {name}: p50 {e2e.get('p50', 0):.1f} ms, min {e2e.get('min', 0):.1f} ms, "
              f"session {b.get('session_creation_ms', 0):.0f} ms, provider {json.dumps(b.get('provider'))}")
t = report["torch"]
if isinstance(t, dict):
    for precision, r in (t.get("results") or {}).items():
        if "pipeline_ms" in r:
            tiled = r.get("tiled", {}).get("pipeline_ms", {}).get("median")
            side = r.get("tiled", {}).get("size")
            print(f"PyTorch {precision}: {t.get('size')} median {r['pipeline_ms']['median']:.1f} ms"
                  + (f", {side} latent-tiled median {tiled:.1f} ms" if tiled else ""))
        else:
            print(f"PyTorch {precision}: {r.get('error')}")
for key, r in report["ratios"].items():
    print(f"tadsr-edge / PyTorch {key}: {r['ratio']:.3f} ({r['tadsr_edge_p50_ms']:.1f} / {r['pytorch_median_ms']:.1f} ms;"
          f" without PNG write {r['ratio_without_png_write']:.3f})")
PYTHON
meta=$(printf '{"started": "%s", "seconds": %s, "deadline_s": %s, "bin": "%s", "ort_dylib_path": "%s", "tiny_fp16": "%s", "host": "%s", "tadsr_edge_gpu_libs": "%s"}' \
  "$(date -u -d "@$START_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" "$(elapsed)" "$DEADLINE_S" "$BIN" "$ORT_DYLIB_PATH" "$TINY_FP16" \
  "$(hostname)" "${TADSR_EDGE_GPU_LIBS:-}")
if ! "$PYTHON" "$WORK/assemble.py" "$WORK" "$JSON" "$meta" 2>&1 | tee -a "$LOG"; then
  stamp "error: could not assemble $JSON; the raw step table follows"
  cat "$STEPS" | tee -a "$LOG"
  printf '{"error": "assembly failed; see gpu_check.log"}\n' > "$JSON"
fi
# keep the log under 16 MiB
if (( $(stat -c %s "$LOG") > 15 * 1048576 )); then
  tail -c $((15 * 1048576)) "$LOG" > "$WORK/log.tmp" && mv "$WORK/log.tmp" "$LOG"
fi
rm -rf "$WORK"
stamp "done in $(elapsed) s: $JSON, $LOG"
exit 0
