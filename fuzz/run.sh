#!/usr/bin/env bash
# Fuzzes one target: ./run.sh TARGET SECONDS [libFuzzer flags...]
#
# Builds the libFuzzer binaries with coverage instrumentation on stable Rust (plain cargo and
# rustc codegen flags, no nightly, no cargo-fuzz), then fuzzes TARGET for SECONDS starting from
# corpus/TARGET. New inputs go to work/TARGET (not committed), crashes to artifacts/. Exits
# non-zero on a crash, a timeout (an input taking over 20 s) or an out-of-memory.
set -euo pipefail
cd "$(dirname "$0")"
target="$1"
seconds="$2"
shift 2

triple="$(rustc -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes (without a sanitizer): libFuzzer's coverage counters, comparison
# tracing, and cfg(fuzzing) (under which e.g. the png crate skips checksums).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# --target keeps RUSTFLAGS off build scripts and proc macros (they cannot link libFuzzer).
cargo build --release --locked --target "$triple" --bin "$target"

# Scratch files of the harnesses go to a private folder, removed at exit.
# In memory where /dev/shm exists: the checkpoint and run-folder readers fsync.
if [ -d /dev/shm ]; then TMPDIR="$(mktemp -d -p /dev/shm)"; else TMPDIR="$(mktemp -d)"; fi
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
# One thread for rayon and candle: runs are reproducible and two targets share two cores.
export RAYON_NUM_THREADS=1

mkdir -p "work/$target" artifacts
"target/$triple/release/$target" \
    -max_total_time="$seconds" \
    -timeout=20 \
    -rss_limit_mb=2048 \
    -dict=dicts/nasnet.dict \
    -artifact_prefix="artifacts/$target-" \
    -print_final_stats=1 \
    "$@" \
    "work/$target" "corpus/$target"
