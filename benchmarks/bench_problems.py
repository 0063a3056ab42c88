"""Benchmark problems (issue 3), their weights, and flop counts by formula.

Every problem is a plain NumPy float64 *spec*: a list of layers ``(kind, W, b,
activation, step)`` in the row convention ``z = u @ W + b`` (``W`` of shape
``(in, out)``) plus, for an OT-Flow potential, the quadratic part
``(w, A, c, b0)``.  Every method -- xderiv on each backend and every peer --
is built from the same spec, so all of them evaluate the same function with the
same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Layer:
    kind: str  # "dense" | "residual"
    W: np.ndarray  # (in, out)
    b: np.ndarray  # (out,)
    activation: str
    step: float = 1.0

    @property
    def shape(self):
        return self.W.shape


@dataclass
class Problem:
    family: str  # "P1" .. "P4"
    label: str  # e.g. "P1 d=16 n=10"
    layers: list
    x: np.ndarray  # (n, d) float64
    quantities: tuple
    potential: dict | None = None  # {"w": (width,), "A": (d, d), "c": (d,), "b0": float}
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d(self) -> int:
        return self.x.shape[1]

    @property
    def m(self) -> int:
        """Number of outputs (1 for a potential)."""
        return 1 if self.potential is not None else self.layers[-1].W.shape[1]

    @property
    def width(self) -> int:
        """Largest hidden width (the w of n*d*w^2 and n*w^3)."""
        hidden = self.layers if self.potential is not None else self.layers[:-1]
        return max(L.W.shape[1] for L in hidden)

    @property
    def depth(self) -> int:
        return len(self.layers)


# --------------------------------------------------------------------------- weights


def _dense(rng, fan_in, fan_out, act, kind="dense", step=1.0):
    W = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
    b = 0.1 * rng.standard_normal(fan_out)
    return Layer(kind, W, b, act, step)


def p1(d, n, seed=0):
    """hessQuik's timing network: antitanh d->16, 4 residual tanh (h=0.5), linear 16->1."""
    rng = np.random.default_rng(seed)
    w = 16
    layers = [_dense(rng, d, w, "antitanh")]
    layers += [_dense(rng, w, w, "tanh", "residual", 0.5) for _ in range(4)]
    layers += [_dense(rng, w, 1, "identity")]
    x = rng.standard_normal((n, d))
    return Problem("P1", f"P1 d={d} n={n}", layers, x, ("value", "gradient", "hessian", "laplacian"))


def p2(n=256, seed=0, widths=(50, 768, 768, 512, 512, 1)):
    """PINN MLP of the Taylor-mode literature: 50->768->768->512->512->1, tanh."""
    rng = np.random.default_rng(seed)
    layers = [_dense(rng, a, b, "tanh") for a, b in zip(widths[:-2], widths[1:-1])]
    layers += [_dense(rng, widths[-2], widths[-1], "identity")]
    x = rng.standard_normal((n, widths[0]))
    return Problem("P2", f"P2 d={widths[0]} n={n}", layers, x, ("value", "gradient", "hessian", "laplacian"))


def p3(d, n=512, seed=0, width=64, depth=2, rank=10):
    """OT-Flow potential: Phi(s) = w.N(s) + 1/2 s^T A s + c.s + b0, A = K^T K (rank 10).

    N: antitanh d->width, then ``depth`` residual antitanh layers with step 1/depth.
    """
    rng = np.random.default_rng(seed)
    layers = [_dense(rng, d, width, "antitanh")]
    layers += [_dense(rng, width, width, "antitanh", "residual", 1.0 / depth) for _ in range(depth)]
    K = rng.standard_normal((rank, d)) / np.sqrt(d)
    pot = {
        "w": rng.standard_normal(width) / np.sqrt(width),
        "A": K.T @ K,
        "c": 0.1 * rng.standard_normal(d),
        "b0": 0.1,
    }
    x = rng.standard_normal((n, d))
    return Problem("P3", f"P3 d={d} n={n}", layers, x, ("value", "gradient", "laplacian"), pot)


def p4(n=200, seed=0, d=64, width=64, depth=4):
    """A middle ResNet: antitanh d->64, 4 residual tanh (h=0.5) 64->64, linear 64->1."""
    rng = np.random.default_rng(seed)
    layers = [_dense(rng, d, width, "antitanh")]
    layers += [_dense(rng, width, width, "tanh", "residual", 0.5) for _ in range(depth)]
    layers += [_dense(rng, width, 1, "identity")]
    x = rng.standard_normal((n, d))
    return Problem("P4", f"P4 d={d} n={n}", layers, x, ("value", "gradient", "hessian", "laplacian"))


