#!/usr/bin/env bash
# Runs one property-test target for a fixed time, round after round, each
# round with new random seeds, and stops at the first failure.
#
#   scripts/fuzz.sh TARGET SECONDS [CASES_PER_ROUND]
#
# TARGET: decode (image decoding under limits), manifest (the bundle's
# manifest parser), tiling (the tile planners and --tile auto's choice),
# tokenizer (a bundle's tokenizer.json and --prompt texts), or all (each for SECONDS).
# CASES_PER_ROUND defaults to 2000 per property. FUZZ_THREADS (default 1)
# is the number of test threads. Not part of `make test` (cargo-fuzz needs a
# nightly toolchain; these are proptest properties in tests/fuzz_*.rs).
#
# An input that panics (or breaks a promise) is saved under
# $FUZZ_CRASHERS_DIR (default target/fuzz-crashers/<target>/); one that
# aborts the process is left there as in-flight-*. Keep it as a regression
# test by copying it to tests/fixtures/crashers/<target>/ (run by the
# `kept_crashers_stay_fixed` tests of `cargo test`).
set -euo pipefail

usage() {
    echo "usage: $0 decode|manifest|tiling|tokenizer|all SECONDS [CASES_PER_ROUND]" >&2
    exit 2
}
[[ $# -ge 2 ]] || usage
target=$1
seconds=$2
cases=${3:-2000}
[[ $seconds =~ ^[0-9]+$ && $cases =~ ^[0-9]+$ ]] || usage
cd "$(dirname "$0")/.."

if [[ $target == all ]]; then
    for one in decode manifest tiling tokenizer; do
        "$0" "$one" "$seconds" "$cases"
    done
    exit 0
fi
case $target in
    decode | manifest | tiling | tokenizer) ;;
    *) usage ;;
esac

threads=${FUZZ_THREADS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
export FUZZ_CRASHERS_DIR=${FUZZ_CRASHERS_DIR:-$CARGO_TARGET_DIR/fuzz-crashers}
mkdir -p "$FUZZ_CRASHERS_DIR"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo test --release --locked --test "fuzz_$target" --no-run -q 2>/dev/null \
    || cargo test --release --locked --test "fuzz_$target" --no-run
properties=$(cargo test --release --locked -q --test "fuzz_$target" -- --list 2>/dev/null \
    | grep -c ': test$' || true)

start=$SECONDS
rounds=0
while (( SECONDS - start < seconds )); do
    if ! PROPTEST_CASES=$cases cargo test --release --locked -q --test "fuzz_$target" \
        -- --test-threads "$threads" >"$log" 2>&1; then
        cat "$log"
        echo "fuzz $target: FAILED in round $((rounds + 1)) after $((SECONDS - start)) s;" \
            "inputs that broke a property are in $FUZZ_CRASHERS_DIR/$target/" >&2
        exit 1
    fi
    rm -f "$FUZZ_CRASHERS_DIR/$target"/in-flight-*
    rounds=$((rounds + 1))
done
echo "fuzz $target: $rounds rounds x $cases cases per property ($properties tests)" \
    "in $((SECONDS - start)) s, no failure"
