"""Writes rings.csv, the data of docs/tutorials/classifier.md: 400 points of the plane in two
classes, class 1 inside the circle of radius 1 and class 0 in the ring 1.3 <= r <= 2, with
their coordinates in columns `x` and `y` and the class in `class`. Python's own `random` with a
fixed seed, so running this script again writes the same file."""

import math
import random

rng = random.Random(17)
rows = []
for i in range(400):
    inside = i % 2 == 0
    r = math.sqrt(rng.uniform(0, 1)) if inside else rng.uniform(1.3, 2.0)
    a = rng.uniform(0, 2 * math.pi)
    rows.append((r * math.cos(a), r * math.sin(a), 1 if inside else 0))

with open("rings.csv", "w") as f:
    f.write("x,y,class\n")
    for x, y, c in rows:
        f.write(f"{x:.6f},{y:.6f},{c}\n")
