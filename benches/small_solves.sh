#!/usr/bin/env bash
# Small adaptive solves as users run them, beside the hand-written DOPRI5 (results and how to
# read them: benches/small_solves.md).
#   1. callgrind instruction counts of one P1 Lorenz solve: hand-written (`hand_dopri5 once`,
#      the `dopri5` function) and nodec in process (`small_solves once`, a solve after the
#      warm-up, the field's native code ready), and the whole `nodec run` process;
#   2. wall times from pinned (taskset -c CPU), interleaved pairs: hand P1 median vs nodec's
#      in-process median, and the CLI end to end (`nodec run models/lorenz.node`, process start
#      to exit, and `solve_seconds` of P1 from `--format json`);
#   3. the 1024-member ensemble x0 = 1 + 1e-3 k (k = 0..1023) on 2 threads: the CLI
#      (`--ensemble x0=1:2.023:1024`) against the hand-written DOPRI5 over the same starts on
#      2 threads.
# Usage: benches/small_solves.sh [PAIRS]   (default 5). NODEC=path skips the nodec build.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs="${1:-5}"
cpu="${CPU:-1}"
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
if [[ -z "${NODEC:-}" ]]; then
    cargo build --release --quiet
    NODEC="$target/release/nodec"
fi
cargo build --release --quiet --bench small_solves --bench hand_dopri5
bench() { find "$target/release/deps" -maxdepth 1 -type f -executable -name "$1-*" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2; }
HAND="$(bench hand_dopri5)"
SMALL="$(bench small_solves)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
P1=benches/data/p1/lorenz.node

echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
if command -v valgrind > /dev/null; then
    irefs() { valgrind --tool=callgrind --callgrind-out-file="$scratch/cg" "$@" > /dev/null 2> "$scratch/log"; }
    # awk reads all of the report: `grep -m1` stopping early killed the script by SIGPIPE.
    inclusive() { callgrind_annotate --inclusive=yes "$scratch/cg" 2> /dev/null | awk -v pat="$1" 'index($0, pat) && !done {gsub(",","",$1); print $1; done=1}'; }
    irefs --toggle-collect='hand_dopri5::dopri5*' "$HAND" once
    hand_ir=$(inclusive 'PROGRAM TOTALS')
    # `once` solves after a warm-up whose field code generation it awaits: the steady state.
    irefs --toggle-collect='*small_solves::measured*' "$SMALL" once
    nodec_ir=$(inclusive 'PROGRAM TOTALS')
    irefs "$NODEC" run "$P1" --format json
    cli_ir=$(inclusive 'PROGRAM TOTALS')
    irefs "$NODEC" run models/lorenz.node
    cli_lorenz_ir=$(inclusive 'PROGRAM TOTALS')
    echo "callgrind instructions, one P1 solve (834 step attempts):"
    echo "  hand DOPRI5 $hand_ir ($((hand_ir / 834))/step), nodec solve $nodec_ir ($((nodec_ir / 834))/step), ratio $(awk -v a="$nodec_ir" -v b="$hand_ir" 'BEGIN{printf "%.2f", a/b}')"
    echo "  whole process: nodec run $P1 $cli_ir, nodec run models/lorenz.node $cli_lorenz_ir"
fi

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
: > "$scratch/hand"; : > "$scratch/nodec"; : > "$scratch/cli"; : > "$scratch/e2e"
for _ in $(seq "$pairs"); do
    taskset -c "$cpu" "$HAND" p1 101 | awk '{print $3}' >> "$scratch/hand"
    taskset -c "$cpu" "$SMALL" 101 | awk '{print $3}' >> "$scratch/nodec"
    taskset -c "$cpu" "$NODEC" run "$P1" --format json \
        | sed -n 's/.*"solve_seconds": \([0-9.e-]*\).*/\1/p' >> "$scratch/cli"
    start=$(date +%s%N)
    taskset -c "$cpu" "$NODEC" run models/lorenz.node > /dev/null
    echo "$(( $(date +%s%N) - start ))e-9" >> "$scratch/e2e"
done
hand=$(median < "$scratch/hand"); nodec=$(median < "$scratch/nodec")
echo "wall (taskset -c $cpu, $pairs interleaved pairs, medians):"
echo "  P1 hand $hand s, nodec in process $nodec s, ratio $(awk -v a="$nodec" -v b="$hand" 'BEGIN{printf "%.2f", a/b}')"
echo "  P1 CLI solve_seconds (interpreted until the field's code is ready) $(median < "$scratch/cli") s"
echo "  nodec run models/lorenz.node end to end $(median < "$scratch/e2e") s"

: > "$scratch/eh"; : > "$scratch/en"
for _ in $(seq "$pairs"); do
    taskset -c 0,1 "$HAND" ensemble 5 | awk '{print $3}' >> "$scratch/eh"
    start=$(date +%s%N)
    RAYON_NUM_THREADS=2 taskset -c 0,1 "$NODEC" run "$P1" --ensemble 'x0=1:2.023:1024' \
        --out "$scratch/rows.npy" > /dev/null
    echo "$(( $(date +%s%N) - start ))e-9" >> "$scratch/en"
done
eh=$(median < "$scratch/eh"); en=$(median < "$scratch/en")
echo "1024 Lorenz x0 = 1 + 1e-3 k, 2 threads (taskset -c 0,1, $pairs interleaved pairs, medians):"
echo "  hand $eh s, nodec CLI (whole process) $en s, ratio $(awk -v a="$en" -v b="$eh" 'BEGIN{printf "%.2f", a/b}')"
