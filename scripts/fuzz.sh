#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for N minutes each, one after the other,
# at the lowest CPU priority, and prints one line per target: minutes,
# executions, findings. Crashing inputs land in fuzz/artifacts/<target>/;
# what a run learns goes to fuzz/work/<target>/ (not committed), seeded
# from the committed fuzz/corpus/<target>/.
#
#   cargo install cargo-fuzz            # once
#   scripts/fuzz.sh [MINUTES] [TARGET...]   # default: 10 minutes, all
#
# Needs the nightly toolchain (`rustup toolchain list`). The build uses no
# sanitizer: the crate forbids unsafe code, and the targets check
# properties, so speed buys more than ASan would; debug assertions stay on
# (integer overflow panics).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
minutes="${1:-10}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
nice -n 19 cargo +nightly fuzz build -s none -a
mkdir -p logs
for t in "${targets[@]}"; do
    log="logs/$t.log"
    mkdir -p "work/$t" "artifacts/$t"
    status=0
    nice -n 19 cargo +nightly fuzz run -s none -a "$t" "work/$t" "corpus/$t" -- \
        -max_total_time=$((minutes * 60)) -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    findings=$(find "artifacts/$t" -type f | wc -l)
    echo "$t: ${minutes} min, ${runs:-?} executions, ${findings} findings (exit ${status}, log fuzz/$log)"
done
