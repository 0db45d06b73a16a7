#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a while each:
#   scripts/fuzz.sh                 # all targets, 180 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh pdf docx
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the pinned stable
# toolchain, so no second toolchain is needed. Seeds are small valid files written by the
# basalt-ingest `fuzz_seeds` example; findings land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-180}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(pdf docx html text_formats filter)
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cargo run --quiet -p basalt-ingest --example fuzz_seeds -- fuzz/corpus
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus"
  echo "== fuzzing $target for ${seconds}s" >&2
  cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
    -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=2048 -timeout=30 -print_final_stats=1
done
