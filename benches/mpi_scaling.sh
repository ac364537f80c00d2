#!/usr/bin/env bash
# Scaling of the `mpi` feature on this machine (docs/mpi.md has the figures and what they imply
# for a cluster). For an ensemble of `models/lorenz.node` and for training
# `models/digits_odenet.node` (epochs shortened), wall seconds of
#   1 rank × 1 thread, 1 rank × 2 threads, 2 ranks × 1 thread
# with the same work (strong scaling), and 1 × 1 against 2 × 1 with twice the work (weak
# scaling: ensemble members doubled, training epochs doubled). Then the bytes communicated per
# optimizer step, counted by nodec itself (`NODEC_MPI_TRAFFIC=1`: bytes gathered on rank 0 and
# broadcast) for digits_odenet and benches/data/wide/mnist_sized.node on 2 ranks.
#
# Usage: benches/mpi_scaling.sh   (MEMBERS=N ensemble size, default 20000; EPOCHS=N, default 2)
# NODEC=path/to/nodec skips the build (it must be built with `--features mpi`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${NODEC:-}" ]]; then
    cargo build --release --features mpi --quiet
    target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    NODEC="$target/release/nodec"
fi
members="${MEMBERS:-20000}"
epochs="${EPOCHS:-2}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
csv="$PWD/models/data/digits.csv"

# A copy of a model with its epochs replaced and its data path absolute.
edited() { # MODEL EPOCHS OUT
    sed -e "s/epochs = [0-9]*/epochs = $2/" -e "s#\"data/digits.csv\"#\"$csv\"#" "$1" > "$3"
}
seconds() { # RANKS THREADS ARGS...
    local ranks="$1" threads="$2"
    shift 2
    local start end
    start=$(date +%s.%N)
    RAYON_NUM_THREADS="$threads" mpirun --oversubscribe --allow-run-as-root --bind-to none -n "$ranks" \
        -x RAYON_NUM_THREADS "$NODEC" "$@" > /dev/null 2>&1
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
}
ensemble() { # MEMBERS
    echo run models/lorenz.node --ensemble 'rho~uniform(20,30),sigma~uniform(8,12)' \
        --members "$1" --seed 1 --out "$scratch/rows.csv"
}

edited models/digits_odenet.node "$epochs" "$scratch/digits.node"
edited models/digits_odenet.node "$((2 * epochs))" "$scratch/digits2.node"
printf '%-34s %10s %10s %10s\n' "workload" "1r×1t s" "1r×2t s" "2r×1t s"
# shellcheck disable=SC2046
printf '%-34s %10s %10s %10s\n' "ensemble, $members members" \
    "$(seconds 1 1 $(ensemble "$members"))" "$(seconds 1 2 $(ensemble "$members"))" \
    "$(seconds 2 1 $(ensemble "$members"))"
# shellcheck disable=SC2046
printf '%-34s %10s %10s %10s\n' "ensemble, $((2 * members)) members (weak)" \
    "$(seconds 1 1 $(ensemble $((2 * members))))" "-" \
    "$(seconds 2 1 $(ensemble $((2 * members))))"
printf '%-34s %10s %10s %10s\n' "digits_odenet train, $epochs epochs" \
    "$(seconds 1 1 train "$scratch/digits.node" --quiet --out "$scratch/p.json")" \
    "$(seconds 1 2 train "$scratch/digits.node" --quiet --out "$scratch/p.json")" \
    "$(seconds 2 1 train "$scratch/digits.node" --quiet --out "$scratch/p.json")"
printf '%-34s %10s %10s %10s\n' "digits_odenet train, $((2 * epochs)) epochs (weak)" \
    "$(seconds 1 1 train "$scratch/digits2.node" --quiet --out "$scratch/p.json")" "-" \
    "$(seconds 2 1 train "$scratch/digits2.node" --quiet --out "$scratch/p.json")"

echo
echo "bytes per optimizer step on 2 ranks (one epoch; steps = mini-batches of the epoch):"
edited models/digits_odenet.node 1 "$scratch/digits1.node"
edited benches/data/wide/mnist_sized.node 1 "$scratch/mnist1.node"
for model in "$scratch/digits1.node" "$scratch/mnist1.node"; do
    traffic=$(NODEC_MPI_TRAFFIC=1 RAYON_NUM_THREADS=1 mpirun --oversubscribe --allow-run-as-root --bind-to none \
        -n 2 -x NODEC_MPI_TRAFFIC -x RAYON_NUM_THREADS "$NODEC" train "$model" --quiet \
        --out "$scratch/p.json" 2>&1 >/dev/null | grep '^mpi:')
    params=$("$NODEC" ir "$model" --stats 2>/dev/null | grep -io 'param[a-z ]*: *[0-9]*' | head -1 || true)
    echo "$(basename "$model"): $traffic ${params:+($params)}"
done
