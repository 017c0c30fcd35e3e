#!/usr/bin/env bash
# Proof that the tests can fail: plants one known bug at a time in the
# source, runs the tests that exist to catch it, and reports whether they
# did ("killed", with every test run that failed) or not ("SURVIVED"). The
# source is restored after each mutant, also on Ctrl-C. Run by hand (each mutant rebuilds
# the crate: thirty-one now; the first twenty-five, every one killed, in about 17 min on a
# 2-core machine, 2026-11-28, 20:36-20:53 UTC, in a git worktree; the others run alone when
# they were added, 2026-11-28 and 2026-11-29, killed); not part of `make test`.
#
#   scripts/mutation_check.sh            # every mutant
#   scripts/mutation_check.sh scale-0.1822 blend-midpoints-swapped
#
# Exit status 0 only if every mutant selected was killed.
set -euo pipefail
cd "$(dirname "$0")/.."

# name # file # perl substitution (must change the file) # test runs (;-separated cargo test arguments)
MUTANTS=(
  "alphas-cumprod-t-plus-1#src/pipeline/mod.rs#s/\.alpha_cumprod\(i64::from\(timestep\)\)/.alpha_cumprod(i64::from(timestep) + 1)/#--test golden_parity"
  "scale-0.1822#src/pipeline/mod.rs#s/let scaling_factor = self\.bundle\.manifest\(\)\.scaling_factor;/let scaling_factor = 0.1822_f32;/#--test golden_parity"
  "8-bit-before-color-fix#src/pipeline/mod.rs#s/(tensor::decoder_output_to_unit\(decoded\.as_slice_mut\(\)\.expect\(\"contiguous\"\)\);)/\$1 decoded.mapv_inplace(|v| (v * 255.0).round() \/ 255.0);/#--test golden_parity"
  "tile-plan-stride-off-by-one#src/tiling.rs#s/let stride = tile\.saturating_sub\(overlap\)\.max\(1\);/let stride = tile.saturating_sub(overlap).max(1) + 1;/#--lib tiling;--test golden_parity latent"
  "tile-plan-last-tile-off-by-one#src/tiling.rs#s/offsets\.push\(size - tile\);/offsets.push(size - tile - 1);/#--lib tiling;--test pointwise_tiling"
  "blend-midpoints-swapped#src/tiling.rs#s/\(tile_height as f64 \/ 2\.0, \(tile_width as f64 - 1\.0\) \/ 2\.0\)/((tile_height as f64 - 1.0) \/ 2.0, tile_width as f64 \/ 2.0)/#--lib tiling;--test golden_parity latent"
  "feather-weights-transposed#src/tiling.rs#s/&feather_profile\(tile_height, overlap\),\n(\s*)&feather_profile\(tile_width, overlap\),/&feather_profile(tile_width, overlap),\n\$1&feather_profile(tile_height, overlap),/#--lib tiling"
  "wavelet-4-levels#src/image/colorfix.rs#s/pub const WAVELET_LEVELS: usize = 5;/pub const WAVELET_LEVELS: usize = 4;/#--lib colorfix;--test golden_parity"
  "adain-std-ignored#src/image/colorfix.rs#s/\*sample = \(normalized \* source_std \+ source_mean\)/*sample = (normalized + source_mean)/#--lib colorfix;--test golden_parity"
  "nan-check-misses-inf#src/pipeline/tile_run.rs#s/position\(\|v\| !v\.is_finite\(\)\)/position(|v| v.is_nan())/#--lib tile_run"
  "edge-tile-not-padded#src/pipeline/tile_run.rs#s/\.filter\(\|&\(h, w\)\| \(h, w\) != \(rect\.height, rect\.width\)\);/.filter(|_| false);/#--test static_shapes"
  "padding-wraps-not-repeats#src/tiling.rs#s/tile\[\[c, y\.min\(h - 1\), x\.min\(w - 1\)\]\]/tile[[c, y % h, x % w]]/#--lib tiling;--test static_shapes"
  "trt-prompt-not-batched#src/pipeline/gpu_plan.rs#s/prompt_shape\[0\] \* n,/prompt_shape[0],/#--lib gpu_plan"
  "trt-cache-ignores-weight-files#src/pipeline/gpu_plan.rs#s/for file in &spec\.external_data \{/for file in spec.external_data.iter().take(0) {/#--lib gpu_plan"
  "trt-cache-ignores-max-shape#src/pipeline/gpu_plan.rs#s/for part in \[&profile\.0, &profile\.1, &profile\.2\]/for part in [&profile.0, &profile.1]/#--lib gpu_plan"
  "probe-names-no-folder#src/runtime/gpu_libs.rs#s/\.map\(\|f\| f\.display\(\)\.to_string\(\)\)/.map(|_| String::new())/#--lib gpu_libs"
  "remembered-hash-ignores-change-time#src/bundle/verified.rs#s/state\.modified_ns,\n(\s*)state\.changed_ns\n/state.modified_ns,\n\$1 0_i128\n/#--lib verified;--test bundle_validation remembered"
  "padded-tiles-estimated-as-cut#src/tile_budget.rs#s/\(side, TilingMode::Staged\) if model\.fixed_tiles =>/(side, TilingMode::Staged) if model.fixed_tiles \&\& false =>/#--lib tile_budget;--test cli_info_bench on_a_gpu"
  "output-may-replace-an-input#src/naming.rs#s/identities\.iter\(\)\.position\(\|i\| i\.same_file\(&identity\)\)/identities.iter().position(|_| false)/#--lib naming;--test hostile_input output_never_replaces"
  "icc-profile-dropped#src/image/io.rs#s/Ok\(carried\) => Some\(carried\.to_vec\(\)\),/Ok(_) => None,/#--test cli_run color_profile;--test fuzz_decode every_seed"
  "tiff-profile-left-to-decoder#src/image/container.rs#s/profile_at = Some\(\(value, bytes as usize\)\);/profile_at = None::<(u64, usize)>;/#--test cli_run color_profile;--test fuzz_decode every_seed"
  "skip-existing-overwrites#src/naming.rs#s/std::fs::symlink_metadata\(output\)\.is_ok_and\(\|meta\| meta\.is_file\(\)\)/false/#--test cli_run skip_existing"
  "recursive-reads-its-outputs#src/image/io.rs#s/let skipped = identity\.is_some\(\) && identity == skip;/let skipped = false;/#--test cli_run recursive"
  "tokenizer-without-nfc#src/prompt/tokenizer.rs#s/Normalizer::Nfc => text\.nfc\(\)\.collect\(\),/Normalizer::Nfc => text.clone(),/#--lib prompt"
  "bpe-ties-merged-rightmost#src/prompt/tokenizer.rs#s/Reverse\(\(rank, left, ids\[left\]/Reverse((rank, usize::MAX - left, ids[left]/;s/let Some\(Reverse\(\(_, left, left_id/let Some(Reverse((_, left_key, left_id/;s/(\) = heap\.pop\(\) \{)/\$1 let left = usize::MAX - left_key;/#--lib prompt"
  "segment-stats-in-run-order-row#src/pipeline/encoder_segments.rs#s/mean\[row \* groups\.\.\(row \+ 1\) \* groups\]/mean[number * groups..(number + 1) * groups]/#--test cli_run latent_tiling_encodes;--test golden_parity beyond"
  "latent-tiling-only-when-short-of-memory#src/tile_budget.rs#s/if tiling == TilingMode::Latent \{/if tiling == TilingMode::Latent \&\& untiled > budget.bytes {/#--lib tile_budget;--test cli_run latent_tiling"
  "stderr-line-panics-like-eprintln#src/main.rs#s/let _ = writeln!\(std::io::stderr\(\)\.lock\(\), /eprintln!(/#--test hostile_input closed_stderr"
  "file-size-limit-kills#src/main.rs#s/let _ = unsafe \{ signal_hook::low_level::register\(signal_hook::consts::SIGXFSZ, \|\| \{\}\) \};//#--test hostile_input file_size_limit"
  "stale-temporary-kept#src/image/write.rs#s/file\.try_lock\(\)\.is_ok\(\) && std::fs::remove_file/false \&\& std::fs::remove_file/#--lib write;--test hostile_input killed_runs"
  "golden-nan-passes#src/golden.rs#s/if most\.is_nan\(\) \|\| error\.is_nan\(\)/if false/#--test hostile_input hostile_golden"
)

