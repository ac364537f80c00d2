# Copied from the team desk (../shared/bench/peers/scripts/seed_models_torch.py, 2026-12-03) so that
# benches/seed_models.py runs from the repository alone; unchanged below this header.
"""Faithful float64 PyTorch re-implementations of the .node example models
in shared/examples/, trained with the files' own settings.

Usage:  python seed_models_torch.py MODEL [--seed S] [--set key=value ...] [--out results.jsonl]

Conventions (see README.md in this folder):
  * schedule = fixed-step integrator with the file's steps on [T0, T1];
    `per layer` params: one copy per step, all RK stages of step n use copy n.
  * running cost is integrated by the same scheme as an extra quadrature state.
  * loss on a minibatch = mean_batch(terminal + int running) + penalty.
  * Adam(lr) with torch defaults (betas 0.9/0.999, eps 1e-8); minibatches from a
    fresh permutation each epoch (generator seeded with the train seed).
  * `~ normal(0, s)` params are drawn from torch.Generator(seed = --seed).
  * gradient: exact backprop through the discrete schedule (also for the
    file that asks for `gradient = adjoint`; with rk4 x10 the difference is O(h^4)).
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)

# --------------------------------------------------------------------------- data


def spirals(n, noise, seed, turns_deg=540.0, scale=1.0 / 3.0, jitter=0.5):
    """FFJORD / OT-Flow `2spirals` (toy_data.py):
        n_ = sqrt(U) * 540 * 2pi/360 ;  d1 = (-cos(n_) n_ + jitter*U, sin(n_) n_ + jitter*U)
        x = [d1; -d1] * scale (=/3) ; x += noise * N(0, I)
    n is the total number of samples (n/2 per class, class 0 = d1, class 1 = -d1)."""
    rng = np.random.RandomState(seed)
    m = n // 2
    t = np.sqrt(rng.rand(m, 1)) * turns_deg * (2 * np.pi) / 360
    d1x = -np.cos(t) * t + rng.rand(m, 1) * jitter
    d1y = np.sin(t) * t + rng.rand(m, 1) * jitter
    x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) * scale
    x = x + rng.randn(*x.shape) * noise
    y = np.hstack((np.zeros(m), np.ones(m)))
    return x, y


def get_data(name, n, noise, seed, **kw):
    if name == "moons":
        x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    elif name == "circles":
        x, y = make_circles(n_samples=n, noise=noise, random_state=seed, factor=kw.get("factor", 0.5))
    elif name == "spirals":
        x, y = spirals(n, noise, seed, **kw)
    elif name == "normal":
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, kw.get("dim", 2), generator=g).numpy()
        y = np.zeros(n)
    else:
        raise ValueError(name)
    return torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)


# --------------------------------------------------------------------- integrators


def integrate(field, s0, t0, t1, steps, method):
    """Fixed step. s0: tuple of tensors. field(t, s, layer) -> tuple of derivatives.
    Returns final state tuple."""
    h = (t1 - t0) / steps
    s = s0
    for n in range(steps):
        t = t0 + n * h
        if method == "euler":
            k1 = field(t, s, n)
            s = tuple(a + h * b for a, b in zip(s, k1))
        elif method == "rk4":
            k1 = field(t, s, n)
            k2 = field(t + h / 2, tuple(a + h / 2 * b for a, b in zip(s, k1)), n)
            k3 = field(t + h / 2, tuple(a + h / 2 * b for a, b in zip(s, k2)), n)
            k4 = field(t + h, tuple(a + h * b for a, b in zip(s, k3)), n)
            s = tuple(a + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4) for a, b1, b2, b3, b4 in zip(s, k1, k2, k3, k4))
        else:
            raise ValueError(method)
    return s


def bce(p, y):
    eps = 1e-12
    return -(y * torch.log(p.clamp_min(eps)) + (1 - y) * torch.log((1 - p).clamp_min(eps)))


def bce_logits(z, y):
    # identical to bce(sigmoid(z), y) but numerically safe
    return torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")


# -------------------------------------------------------------------------- models


class Model:
    def __init__(self, seed, cfg):
        self.cfg = cfg
        self.g = torch.Generator().manual_seed(seed)
        self.params = {}

    def normal(self, name, shape, std):
        self.params[name] = (torch.randn(shape, generator=self.g) * std).requires_grad_()

    def uniform(self, name, shape, lo, hi):
        self.params[name] = (lo + (hi - lo) * torch.rand(shape, generator=self.g)).requires_grad_()

    def zeros(self, name, shape):
        self.params[name] = torch.zeros(shape).requires_grad_()

    def penalty(self):
        return torch.zeros(())


class Classifier(Model):
    """terminal = bce(sigmoid(head.x + bias), y); metric accuracy."""

    def head_init(self, d):
        self.normal("head", (d,), 0.5)
        self.zeros("bias", ())

    def loss_terms(self, X, Y):
        xT, run = self.flow(X)
        logit = xT @ self.params["head"] + self.params["bias"]
        term = bce_logits(logit, Y)
        per = term + run
        acc = ((torch.sigmoid(logit) > 0.5).double() == Y).double()
        return per.mean() + self.penalty(), {"accuracy": acc.mean().item(), "terminal": term.mean().item(),
                                             "running": float(run.mean().detach()) if torch.is_tensor(run) else 0.0}


class ResNetEuler(Classifier):
    # resnet_euler.node (also lm_resnet.node when schedule == "lm")
    def __init__(self, seed, cfg):
        super().__init__(seed, cfg)
        L, d, w = cfg["steps"], cfg["d"], cfg["w"]
        self.normal("K1", (L, w, d), 0.5)
        self.zeros("b", (L, w))
        self.normal("K2", (L, d, w), 0.5)
        if cfg["schedule"] == "lm":
            self.uniform("kappa", (L,), -0.1, 0.1)
        self.head_init(d)

    def f(self, x, n):
        P = self.params
        return torch.tanh(x @ P["K1"][n].T + P["b"][n]) @ P["K2"][n].T

    def flow(self, X):
        L = self.cfg["steps"]
        h = 1.0 / L
        x = X
        if self.cfg["schedule"] == "euler":
            for n in range(L):
                x = x + h * self.f(x, n)
        elif self.cfg["schedule"] == "lm":
            k = self.params["kappa"]
            xprev = x
            x = x + h * self.f(x, 0)  # first step: plain Euler
            for n in range(1, L):
                xnew = (1 - k[n]) * x + k[n] * xprev + h * self.f(x, n)
                xprev, x = x, xnew
        return x, 0.0

    def penalty(self):
        c = self.cfg.get("penalty", 0.0)
        if c == 0.0:
            return torch.zeros(())
        return c * ((self.params["K1"] ** 2).sum() + (self.params["K2"] ** 2).sum())


class ANODE(Classifier):
    # circles_anode.node
    def __init__(self, seed, cfg):
        super().__init__(seed, cfg)
        d, w = cfg["d"], cfg["w"]
        self.normal("K1", (w, d), 0.5)
        self.zeros("b1", (w,))
        self.normal("K2", (d, w), 0.5)
        self.head_init(d)

    def flow(self, X):
        P, d = self.params, self.cfg["d"]
        x0 = torch.cat([X, torch.zeros(X.shape[0], d - 2)], 1)
        ke = self.cfg["ke"]

        def field(t, s, n):
            x = s[0]
            dx = torch.tanh(x @ P["K1"].T + P["b1"]) @ P["K2"].T
            return dx, ke * 0.5 * (dx ** 2).sum(1)

        xT, q = integrate(field, (x0, torch.zeros(X.shape[0])), 0.0, 1.0, self.cfg["steps"], "rk4")
        return xT, q

    def penalty(self):
        return 1e-4 * ((self.params["K1"] ** 2).sum() + (self.params["K2"] ** 2).sum())


class EvoWeights(Classifier):
    # evolutionary_weights.node
    def __init__(self, seed, cfg):
        super().__init__(seed, cfg)
        d = 2
        self.normal("W0", (d, d), 0.5)
        self.normal("A", (d, d), 0.1)
        self.zeros("B", (d, d))
        self.zeros("b", (d,))
        self.head_init(d)

    def flow(self, X):
        P = self.params

        def field(t, s, n):
            x, W = s
            return torch.tanh(x @ W.T + P["b"]), torch.tanh(P["A"] @ W + P["B"])

        xT, WT = integrate(field, (X, P["W0"]), 0.0, 1.0, self.cfg["steps"], "rk4")
        return xT, 0.0


class CNF(Model):
    # cnf_moons.node
    def __init__(self, seed, cfg):
        super().__init__(seed, cfg)
        w = cfg["w"]
        self.normal("W1", (w, 3), 0.3)
        self.zeros("b1", (w,))
        self.normal("W2", (2, w), 0.3)

    def loss_terms(self, X, Y):
        P = self.params
        B = X.shape[0]
        ke = self.cfg["ke"]
        # trace(d field/dz) = sum_j (1 - tanh(a_j)^2) * sum_{i<2} W2[i,j] W1[j,i]
        c = (P["W2"][0] * P["W1"][:, 0] + P["W2"][1] * P["W1"][:, 1])

        def field(t, s, n):
            z = s[0]
            a = z @ P["W1"][:, :2].T + t * P["W1"][:, 2] + P["b1"]
            th = torch.tanh(a)
            f = th @ P["W2"].T
            div = (1 - th ** 2) @ c
            return f, div, ke * 0.5 * (f ** 2).sum(1)

        zT, logdet, q = integrate(field, (X, torch.zeros(B), torch.zeros(B)), 0.0, 1.0, self.cfg["steps"], "rk4")
        nll = 0.5 * (zT ** 2).sum(1) + math.log(2 * math.pi) - logdet
        return (nll + q).mean(), {"nll": nll.mean().item(), "running": q.mean().item()}


class Crowd(Model):
    # crowd_motion.node
    def __init__(self, seed, cfg):
        super().__init__(seed, cfg)
        w = cfg["w"]
        self.normal("W1", (w, 3), 0.5)
        self.zeros("b1", (w,))
        self.normal("a", (w,), 0.5)

    def traj(self, X, t_eval=False):
        P = self.params
        B = X.shape[0]
        z0 = torch.stack([0.3 * X[:, 0], 0.3 * X[:, 1] - 2], 1)
        target = torch.tensor([0.0, 2.0])

        def vel(t, z):
            a = z @ P["W1"][:, :2].T + t * P["W1"][:, 2] + P["b1"]
            # grad_z a . softplus(W1 [z,t] + b1) = W1[:, :2]^T (a * sigmoid(.))
            return -(torch.sigmoid(a) * P["a"]) @ P["W1"][:, :2]

        def running(t, z):
            v = vel(t, z)
            ke = 0.5 * (v ** 2).sum(1)
            ob = 5 * torch.exp(-(z ** 2).sum(1) / 0.5)
            return v, ke, ob

        def field(t, s, n):
            z = s[0]
            v, ke, ob = running(t, z)
            return v, ke, ob

        zT, qke, qob = integrate(field, (z0, torch.zeros(B), torch.zeros(B)), 0.0, 1.0, self.cfg["steps"], "rk4")
        term = 10 * ((zT - target) ** 2).sum(1)
        miss = (zT - target).norm(dim=1)
        extra = {}
        if t_eval:
            _, ke0, ob0 = running(0.0, z0)
            _, ke1, ob1 = running(1.0, zT)
            extra = {"L_at_t0": (ke0 + ob0).mean().item(), "L_at_t1": (ke1 + ob1).mean().item()}
        return term, qke, qob, miss, extra

    def loss_terms(self, X, Y, t_eval=False):
        term, qke, qob, miss, extra = self.traj(X, t_eval)
        m = {"miss": miss.mean().item(), "running": (qke + qob).mean().item(), "kinetic": qke.mean().item(),
             "obstacle": qob.mean().item(), "terminal": term.mean().item()}
        m.update(extra)
        return (term + qke + qob).mean(), m


MODELS = {
    "resnet_euler": dict(cls=ResNetEuler, data=("moons", 512, 0.1, 1), train=(0.02, 200, 64, 2),
                         cfg=dict(steps=10, d=2, w=8, schedule="euler", penalty=1e-4)),
    "lm_resnet": dict(cls=ResNetEuler, data=("spirals", 512, 0.05, 4), train=(0.01, 300, 64, 5),
                      cfg=dict(steps=10, d=2, w=8, schedule="lm", penalty=0.0)),
    "circles_anode": dict(cls=ANODE, data=("circles", 1024, 0.05, 1), train=(0.01, 300, 128, 7),
                          cfg=dict(steps=10, d=3, w=16, ke=0.01)),
    "evolutionary_weights": dict(cls=EvoWeights, data=("moons", 512, 0.1, 11), train=(0.02, 200, 64, 12),
                                 cfg=dict(steps=20)),
    "cnf_moons": dict(cls=CNF, data=("moons", 2048, 0.05, 3), train=(0.005, 150, 256, 9),
                      cfg=dict(steps=8, w=32, ke=0.05)),
    "crowd_motion": dict(cls=Crowd, data=("normal", 512, None, 21), train=(0.01, 200, 128, 22),
                         cfg=dict(steps=10, w=16)),
}


def parse_val(v):
    for f in (int, float):
        try:
            return f(v)
        except ValueError:
            pass
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="cfg/train/data overrides: lr= epochs= batch= noise= "
                    "turns_deg= scale= factor= d= w= steps= ...")
    ap.add_argument("--out", default="results.jsonl")
    ap.add_argument("--log_every", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--test_seed", type=int, default=None, help="also evaluate on a fresh sample (same generator, this seed)")
    a = ap.parse_args()
    spec = MODELS[a.model]
    cfg = dict(spec["cfg"])
    dname, n, noise, dseed = spec["data"]
    lr, epochs, batch, tseed = spec["train"]
    dkw = {}
    ov = dict(s.split("=", 1) for s in a.set)
    ov = {k: parse_val(v) for k, v in ov.items()}
    lr = ov.pop("lr", lr)
    epochs = ov.pop("epochs", epochs)
    batch = ov.pop("batch", batch)
    noise = ov.pop("noise", noise)
    n = ov.pop("n", n)
    for k in ("turns_deg", "scale", "jitter", "factor"):
        if k in ov:
            dkw[k] = ov.pop(k)
    cfg.update(ov)
    if dname == "normal":
        X, Y = get_data("normal", n, None, dseed, dim=2)
    else:
        X, Y = get_data(dname, n, noise, dseed, **dkw)
    model = spec["cls"](a.seed, cfg)
    params = list(model.params.values())
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(tseed)
    extra_eval = {"t_eval": True} if a.model == "crowd_motion" else {}
    with torch.no_grad():
        loss0, m0 = model.loss_terms(X, Y, **extra_eval)
    hist = []
    t0 = time.time()
    N = X.shape[0]
    for ep in range(epochs):
        perm = torch.randperm(N, generator=g)
        for i in range(0, N, batch):
            idx = perm[i:i + batch]
            loss, _ = model.loss_terms(X[idx], Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if a.log_every and (ep + 1) % a.log_every == 0:
            with torch.no_grad():
                l, m = model.loss_terms(X, Y)
            hist.append({"epoch": ep + 1, "loss": l.item(), **m})
            print(json.dumps(hist[-1]), file=sys.stderr, flush=True)
    wall = time.time() - t0
    with torch.no_grad():
        loss1, m1 = model.loss_terms(X, Y, **extra_eval)
    test = None
    if a.test_seed is not None:
        Xt, Yt = get_data(dname, n, noise, a.test_seed, **dkw)
        with torch.no_grad():
            lt, test = model.loss_terms(Xt, Yt)
        test["loss"] = lt.item()
    rec = {"model": a.model, "tag": a.tag, "seed": a.seed, "overrides": a.set, "lr": lr, "epochs": epochs,
           "batch": batch, "noise": noise, "data_kw": dkw, "cfg": cfg, "wall_s": round(wall, 2),
           "loss_init": loss0.item(), "metrics_init": m0, "loss_final": loss1.item(), "metrics_final": m1, "test": test,
           "history": hist}
    if "kappa" in model.params:
        rec["kappa"] = model.params["kappa"].detach().tolist()
    print(json.dumps({k: v for k, v in rec.items() if k != "history"}))
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
