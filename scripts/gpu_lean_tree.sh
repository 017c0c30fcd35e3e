#!/usr/bin/env bash
# Every device call carries the work tree (tracked files and untracked ones git does not ignore)
# with what it names in `carry`, 64 MiB in all. The committed demo bundle, models/nano (38 MiB),
# leaves too little room for the onnxruntime-gpu pieces of scripts/gpu_payload.sh (44 MiB each),
# and the GPU checks do not use it. So, around the device calls:
#
#   bash scripts/gpu_lean_tree.sh on    # a temporary branch whose one commit removes models/nano
#   ...device calls (scripts/gpu_payload.sh prints them)...
#   bash scripts/gpu_lean_tree.sh off   # back to the branch you were on; the temporary branch deleted
#
# `on` needs a clean work tree (commit first) and prints what will travel. Nothing is lost: the
# bundle stays in the other branch's history and comes back with `off`.
set -euo pipefail
cd "$(dirname "$0")/.."
LEAN_PATHS=(models/nano)
BRANCH=gpu-lean-tree
STATE=.git/gpu-lean-tree-origin

tree_mib() {
  { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
    | awk '{s += $1} END {printf "%.1f MiB", s / 1048576}'
}

case "${1:-}" in
  on)
    if [[ -e $STATE ]]; then
      echo "gpu_lean_tree: already on (from branch $(cat "$STATE")); run: bash $0 off" >&2
      exit 1
    fi
    if [[ -n $(git status --porcelain) ]]; then
      echo "gpu_lean_tree: the work tree has changes; commit them first (git status)" >&2
      exit 1
    fi
    origin=$(git symbolic-ref --short HEAD)
    echo "gpu_lean_tree: work tree $(tree_mib) on $origin"
    git switch -q -c "$BRANCH"
    git rm -r -q -- "${LEAN_PATHS[@]}"
    git commit -q -m "temporary (scripts/gpu_lean_tree.sh): without ${LEAN_PATHS[*]} for device calls; never merge"
    echo "$origin" > "$STATE"
    echo "gpu_lean_tree: on branch $BRANCH without ${LEAN_PATHS[*]}: work tree $(tree_mib); back with: bash $0 off"
    ;;
  off)
    if [[ ! -e $STATE ]]; then
      echo "gpu_lean_tree: not on (no $STATE)" >&2
      exit 1
    fi
    if [[ -n $(git status --porcelain) ]]; then
      echo "gpu_lean_tree: the work tree has changes on $BRANCH; commit or drop them first" >&2
      exit 1
    fi
    origin=$(cat "$STATE")
    git switch -q "$origin"
    git branch -q -D "$BRANCH"
    rm -f "$STATE"
    echo "gpu_lean_tree: back on $origin: work tree $(tree_mib)"
    ;;
  *)
    echo "usage: bash $0 on|off" >&2
    exit 2
    ;;
esac
