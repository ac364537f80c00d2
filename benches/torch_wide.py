#!/usr/bin/env python3
"""PyTorch (f64, eager, CPU) peer of `benches/wide.rs`: the solve and the gradient of
`wide_1024` and `mnist_sized` at batch 256, `dx/dt = K2 tanh(K1 x + b1)`, classic RK4 x 4 on
[0, 1], `x(0) = K0 u` (`E u`), loss = mean over samples of `sumsq(head x(1))` or
`cross_entropy(head x(1), y)`.

It starts from nodec's own parameters and data, which `cargo bench --bench wide` writes to
`<target>/wide-export/MODEL.json` (with nodec's loss and gradient), and checks that it computes
the same loss and gradient before it reports times. Not part of CI: PyTorch is not a project
dependency.

Usage: python3 benches/torch_wide.py [EXPORT_DIR] [--nodec PATH/TO/nodec] [--rounds N (7)]
(default EXPORT_DIR: target/wide-export). With --nodec it also times the release binary's
`run` and `grad` (their reported `solve_seconds` and `gradient_seconds`, which exclude the
compile) in turn with PyTorch, round by round, and prints the median of the per-round ratios:
on a shared machine whose load drifts, separately timed medians are not comparable.
On a loaded machine set OMP_NUM_THREADS=1: PyTorch's OpenMP threads stall one another when one
of them is descheduled, and its times then vary by an order of magnitude between runs.

Each round also times PyTorch's first call in a fresh Python process (`--first-call`: torch
imported and the data loaded before the clock starts), the like-for-like peer of one cold
`nodec run` or `nodec grad`: what a script that solves once pays.

Each round also compares CPU time (user + system, all threads), which other users of a shared
machine disturb far less than wall time: PyTorch's is the calling process's over the call;
nodec's is the whole child process's (start-up, parsing, drawing the seed-0 parameters and
printing included, so the comparison leans against nodec). With 2 threads, PyTorch's CPU time
includes its OpenMP threads' spin-waiting, so there the wall-time ratio is the one to quote.
"""

import csv
import json
import os
import resource
import subprocess
import sys
import time

import torch

torch.set_default_dtype(torch.float64)


def load(path):
    with open(path) as f:
        e = json.load(f)
    n, din, d, w = e["n"], e["input_dim"], e["state"], e["width"]
    names = list(e["params"].keys())  # K0 (or E), K1, b1, K2, head
    shapes = [(d, din), (w, d), (w,), (d, w), (10, d)]
    params = [
        torch.tensor(e["params"][k]).reshape(s).requires_grad_(True)
        for k, s in zip(names, shapes)
    ]
    u = torch.tensor(e["inputs"]).reshape(n, din)
    y = torch.tensor(e["labels"]).long() if e["labels"] is not None else None
    return e, names, params, u, y


def loss_fn(e, params, u, y):
    k0, k1, b1, k2, head = params
    steps = e["steps"]
    h = 1.0 / steps

    # Batch-major rows (samples x components), the layout PyTorch code is written in.
    def f(x):
        return torch.tanh(x @ k1.T + b1) @ k2.T

    x = u @ k0.T
    # The same RK4 as nodec's `rk_step`: stages y + (h a) k, then y += h (sum of b_j k_j).
    for _ in range(steps):
        s1 = f(x)
        s2 = f(x + (h * 0.5) * s1)
        s3 = f(x + (h * 0.5) * s2)
        s4 = f(x + h * s3)
        x = x + h * (s1 / 6.0 + s2 / 3.0 + s3 / 3.0 + s4 / 6.0)
    logits = x @ head.T
    if e["cost"] == "sumsq":
        return (logits * logits).sum(dim=1).mean()
    return torch.nn.functional.cross_entropy(logits, y)


def median_seconds(fn, rounds):
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def timed(fn):
    """Wall and CPU seconds of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def nodec_seconds(nodec, command, model, key, loss):
    """One `nodec run|grad` of the model (seed 0: the exported parameters): its reported
    seconds for `key` and the process's CPU seconds, after checking that it computed the
    exported loss."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "wide", f"{model}.node")
    cpu = children_cpu()
    out = subprocess.run(
        [nodec, command, path, "--format", "json"], capture_output=True, check=True, text=True
    )
    cpu = children_cpu() - cpu
    report = json.loads(out.stdout)
    if abs(report["loss"] - loss) > 1e-12 * abs(loss):
        sys.exit(f"{model}: `nodec {command}` computed {report['loss']}, not {loss}")
    return report["stats"][key], cpu


def first_call_seconds(export, model, what):
    """The wall seconds of PyTorch's first `what` call in a fresh Python process (torch
    imported and the exported parameters and data loaded first, untimed): what a script that
    solves once pays, as nodec's release binary does."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--first-call", export, model, what],
        capture_output=True,
        check=True,
        text=True,
    )
    return float(out.stdout)


def interleaved(model, nodec, loss, solve, gradient, rounds=7, export=None):
    """nodec over PyTorch, the median and range of per-round ratios; each round takes the
    fastest of 3 PyTorch calls, as nodec's figure is one call. Wall time: nodec's reported
    seconds over PyTorch's; CPU time: see the module docs. With `export`, each round also
    times PyTorch's first call in a fresh process ("cold"), against the same nodec call."""
    ratios = {
        (what, clock): []
        for what in ("solve", "gradient")
        for clock in ("wall", "cpu") + (("wall, PyTorch's first call",) if export else ())
    }
    for _ in range(rounds):
        for what, command, key, fn in [
            ("solve", "run", "solve_seconds", solve),
            ("gradient", "grad", "gradient_seconds", gradient),
        ]:
            wall, cpu = nodec_seconds(nodec, command, model, key, loss)
            calls = [timed(fn) for _ in range(3)]
            ratios[(what, "wall")].append(wall / min(c[0] for c in calls))
            ratios[(what, "cpu")].append(cpu / min(c[1] for c in calls))
            if export:
                cold = first_call_seconds(export, model, what)
                ratios[(what, "wall, PyTorch's first call")].append(wall / cold)
    for (what, clock), r in ratios.items():
        r.sort()
        print(
            f"{model} batch 256 {what} ratio nodec (release binary) / PyTorch, {clock} time: "
            f"{r[len(r) // 2]:.3f} (range {r[0]:.3f}-{r[-1]:.3f}, {rounds} interleaved rounds)"
        )


