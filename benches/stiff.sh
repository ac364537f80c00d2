#!/usr/bin/env bash
# Stiff solves as a user runs them: the release `nodec` binary on Robertson (`bdf` and `rodas4`,
# interleaved with diffsol's BDF when the peers are built), and the 1-D Brusselator
# (`models/brusselator.node`, 2N equations) with `linear = dense` against `linear = banded`,
# beside SciPy's BDF with and without a sparsity pattern on the same problem when scipy is
# installed (`scripts/brusselator_reference.py --bench N`). Times are the solver's own
# `solve_seconds` from `run --format json` (median of REPS runs), with its step and Jacobian/LU
# counts. Figures and the machine they came from: benches/stiff.md.
#
# Usage: benches/stiff.sh [N ...]   (Brusselator sizes; default 500)
# NODEC=path/to/nodec skips the build; REPS=n (default 7); PEERS="BINARY BENCH_DIR", the team's
# rust-peers binary (built by the peers' run.sh) and its bench folder, adds diffsol's BDF on
# Robertson, timed by that binary (median of 5 after a warm-up, in process).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${NODEC:-}" ]]; then
    cargo build --release --quiet
    target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    NODEC="$target/release/nodec"
fi
REPS="${REPS:-7}"
sizes=("${@:-500}")
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# median solve_seconds and the counts of the last run: prints "ms steps rhs jac lu"
measure() {
    local file="$1"; shift
    for _ in $(seq "$REPS"); do
        "$NODEC" run "$file" --format json "$@" > "$scratch/out.json"
        python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["stats"]
print(s["solve_seconds"], s["steps"], s["rhs_evals"], s["jac_evals"], s["lu_decompositions"])
' "$scratch/out.json"
    done | sort -g | awk -v r="$REPS" 'NR == int((r + 1) / 2) { printf "%9.3f %6d %6d %5d %5d\n", $1 * 1e3, $2, $3, $4, $5 }'
}

printf '%-34s %9s %6s %6s %5s %5s\n' case ms steps rhs jac lu
for method in bdf rodas4; do
    sed "s/rodas4(/$method(/" models/robertson.node > "$scratch/robertson_$method.node"
done
for round in 1 2 3; do
    for method in bdf rodas4; do
        printf '%-34s ' "robertson $method (round $round)"
        measure "$scratch/robertson_$method.node"
    done
    if [[ -n "${PEERS:-}" ]]; then
        # shellcheck disable=SC2086
        $PEERS diffsol 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip().rstrip(",")
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("problem") == "P3_robertson" and r.get("method", "").startswith("bdf"):
        print("%-34s %9.3f %6s" % ("robertson diffsol bdf", r["wall_median_s"] * 1e3, r.get("nsteps", "")))
'
    fi
done
for n in "${sizes[@]}"; do
    for linear in dense banded; do
        sed "s/schedule bdf(t = \[0, 10\], rtol = 1e-6, atol = 1e-8, save = 1)/schedule bdf(t = [0, 10], rtol = 1e-6, atol = 1e-8, save = 1, linear = $linear)/" \
            models/brusselator.node > "$scratch/bruss_$linear.node"
        grep -q "linear = $linear" "$scratch/bruss_$linear.node"
        printf '%-34s ' "brusselator N=$n bdf $linear"
        measure "$scratch/bruss_$linear.node" --set "N=$n"
        sed "s/schedule bdf(/schedule rodas4(/" "$scratch/bruss_$linear.node" > "$scratch/bruss_r_$linear.node"
        printf '%-34s ' "brusselator N=$n rodas4 $linear"
        measure "$scratch/bruss_r_$linear.node" --set "N=$n"
    done
    if python3 -c 'import scipy' 2>/dev/null; then
        python3 scripts/brusselator_reference.py --bench "$n" | python3 -c '
import json, sys
n = sys.argv[1]
for k, r in json.load(sys.stdin)["scipy_bdf"].items():
    print("%-34s %9.3f %6d %6d %5d %5d" % ("brusselator N=%s scipy BDF %s" % (n, k), r["seconds_median"] * 1e3, r["steps"], r["nfev"], r["njev"], r["nlu"]))
' "$n"
    fi
done