backup_dir=$(mktemp -d)
current_file=""
restore() {
  if [ -n "$current_file" ] && [ -f "$backup_dir/original" ]; then
    cp "$backup_dir/original" "$current_file"
  fi
  current_file=""
}
trap 'restore; rm -rf "$backup_dir"' EXIT
trap 'echo "interrupted: source restored" >&2; exit 130' INT TERM

selected=("$@")
wanted() {
  [ ${#selected[@]} -eq 0 ] && return 0
  local name
  for name in "${selected[@]}"; do [ "$name" = "$1" ] && return 0; done
  return 1
}

survived=0
printf '%-34s %s\n' "mutant" "result"
for entry in "${MUTANTS[@]}"; do
  IFS='#' read -r name file expr runs <<<"$entry"
  wanted "$name" || continue
  cp "$file" "$backup_dir/original"
  current_file=$file
  perl -0pi -e "$expr" "$file"
  if cmp -s "$file" "$backup_dir/original"; then
    restore
    echo "$name: the substitution did not apply to $file (source changed?); fix this script" >&2
    exit 2
  fi
  killed_by=()
  IFS=';' read -r -a test_runs <<<"$runs"
  for run in "${test_runs[@]}"; do
    # shellcheck disable=SC2086
    if ! cargo test --release --locked $run >"$backup_dir/log" 2>&1; then
      failed=$(grep -E '^    [a-z0-9_:]+$' "$backup_dir/log" | tr -d ' ' | paste -sd, - || true)
      killed_by+=("\`cargo test $run\` (${failed:-build failed})")
    fi
  done
  restore
  if [ ${#killed_by[@]} -gt 0 ]; then
    printf '%-34s killed by %s\n' "$name" "$(printf '%s; ' "${killed_by[@]}")"
  else
    printf '%-34s SURVIVED %s\n' "$name" "$runs"
    survived=$((survived + 1))
  fi
done
# rebuild the restored source so the next cargo command starts clean
cargo build --release --locked --quiet
exit $((survived > 0))
