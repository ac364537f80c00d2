#!/usr/bin/env python3
"""Training the seed models with their files' settings, one thread each: the release binary
(whole process: start-up, parsing, compiling, training, writing PARAMS.json) against the
PyTorch f64 eager re-implementation in `benches/seed_models_torch.py` (its `wall_s`, the
training loop alone, so the comparison leans against nodec). Not part of CI: PyTorch is not a
project dependency (`pip install torch numpy scikit-learn`).

Rounds are interleaved (nodec, PyTorch, nodec, ...) and the ratio reported is the median of
per-round ratios PyTorch / nodec, with its range: on a shared machine whose load drifts,
separately timed medians are not comparable.

circles_anode's file asks for the continuous adjoint, which the PyTorch version replaces by
backprop through the RK4 steps; it is reported both ways (`circles_anode (backprop)` trains a
copy of the file with `gradient = backprop`).

Usage: python3 benches/seed_models.py [--nodec target/release/nodec] [--rounds 3] [MODEL ...]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = ["resnet_euler", "lm_resnet", "circles_anode", "evolutionary_weights", "cnf_moons",
          "crowd_motion"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENV = dict(os.environ, RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def nodec_seconds(nodec, path, out):
    start = time.perf_counter()
    subprocess.run([nodec, "train", path, "--quiet", "--out", out], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def torch_seconds(model, out):
    run = subprocess.run([sys.executable, os.path.join(HERE, "seed_models_torch.py"), model,
                          "--seed", "0", "--out", out], env=ENV, check=True,
                         capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])["wall_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodec", default=os.path.join(ROOT, "target", "release", "nodec"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("models", nargs="*", default=MODELS)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="nodec-seed-")
    cases = []
    for m in a.models:
        path = os.path.join(ROOT, "models", m + ".node")
        cases.append((m, m, path))
        text = open(path).read()
        if "gradient = adjoint" in text:
            copy = os.path.join(tmp, m + "_backprop.node")
            with open(copy, "w") as f:
                f.write(text.replace("gradient = adjoint", "gradient = backprop"))
            cases.append((m + " (backprop)", m, copy))
    results = {name: ([], []) for name, _, _ in cases}
    for r in range(a.rounds):
        for name, model, path in cases:
            n = nodec_seconds(a.nodec, path, os.path.join(tmp, "params.json"))
            t = torch_seconds(model, os.path.join(tmp, "torch.jsonl"))
            results[name][0].append(n)
            results[name][1].append(t)
            print(f"round {r + 1}: {name}: nodec {n:.2f} s, PyTorch {t:.2f} s", file=sys.stderr)
    print("| model | nodec s (median) | PyTorch f64 s (median) | PyTorch / nodec (median, range) |")
    print("|---|---:|---:|---:|")
    for name, (n, t) in results.items():
        ratios = sorted(b / a for a, b in zip(n, t))
        print(f"| {name} | {statistics.median(n):.2f} | {statistics.median(t):.2f} | "
              f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f}) |")


if __name__ == "__main__":
    main()
