#!/usr/bin/env python3
"""Writes bouncing_ball.csv: heights of a bouncing ball for models/bouncing_ball.node.

A ball dropped at rest from h0 = 10 m (g = 9.81 m/s^2) keeps e = 0.8 of its speed at each
bounce. It first lands at t1 = sqrt(2 h0 / g) with speed v1 = g t1; bounce k (from 1) is at
t_k = t1 (1 + 2 (e - e^k) / (1 - e)), after which h(t) = e^k v1 (t - t_k) - g (t - t_k)^2 / 2.
The heights are exact (closed form), at t = 0.25, 0.5, ..., 4.0 s (two bounces).

Columns: t, h. Python standard library only: python3 bouncing_ball.py
"""
import math
import os

G, H0, E = 9.81, 10.0, 0.8


def height(t):
    t1 = math.sqrt(2.0 * H0 / G)
    if t < t1:
        return H0 - 0.5 * G * t * t
    v1 = G * t1
    k = 1
    while True:
        tk = t1 * (1.0 + 2.0 * (E - E**k) / (1.0 - E))
        next_tk = t1 * (1.0 + 2.0 * (E - E ** (k + 1)) / (1.0 - E))
        if t < next_tk:
            tau = t - tk
            return E**k * v1 * tau - 0.5 * G * tau * tau
        k += 1


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bouncing_ball.csv")
    with open(path + ".tmp", "w") as f:
        f.write("t,h\n")
        for i in range(1, 17):
            t = 0.25 * i
            f.write(f"{t},{height(t)!r}\n")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
