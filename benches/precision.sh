#!/bin/sh
# Instructions per call of one block's rhs and vjp in f64 and f32 (benches/precision.rs),
# counted by callgrind: the difference between runs of N1 and N2 calls, so set-up (model
# compilation, first-call allocation, native code generation) cancels. Wall times are noisy
# on a loaded machine; instruction counts are not (they do not show cache or vector-width
# effects per cycle, only work). N1, N2 and CASES override the counts and cases (wide_1024
# is slow under callgrind: CASES=wide_1024 N1=1 N2=4).
set -eu
cargo bench --bench precision --no-run >/dev/null 2>&1
bin=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/precision-* | grep -v '\.d$' | head -n 1)
n1=${N1:-20}
n2=${N2:-220}
count() {
    NODEC_COUNT="$1,$2,$3,$4" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 2>&1 |
        sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
printf '%-10s %-4s %12s %12s %6s\n' case kern f64 f32 ratio
for c in ${CASES:-p4_d2 p4_d32 wide_1024}; do
    for k in rhs vjp; do
        a1=$(count "$c" f64 "$k" $n1); a2=$(count "$c" f64 "$k" $n2)
        b1=$(count "$c" f32 "$k" $n1); b2=$(count "$c" f32 "$k" $n2)
        f64=$(( (a2 - a1) / (n2 - n1) )); f32=$(( (b2 - b1) / (n2 - n1) ))
        printf '%-10s %-4s %12d %12d %6s\n' "$c" "$k" "$f64" "$f32" \
            "$(awk "BEGIN { printf \"%.2f\", $f64 / $f32 }")"
    done
done
