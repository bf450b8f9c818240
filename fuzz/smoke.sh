#!/usr/bin/env bash
# Smoke run of the fuzzing harnesses, for CI: replays the seed corpus through every harness
# (`cargo test`, no instrumentation), then fuzzes each target for FUZZ_SECONDS (default 15)
# seconds. Exits non-zero on a failing replay or on any crash, timeout or out-of-memory.
# Needs only cargo and a C++ compiler (libfuzzer-sys builds libFuzzer with it).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-15}"

echo "== fuzz: replay the seed corpus"
cargo test --locked

for target in genotype_json genotype_text idx cifar image_folder checkpoint run_dir weights; do
    echo "== fuzz: $target for ${seconds}s"
    # A fixed seed: CI replays the same mutations every time (the long runs in README.md explore).
    ./run.sh "$target" "$seconds" -seed=1
done
echo "fuzz smoke run passed"
