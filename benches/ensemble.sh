#!/usr/bin/env bash
# Ensembles as a user runs them: the release `nodec` binary solving `models/lorenz.node` for many
# members drawn around the classic parameters (`--ensemble 'rho~uniform(20,30),sigma~uniform(8,12)'`),
# rows streamed to an .npy file. Printed per member count: wall seconds, peak RSS (GNU time's %e
# and %M), members per second, and the size of the rows file. Memory should grow only with the
# summary's columns (8 bytes per member and column), not with the trajectories.
#
# Usage: benches/ensemble.sh [MEMBERS ...]   (default: 1000 10000 100000 1000000)
# NODEC=path/to/nodec skips the build; THREADS=N sets RAYON_NUM_THREADS.
# Needs GNU time at /usr/bin/time (`apt-get install time`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x /usr/bin/time ]]; then
    echo "GNU time is needed at /usr/bin/time: apt-get install time" >&2
    exit 2
fi
if [[ -z "${NODEC:-}" ]]; then
    cargo build --release --quiet
    target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    NODEC="$target/release/nodec"
fi
if [[ $# -gt 0 ]]; then
    counts=("$@")
else
    counts=(1000 10000 100000 1000000)
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
printf '%10s %10s %12s %14s %12s\n' members seconds "peak RSS MB" "members/s" "rows MB"
for n in "${counts[@]}"; do
    out="$scratch/rows.npy"
    RAYON_NUM_THREADS="${THREADS:-}" /usr/bin/time -f '%e %M' -o "$scratch/time" \
        "$NODEC" run models/lorenz.node \
        --ensemble 'rho~uniform(20,30),sigma~uniform(8,12)' --members "$n" --seed 1 \
        --out "$out" > /dev/null
    read -r seconds rss_kb < "$scratch/time"
    bytes=$(stat -c %s "$out")
    awk -v n="$n" -v s="$seconds" -v r="$rss_kb" -v b="$bytes" 'BEGIN {
        printf "%10d %10.2f %12.1f %14.0f %12.1f\n", n, s, r / 1024, n / (s > 0 ? s : 1e-9), b / 1e6
    }'
done
