#!/usr/bin/env bash
# Compile cost as a user meets it: the release `nodec` binary on each wide model of
# benches/data/wide/ (same text, growing width), one process per command, timed from outside.
#
# For every model: `nodec run FILE --format json`, `nodec grad FILE --format json` and
# `nodec train FILE` (the models declare `epochs = 1, batch = 64` on 256 samples: one epoch of
# 4 Adam steps, the least `train` can do, since `--set` reaches only consts and params and the
# train arguments are literals). Printed per command: exit status, wall seconds and peak RSS
# (GNU time's %e and %M), the compile seconds nodec reports in its JSON `stats` (parse, check,
# prepare and compile: everything before the first evaluation) and the solve, gradient or
# training seconds it reports. A refused model shows nodec's error.
#
# Usage: benches/compile_cost.sh [MODEL.node ...]   (default: benches/data/wide/*.node)
# REPEAT=N runs each command N times and reports the fastest run (the one least disturbed by
# other work on a shared machine) with the largest peak RSS.
# NODEC=path/to/nodec skips the build. Needs GNU time at /usr/bin/time (`apt-get install time`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x /usr/bin/time ]]; then
    echo "GNU time is needed at /usr/bin/time: apt-get install time" >&2
    exit 2
fi
if [[ -z "${NODEC:-}" ]]; then
    cargo build --release --quiet
    # The build directory may be elsewhere (CARGO_TARGET_DIR); ask cargo where.
    target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    NODEC="$target/release/nodec"
fi

if [[ $# -gt 0 ]]; then
    models=("$@")
else
    # Width order (`sort -V` orders the numbers: wide_64 … wide_4096), then the others.
    mapfile -t models < <(
        printf '%s\n' benches/data/wide/wide_*.node | sort -V
        printf '%s\n' benches/data/wide/*.node | grep -v '/wide_'
    )
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# The number after `"KEY":` in a JSON text (nodec prints its reports pretty, one key a line).
json_number() {
    sed -n "s/.*\"$1\": *\([-0-9.eE+]*\).*/\1/p" "$2" | head -n 1
}

echo "nodec: $NODEC; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-13s %-6s %5s %9s %9s %13s %10s\n' model command exit wall_s compile_s solve/grad/train peak_MiB
for model in "${models[@]}"; do
    name="$(basename "$model" .node)"
    for command in run grad train; do
        case "$command" in
            run) args=(run "$model" --format json) ;;
            grad) args=(grad "$model" --format json) ;;
            # --out keeps the trained parameters off stdout; --log gives the epoch's seconds.
            train) args=(train "$model" --quiet --out "$scratch/params.json" --log "$scratch/log.csv") ;;
        esac
        best=""
        peak_kib=0
        for _ in $(seq "${REPEAT:-1}"); do
            rm -f "$scratch/log.csv"
            status=0
            /usr/bin/time -f '%e %M' -o "$scratch/time" "$NODEC" "${args[@]}" \
                >"$scratch/out.try" 2>"$scratch/err" || status=$?
            # GNU time prefixes a line when the command fails; the figures are on the last line.
            read -r try_wall try_kib < <(tail -n 1 "$scratch/time")
            peak_kib=$((try_kib > peak_kib ? try_kib : peak_kib))
            if [[ -z "$best" ]] || awk "BEGIN { exit !($try_wall < $best) }"; then
                best="$try_wall"
                mv "$scratch/out.try" "$scratch/out"
                if [[ -f "$scratch/log.csv" ]]; then
                    mv "$scratch/log.csv" "$scratch/log.best"
                fi
            fi
        done
        wall="$best"
        peak_mib=$((peak_kib / 1024))
        compile="-"
        work="-"
        if [[ $status -eq 0 ]]; then
            case "$command" in
                run)
                    compile="$(json_number compile_seconds "$scratch/out")"
                    work="$(json_number solve_seconds "$scratch/out")"
                    ;;
                grad)
                    compile="$(json_number compile_seconds "$scratch/out")"
                    work="$(json_number gradient_seconds "$scratch/out")"
                    ;;
                train)
                    # `train` reports no compile time; the log's `seconds` column is the epoch's
                    # training time (found by its header: columns are added over time).
                    work="$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") c = i }
                        END { print $c }' "$scratch/log.best")"
                    ;;
            esac
        fi
        printf '%-13s %-6s %5s %9s %9s %13s %10s\n' \
            "$name" "$command" "$status" "$wall" "${compile:0:7}" "${work:0:7}" "$peak_mib"
        if [[ $status -ne 0 ]]; then
            echo "    $(grep -m 1 'error' "$scratch/err" || head -n 1 "$scratch/err")"
        fi
    done
done
