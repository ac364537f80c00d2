#!/usr/bin/env python3
"""Writes spiral.csv: the trajectory of torchdiffeq's examples/ode_demo.py for models/spiral_fit.node.

    dx/dt = A^T (x^3),   A = [[-0.1, 2.0], [-2.0, -0.1]],   x(0) = (2, 0)

(the demo writes it for a row vector, y' = (y^3) A). Like the demo, 1000 points on [0, 25]
without noise, here every 0.025 from t = 0.025 to 25. "Exact" is classic RK4 with 10000 steps
per time unit (error far below the nine digits printed).

Columns: t, x0, x1. Python standard library only: python3 spiral.py
"""
import os

A = ((-0.1, 2.0), (-2.0, -0.1))
STEPS_PER_UNIT = 10000


def field(x):
    c = (x[0] ** 3, x[1] ** 3)
    return (A[0][0] * c[0] + A[1][0] * c[1], A[0][1] * c[0] + A[1][1] * c[1])


def rk4(x, t0, t1):
    n = max(1, round((t1 - t0) * STEPS_PER_UNIT))
    h = (t1 - t0) / n
    for _ in range(n):
        k1 = field(x)
        k2 = field((x[0] + h / 2 * k1[0], x[1] + h / 2 * k1[1]))
        k3 = field((x[0] + h / 2 * k2[0], x[1] + h / 2 * k2[1]))
        k4 = field((x[0] + h * k3[0], x[1] + h * k3[1]))
        x = (
            x[0] + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]),
            x[1] + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]),
        )
    return x


def main():
    lines = ["t,x0,x1"]
    x, t = (2.0, 0.0), 0.0
    for k in range(1, 1001):
        tk = 0.025 * k
        x = rk4(x, t, tk)
        t = tk
        lines.append(f"{tk:g},{x[0]:.9g},{x[1]:.9g}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spiral.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
