#!/usr/bin/env python3
"""Writes lotka_volterra.csv: five Lotka-Volterra experiments for models/lotka_volterra_fit.node.

    prey' = alpha prey - beta prey pred,   pred' = delta prey pred - gamma pred

with alpha = 1.1, beta = 0.4, gamma = 0.4, delta = 0.1 (equilibrium prey 4, pred 2.75; a cycle
takes about 9.5 time units). Each experiment starts at t = 0 from its own initial state and is
observed on its own grid (15 to 30 evenly spaced times inside [0, 10], not t = 0); each value is
the exact solution times (1 + 0.03 z), z standard normal from random.Random(20261202) drawn
experiment by experiment, row by row, prey then predator. "Exact" is classic RK4 with 20000
steps per time unit (h = 5e-5, error far below the six digits printed).

Columns: exp (the trajectory), t, prey, pred (observed), prey0, pred0 (the experiment's initial
state, the same on each of its rows). Python standard library only: python3 lotka_volterra.py
"""
import os
import random

ALPHA, BETA, GAMMA, DELTA = 1.1, 0.4, 0.4, 0.1
STEPS_PER_UNIT = 20000

# (name, initial prey, initial pred, first time, last time, observations)
EXPERIMENTS = [
    ("A", 10.0, 5.0, 0.5, 10.0, 30),
    ("B", 6.0, 2.0, 0.25, 7.25, 15),
    ("C", 3.0, 6.0, 1.0, 9.0, 25),
    ("D", 8.0, 1.5, 0.4, 6.0, 20),
    ("E", 2.0, 3.0, 2.0, 10.0, 17),
]


def field(x, y):
    return ALPHA * x - BETA * x * y, DELTA * x * y - GAMMA * y


def rk4(x, y, t0, t1):
    n = max(1, round((t1 - t0) * STEPS_PER_UNIT))
    h = (t1 - t0) / n
    for _ in range(n):
        k1 = field(x, y)
        k2 = field(x + h / 2 * k1[0], y + h / 2 * k1[1])
        k3 = field(x + h / 2 * k2[0], y + h / 2 * k2[1])
        k4 = field(x + h * k3[0], y + h * k3[1])
        x += h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        y += h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return x, y


def main():
    rng = random.Random(20261202)
    lines = ["exp,t,prey,pred,prey0,pred0"]
    for name, x0, y0, first, last, count in EXPERIMENTS:
        times = [round(first + (last - first) * k / (count - 1), 4) for k in range(count)]
        x, y, t = x0, y0, 0.0
        for tk in times:
            x, y = rk4(x, y, t, tk)
            t = tk
            prey = x * (1 + 0.03 * rng.gauss(0.0, 1.0))
            pred = y * (1 + 0.03 * rng.gauss(0.0, 1.0))
            lines.append(f"{name},{tk:g},{prey:.6g},{pred:.6g},{x0:g},{y0:g}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lotka_volterra.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