def make_problems(families, quick=False):
    out = []
    # quick: the same networks at a few points (P1: two d so that a plot is drawn)
    if "P1" in families:
        ds, ns = ((2, 128), (10,)) if quick else ((2, 16, 128, 1024), (10, 1000))
        for n in ns:
            for d in ds:
                out.append(p1(d, n))
    if "P2" in families:
        out.append(p2(n=4) if quick else p2())
    if "P3" in families:
        for d in (63,) if quick else (63, 784):
            out.append(p3(d, n=32 if quick else 512))
    if "P4" in families:
        out.append(p4(n=10 if quick else 200))
    return out


# --------------------------------------------------------------------------- flops

#: which formula each algorithm class uses (documented in benchmarks/README.md)
FLOP_KINDS = (
    "value",
    "grad_reverse",
    "jac_forward",
    "lap_forward",
    "lap_gram",
    "hess_forward",
    "hessquik_forward",
    "hess_backward",
    "hess_sumlayers",
    "nested_ad",
    "min",
)


def _layer_dims(p: Problem):
    dims = [L.W.shape for L in p.layers]
    if p.potential is not None:
        dims.append((p.layers[-1].W.shape[1], 1))  # the w . N(s) contraction
    return dims


def flops(p: Problem, kind: str, quantity: str) -> float:
    """Multiply-add flop count (2 per FMA) of one algorithm class by formula.

    ``F = 2 n sum_l in_l out_l`` is one forward pass; ``F_rest`` excludes the first
    layer (whose input Jacobian is the identity, so ``Jz = W`` costs nothing).
    A potential's dense quadratic adds ``2 n d^2`` to a value/gradient evaluation
    and nothing to the Hessian/Laplacian recursions (a constant ``A`` / ``tr A``).
    """
    n, d, m = p.n, p.d, p.m
    dims = _layer_dims(p)
    F = 2.0 * n * sum(a * b for a, b in dims)
    F_rest = 2.0 * n * sum(a * b for a, b in dims[1:])
    quad = 2.0 * n * d * d if p.potential is not None else 0.0
    jac_fwd = F + d * F_rest
    if kind == "min":
        if quantity == "value":
            return F + quad
        if quantity == "gradient":
            return 2 * F + quad
        if quantity == "laplacian":
            return min(flops(p, "lap_forward", quantity), flops(p, "lap_gram", quantity))
        if quantity == "hessian":
            return min(flops(p, k, quantity) for k in ("hess_forward", "hess_backward", "hess_sumlayers"))
        raise ValueError(quantity)
    if kind == "value":
        return F + quad
    if kind == "grad_reverse":
        return 2 * F + quad
    if kind == "jac_forward":
        return jac_fwd + quad
    if kind == "lap_forward":
        # J sweep + (Delta u) W per layer
        return jac_fwd + F_rest
    if kind == "lap_gram":
        # G = J^T J (w x w) propagated: W^T diag G diag W per layer, 2 GEMMs of w^3;
        # the first layer's W0^T W0 is sample independent.
        ws = [b for _, b in dims]
        return F + 2.0 * d * ws[0] ** 2 + sum(4.0 * n * a * b * b for a, b in dims[1:])
    if kind == "hess_forward":
        # J sweep + Hz = Hu x_3 W at every layer after the first
        return jac_fwd + d * d * F_rest
    if kind == "hessquik_forward":
        # J sweep + per layer the Gauss-Newton term J^T (local Hessian) J:
        # (n, out, d, in) x (in, d) products after the first layer
        return jac_fwd + sum(2.0 * n * b * (d * a * a + d * d * a) for a, b in dims[1:])
    if kind == "hess_backward":
        # value + adjoint sweep + Theta = W diag Theta diag W^T per layer
        return 2 * F + sum(2.0 * n * m * (a * b * b + a * a * b) for a, b in dims)
    if kind == "hess_sumlayers":
        # J sweep + adjoint sweep + sum_l Jz^T diag(s'' lambda) Jz
        return jac_fwd + F + sum(2.0 * n * m * d * d * b for _, b in dims)
    if kind == "nested_ad":
        # DESIGN.md: nested autodiff ~ 2 (d + 1) forward passes
        return 2.0 * (d + 1) * (F + quad)
    raise ValueError(kind)
