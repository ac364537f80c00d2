#!/usr/bin/env python3
"""Reference solution of models/brusselator.node (N = 40) by SciPy, written to
tests/data/reference/brusselator.json; and, with --bench N, SciPy BDF's time on the same problem
with and without a sparsity pattern (benches/stiff.sh calls it).

The right-hand side is written here from the equations of Hairer & Wanner II, section IV.10, not
from nodec: u' = 1 + u^2 v - 4u + alpha (u_{j-1} - 2u_j + u_{j+1})/h^2, v' likewise with
3u - u^2 v, alpha = 1/50, u = 1 and v = 3 at x = 0 and 1, u(0, x) = 1 + sin(2 pi x), v(0, x) = 3.
State order [u_1..u_N, v_1..v_N], as the model declares u then v.

The reference is Radau (order 5) at rtol 1e-12 with the exact sparse Jacobian, cross-checked
with BDF at rtol 1e-12; the largest difference between the two is stored as est_abs_error.
"""
import json
import sys
import time

import numpy as np
import scipy
from scipy.integrate import solve_ivp
from scipy.sparse import diags, bmat

ALPHA = 1.0 / 50.0


def problem(n):
    h = 1.0 / (n + 1)
    x = np.linspace(h, 1.0 - h, n)
    c = ALPHA / h**2

    def rhs(_t, y):
        u, v = y[:n], y[n:]
        up = np.concatenate(([1.0], u, [1.0]))
        vp = np.concatenate(([3.0], v, [3.0]))
        lap_u = up[:-2] - 2.0 * u + up[2:]
        lap_v = vp[:-2] - 2.0 * v + vp[2:]
        uuv = u * u * v
        return np.concatenate((1.0 + uuv - 4.0 * u + c * lap_u, 3.0 * u - uuv + c * lap_v))

    lap = diags([np.ones(n - 1), -2.0 * np.ones(n), np.ones(n - 1)], [-1, 0, 1]) * c

    def jac(_t, y):
        u, v = y[:n], y[n:]
        return bmat(
            [
                [lap + diags(2.0 * u * v - 4.0), diags(u * u)],
                [diags(3.0 - 2.0 * u * v), lap + diags(-u * u)],
            ],
            format="csc",
        )

    sparsity = bmat([[lap != 0, diags(np.ones(n))], [diags(np.ones(n)), lap != 0]]) != 0
    y0 = np.concatenate((1.0 + np.sin(2.0 * np.pi * x), 3.0 * np.ones(n)))
    return rhs, jac, sparsity, y0


def reference(n):
    rhs, jac, _, y0 = problem(n)
    t_eval = np.arange(0.0, 11.0)
    runs = {}
    for method in ["Radau", "BDF"]:
        sol = solve_ivp(rhs, (0.0, 10.0), y0, method=method, t_eval=t_eval, rtol=1e-12,
                        atol=1e-12, jac=jac)
        assert sol.success, sol.message
        runs[method] = sol.y.T
    err = float(np.max(np.abs(runs["Radau"] - runs["BDF"])))
    return {
        "problem": "brusselator",
        "model_file": "../../../models/brusselator.node",
        "N": n,
        "equations": [
            "u' = 1 + u^2 v - 4u + (1/50) (u_{j-1} - 2u_j + u_{j+1})/h^2, u_0 = u_{N+1} = 1",
            "v' = 3u - u^2 v + (1/50) (v_{j-1} - 2v_j + v_{j+1})/h^2, v_0 = v_{N+1} = 3",
        ],
        "states": ["u", "v"],
        "t": t_eval.tolist(),
        "u": runs["Radau"][:, :n].tolist(),
        "v": runs["Radau"][:, n:].tolist(),
        "method": f"scipy {scipy.__version__} Radau rtol=1e-12 atol=1e-12, exact sparse Jacobian",
        "est_abs_error": err,
        "cross_check": "scipy BDF rtol=1e-12 atol=1e-12; est_abs_error is the largest difference",
    }


def bench(n, rtol=1e-6, atol=1e-8, repeats=5):
    """SciPy BDF at the model's tolerances, with and without the sparsity pattern."""
    rhs, _, sparsity, y0 = problem(n)
    out = {}
    for label, kw in [("sparse", {"jac_sparsity": sparsity}), ("dense", {})]:
        times = []
        for _ in range(repeats if label == "sparse" else 1):
            t0 = time.perf_counter()
            sol = solve_ivp(rhs, (0.0, 10.0), y0, method="BDF", rtol=rtol, atol=atol, **kw)
            times.append(time.perf_counter() - t0)
            assert sol.success
        out[label] = {"seconds_median": float(np.median(times)), "steps": int(sol.t.size - 1),
                      "nfev": int(sol.nfev), "njev": int(sol.njev), "nlu": int(sol.nlu)}
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bench":
        print(json.dumps({"scipy_bdf": bench(int(sys.argv[2]))}))
    else:
        ref = reference(40)
        path = "tests/data/reference/brusselator.json"
        with open(path + ".tmp", "w") as f:
            json.dump(ref, f, indent=1)
            f.write("\n")
        import os
        os.replace(path + ".tmp", path)
        print(f"wrote {path}; Radau vs BDF max difference {ref['est_abs_error']:.2e}")
