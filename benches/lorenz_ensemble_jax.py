#!/usr/bin/env python3
"""diffrax peer of the 1024-member Lorenz ensemble (issue 19): P1 Lorenz (sigma 10, rho 28,
beta 8/3) from x0 = 1 + 1e-3 k, y0 = z0 = 1 (k = 0..1023), Dopri5 with a PID controller at
rtol = atol = 1e-8 on [0, 10], final value only: `jax.vmap` over the starts of one jit-compiled
`diffeqsolve`, float64, on the CPU.

The same starts as `nodec run benches/data/p1/lorenz.node --ensemble 'x0=1:2.023:1024'` and
`hand_dopri5 ensemble` (`benches/small_solves.sh`). Prints the compile time (first call minus
the steady state), the median wall time of REPS calls after it, the steps of the slowest member,
and the sum of the final z over the members (the hand-written code prints the same sum, so the
three can be checked against each other before their times are compared).

Not part of CI: JAX is not a project dependency (`pip install jax diffrax`).
The solver set-up follows the peers' `peer_jax.py` (diffrax defaults: I-controller, `dt0=None`).

Usage: python3 benches/lorenz_ensemble_jax.py [REPS (21)]
"""

import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
import diffrax  # noqa: E402

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
MEMBERS = 1024


def lorenz(t, u, args):
    x, y, z = u[0], u[1], u[2]
    return jnp.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z])


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    term = diffrax.ODETerm(lorenz)
    controller = diffrax.PIDController(rtol=1e-8, atol=1e-8)

    def one(y0):
        sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), t0=0.0, t1=10.0, dt0=None, y0=y0,
                                  stepsize_controller=controller, max_steps=1_000_000,
                                  saveat=diffrax.SaveAt(t1=True))
        return sol.ys[-1], sol.stats["num_steps"]

    solve = jax.jit(jax.vmap(one))
    k = jnp.arange(MEMBERS, dtype=jnp.float64)
    y0 = jnp.stack([1.0 + 1e-3 * k, jnp.ones(MEMBERS), jnp.ones(MEMBERS)], axis=1)
    start = time.perf_counter()
    jax.block_until_ready(solve(y0))
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        y, steps = jax.block_until_ready(solve(y0))
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    print(f"diffrax vmap ensemble median_s {median:e} compile_s {first - median:.2f} "
          f"max_steps {int(steps.max())} sum_z {float(y[:, 2].sum())!r} "
          f"(jax {jax.__version__}, diffrax {diffrax.__version__})")


if __name__ == "__main__":
    main()