def nodec_epochs(nodec, model, epochs):
    """Seconds per warm epoch of `nodec train` on the whole batch of 256 (one gradient and one
    Adam step an epoch, as a user trains): the model file with its `train` line set to
    `epochs` full-batch epochs, timed by `--log`; the first epoch (cold caches, first touch
    of the process's memory) is dropped, the median of the others returned."""
    import re
    import tempfile

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "wide", f"{model}.node")
    with open(path) as f:
        text = f.read()
    text, n = re.subn(r"(?m)^train .*$", f"train adam(lr = 0.001, epochs = {epochs}, batch = 256)", text)
    if n != 1:
        sys.exit(f"{model}: no single `train` line to replace")
    with tempfile.TemporaryDirectory() as tmp:
        node, log = os.path.join(tmp, f"{model}.node"), os.path.join(tmp, "log.csv")
        with open(node, "w") as f:
            f.write(text)
        subprocess.run(
            [nodec, "train", node, "--log", log, "--out", os.path.join(tmp, "p.json"), "--quiet"],
            check=True,
        )
        with open(log) as f:
            rows = list(csv.DictReader(f))
    ends = [float(r["seconds"]) for r in rows]
    per_epoch = sorted(b - a for a, b in zip(ends, ends[1:]))
    return per_epoch[len(per_epoch) // 2]


def interleaved_training(model, nodec, e, params, u, y, rounds, epochs=8):
    """Warm training steps, nodec over PyTorch: each round one `nodec train` of `epochs`
    full-batch epochs (median warm epoch) against `epochs` PyTorch steps (gradient, then
    `torch.optim.Adam`; median), the two interleaved round by round."""
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(leaves, lr=0.001)

    def step():
        opt.zero_grad()
        loss_fn(e, leaves, u, y).backward()
        opt.step()

    ratios = []
    for _ in range(rounds):
        ours = nodec_epochs(nodec, model, epochs)
        step()  # warm-up
        theirs = sorted(timed(step)[0] for _ in range(epochs - 1))
        ratios.append(ours / theirs[len(theirs) // 2])
    ratios.sort()
    print(
        f"{model} batch 256 training step (gradient + Adam) ratio nodec `train --log` warm "
        f"epoch / PyTorch: {ratios[len(ratios) // 2]:.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f}, "
        f"{rounds} interleaved rounds)"
    )


def first_call(export, model, what):
    """`--first-call`: prints the wall seconds of this process's first `what` call."""
    e, _, params, u, y = load(os.path.join(export, f"{model}.json"))
    start = time.perf_counter()
    if what == "solve":
        with torch.no_grad():
            loss_fn(e, params, u, y)
    else:
        torch.autograd.grad(loss_fn(e, params, u, y), params)
    print(time.perf_counter() - start)


def main():
    args = sys.argv[1:]
    if args[:1] == ["--first-call"]:
        first_call(*args[1:4])
        return
    nodec = None
    if "--nodec" in args:
        i = args.index("--nodec")
        nodec = args[i + 1]
        del args[i : i + 2]
    rounds = 7
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i : i + 2]
    export = args[0] if args else "target/wide-export"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float64, eager")
    for model in ["wide_1024", "mnist_sized"]:
        path = os.path.join(export, f"{model}.json")
        if not os.path.exists(path):
            print(f"{model}: no {path}; run `cargo bench --bench wide` first")
            continue
        e, names, params, u, y = load(path)
        loss = loss_fn(e, params, u, y)
        grads = torch.autograd.grad(loss, params)
        loss_diff = abs(loss.item() - e["nodec_loss"]) / abs(e["nodec_loss"])
        diff, scale = 0.0, 0.0
        for name, g in zip(names, grads):
            ref = torch.tensor(e["nodec_grad"][name]).reshape(g.shape)
            diff = max(diff, (g - ref).abs().max().item())
            scale = max(scale, ref.abs().max().item())
        print(
            f"{model}: loss torch {loss.item():.15e} nodec {e['nodec_loss']:.15e} "
            f"(rel. diff. {loss_diff:.1e}); gradient max diff / max |g| {diff / scale:.1e}"
        )
        if loss_diff > 1e-12 or diff / scale > 1e-10:
            sys.exit(f"{model}: PyTorch and nodec disagree")

        def solve():
            with torch.no_grad():
                loss_fn(e, params, u, y)

        def gradient():
            torch.autograd.grad(loss_fn(e, params, u, y), params)

        print(
            f"{model} batch 256: solve {median_seconds(solve, 41) * 1e3:.2f} ms, "
            f"gradient {median_seconds(gradient, 21) * 1e3:.2f} ms (medians)"
        )
        if nodec is not None:
            interleaved(model, nodec, e["nodec_loss"], solve, gradient, rounds, export)
            interleaved_training(model, nodec, e, params, u, y, rounds)


if __name__ == "__main__":
    main()
