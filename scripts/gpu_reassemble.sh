#!/usr/bin/env bash
# On the GPU machine: collect the pieces of the onnxruntime-gpu archive that scripts/gpu_payload.sh
# split into .device/chunk1/ ... chunkN/ (one folder carried per device call), and once all have
# arrived, check them and unpack the libraries into $ORT_UNPACK (default /tmp/ortpayload), giving
# $ORT_UNPACK/onnxruntime/capi/libonnxruntime.so.1.31.1 and its providers.
#
# Pieces are kept in $ORT_CHUNKS (default /tmp/ortchunks), outside the repository copy, so they
# survive between back-to-back calls on the warm machine; so does the unpacked folder (a carried
# path would replace a folder inside the repository). Run from the repository root:
#   bash scripts/gpu_reassemble.sh
# Exit: 0 unpacked (now or earlier), 3 pieces still missing (says which), 1 a check failed.
set -uo pipefail
ORT_CHUNKS=${ORT_CHUNKS:-/tmp/ortchunks}
ORT_UNPACK=${ORT_UNPACK:-/tmp/ortpayload}
NAME=ort-gpu.tar.xz
say() { echo "[$(date +%H:%M:%S)] gpu_reassemble: $*"; }
mkdir -p "$ORT_CHUNKS"

# Take what arrived: each piece checked against the list that came with it.
for dir in .device/chunk[0-9]*; do
  [[ -f $dir/SHA256SUMS ]] || continue
  for piece in "$dir"/"$NAME".part*; do
    [[ -f $piece ]] || continue
    base=$(basename "$piece")
    if ! grep " $base\$" "$dir/SHA256SUMS" | (cd "$dir" && sha256sum -c --quiet -); then
      say "error: $piece does not match its sha256"
      exit 1
    fi
    cp -f "$piece" "$ORT_CHUNKS/$base"
    say "have $base ($(stat -c %s "$piece") bytes)"
  done
  if [[ -f $ORT_CHUNKS/SHA256SUMS ]] && ! cmp -s "$dir/SHA256SUMS" "$ORT_CHUNKS/SHA256SUMS"; then
    say "a different archive arrived: dropping the pieces of the earlier one"
    find "$ORT_CHUNKS" -maxdepth 1 -name "$NAME.part*" ! -newer "$ORT_CHUNKS/SHA256SUMS" -delete
    rm -rf "$ORT_UNPACK"
    for piece in "$dir"/"$NAME".part*; do cp -f "$piece" "$ORT_CHUNKS/"; done
  fi
  cp -f "$dir/SHA256SUMS" "$ORT_CHUNKS/SHA256SUMS"
done

if [[ ! -f $ORT_CHUNKS/SHA256SUMS ]]; then
  if [[ -f $ORT_UNPACK/.complete ]]; then say "already unpacked in $ORT_UNPACK"; exit 0; fi
  say "no piece has arrived (carry .device/chunkK)"
  exit 3
fi
whole=$(awk -v n="$NAME" '$2 == n {print $1}' "$ORT_CHUNKS/SHA256SUMS")
if [[ -f $ORT_UNPACK/.complete && $(cat "$ORT_UNPACK/.complete") == "$whole" ]]; then
  say "already unpacked in $ORT_UNPACK"
  exit 0
fi
missing=()
while read -r _ piece; do
  [[ $piece == "$NAME" ]] && continue
  [[ -f $ORT_CHUNKS/$piece ]] || missing+=("$piece")
done < "$ORT_CHUNKS/SHA256SUMS"
total=$(grep -c "$NAME.part" "$ORT_CHUNKS/SHA256SUMS")
if (( ${#missing[@]} )); then
  say "have $((total - ${#missing[@]}))/$total pieces; missing: ${missing[*]}"
  exit 3
fi

say "all $total pieces here; checking and unpacking into $ORT_UNPACK"
started=$(date +%s)
(cd "$ORT_CHUNKS" && grep "$NAME.part" SHA256SUMS | sha256sum -c --quiet -) || { say "error: a piece is damaged"; exit 1; }
got=$(cat "$ORT_CHUNKS/$NAME".part* | sha256sum | cut -c1-64)
[[ $got == "$whole" ]] || { say "error: the joined archive's sha256 $got is not $whole"; exit 1; }
rm -rf "$ORT_UNPACK.tmp"
mkdir -p "$ORT_UNPACK.tmp"
if command -v xz > /dev/null; then
  cat "$ORT_CHUNKS/$NAME".part* | xz -d -T0 -c | tar -x -C "$ORT_UNPACK.tmp"
  rc=$?
  how=xz
else
  cat "$ORT_CHUNKS/$NAME".part* | python3 -c '
import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz") as tar:
    tar.extractall(sys.argv[1], filter="data")
' "$ORT_UNPACK.tmp"
  rc=$?
  how="python3 lzma"
fi
if (( rc != 0 )); then
  say "error: unpacking with $how failed (exit $rc)"
  rm -rf "$ORT_UNPACK.tmp"
  exit 1
fi
rm -rf "$ORT_UNPACK"
mv "$ORT_UNPACK.tmp" "$ORT_UNPACK"
echo "$whole" > "$ORT_UNPACK/.complete"
say "unpacked with $how in $(( $(date +%s) - started )) s:"
ls -l "$ORT_UNPACK/onnxruntime/capi/"
exit 0
