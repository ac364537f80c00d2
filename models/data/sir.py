#!/usr/bin/env python3
"""Writes sir.csv: noisy daily counts of an SIR epidemic for models/sir_fit.node.

    S' = -beta S I / N,   I' = beta S I / N - gamma I,   R' = gamma I

with beta = 0.5 and gamma = 0.2 per day (R0 = 2.5), a population N = 10000 and 20 people
infected at day 0 (S = 9980, R = 0). Each day 1 to 80 reports how many are infected and how many
have recovered, each the exact count times (1 + 0.05 z), z standard normal from
random.Random(20261202) drawn day by day, infected then recovered, rounded to a whole number of
people. "Exact" is classic RK4 with 10000 steps per day (error far below one person).

Columns: day, infected, recovered. Python standard library only: python3 sir.py
"""
import os
import random

BETA, GAMMA, N = 0.5, 0.2, 10000.0
S0, I0, R0 = N - 20.0, 20.0, 0.0
DAYS = 80
STEPS_PER_DAY = 10000


def field(s, i, r):
    infection = BETA * s * i / N
    recovery = GAMMA * i
    return -infection, infection - recovery, recovery


def rk4(y, t0, t1):
    n = max(1, round((t1 - t0) * STEPS_PER_DAY))
    h = (t1 - t0) / n
    for _ in range(n):
        k1 = field(*y)
        k2 = field(*(a + h / 2 * b for a, b in zip(y, k1)))
        k3 = field(*(a + h / 2 * b for a, b in zip(y, k2)))
        k4 = field(*(a + h * b for a, b in zip(y, k3)))
        y = tuple(a + h / 6 * (b + 2 * c + 2 * d + e) for a, b, c, d, e in zip(y, k1, k2, k3, k4))
    return y


def main():
    rng = random.Random(20261202)
    lines = ["day,infected,recovered"]
    y = (S0, I0, R0)
    for day in range(1, DAYS + 1):
        y = rk4(y, day - 1, day)
        infected = round(y[1] * (1 + 0.05 * rng.gauss(0.0, 1.0)))
        recovered = round(y[2] * (1 + 0.05 * rng.gauss(0.0, 1.0)))
        lines.append(f"{day},{infected},{recovered}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sir.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
