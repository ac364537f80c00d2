#!/usr/bin/env bash
# A fuzz campaign in child processes capped at 2 GB of address space (ulimit -v), as issue 18
# asks: each child runs inputs START.. of the targets in NODEC_FUZZ_TARGETS
# (tests/it/fuzz_campaign.rs, `child`), writing each input's number to a progress file before
# feeding it. A child that dies (an allocation abort, a signal) is counted as an abort of the
# input it was on, and a new child starts after it. A child that reports a panic or a hang
# fails its slice; its summary lines are kept.
#
#   tests/fuzz/capped.sh TOTAL [TARGETS] [SLICE]
#   e.g. nice tests/fuzz/capped.sh 100000 run,compile 20000
#
# Uses the release test binary: cargo test --release --test it --no-run.
set -uo pipefail
cd "$(dirname "$0")/../.."
total=${1:?how many inputs}
targets=${2:-check,compile,run,csv,npy,params,checkpoint}
slice=${3:-50000}
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
binary=$(cargo test --release --test it --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*it-[^"]*\)".*/\1/p' | tail -1)
[ -x "$binary" ] || { echo "no release test binary" >&2; exit 1; }
progress="$target_dir/fuzz-progress"
start=0
aborts=0
failed=0
began=$(date +%s)
while [ "$start" -lt "$total" ]; do
    count=$((total - start < slice ? total - start : slice))
    : > "$progress"
    NODEC_FUZZ_TARGETS="$targets" NODEC_FUZZ_START=$start NODEC_FUZZ_COUNT=$count \
        NODEC_FUZZ_PROGRESS="$progress" \
        bash -c 'ulimit -v 2097152; exec "$0" fuzz_campaign::child --exact --ignored --nocapture --test-threads 1' "$binary" \
        > "$progress.out" 2>&1
    code=$?
    # libtest prints `test NAME ... ` before the summary, on the same line.
    grep -oE 'fuzz: [0-9].*|^  .*' "$progress.out"
    last=$(tail -1 "$progress" 2>/dev/null)
    if grep -qE 'fuzz: [0-9]' "$progress.out"; then
        [ "$code" -eq 0 ] || failed=$((failed + 1))
        start=$((start + count))
    else
        aborts=$((aborts + 1))
        echo "abort (exit $code) at input ${last:-?}; $(tail -3 "$progress.out" | tr '\n' ' ')"
        start=$(( ${last:-$start} + 1 ))
    fi
done
echo "capped campaign: $total inputs of $targets in $(( $(date +%s) - began )) s; $aborts aborts; $failed slices with panics or hangs"
[ "$aborts" -eq 0 ] && [ "$failed" -eq 0 ]
