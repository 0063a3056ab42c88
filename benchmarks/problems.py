"""Benchmark problems P1-P4 and the operator rows, with their weights drawn once.

Every problem is a plain NumPy float64 spec: layers ``(kind, W, b, activation, step)``
in the row convention ``z = u @ W + b`` (``W`` of shape ``(in, out)``) plus, for an
OT-Flow potential, the quadratic part ``(w, A, c, b0)``.  Every method -- xderiv on
each backend and every peer -- is built from the same spec, so all of them evaluate
the same function with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Layer:
    kind: str  # "dense" | "residual"
    W: np.ndarray  # (in, out)
    b: np.ndarray  # (out,)
    activation: str
    step: float = 1.0


@dataclass
class Problem:
    family: str  # "P1" .. "P4", "OP"
    layers: list
    x: np.ndarray  # (n, d) float64
    quantities: tuple
    potential: dict | None = None  # {"w": (width,), "A": (d, d), "c": (d,), "b0": float}
    S: np.ndarray | None = None  # (d, k) directions of trace_hessian
    v: np.ndarray | None = None  # (d,) the direction of the Taylor rows
    A: np.ndarray | None = None  # (d, d) symmetric, indefinite: the coefficients of second_order

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d(self) -> int:
        return self.x.shape[1]

    @property
    def m(self) -> int:
        return 1 if self.potential is not None else self.layers[-1].W.shape[1]

    @property
    def width(self) -> int:
        hidden = self.layers if self.potential is not None else self.layers[:-1]
        return max(L.W.shape[1] for L in hidden)

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def label(self) -> str:
        k = "" if self.S is None else f" k={self.S.shape[1]}"
        r = "" if self.A is None else f" r={np.linalg.matrix_rank(self.A)}"
        return f"{self.family} d={self.d}{k}{r} n={self.n}"


def _dense(rng, fan_in, fan_out, act, kind="dense", step=1.0):
    W = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
    return Layer(kind, W, 0.1 * rng.standard_normal(fan_out), act, step)


ALL = ("value", "gradient", "hessian", "laplacian")


def p1(d, n, seed=0):
    """hessQuik's timing network: antitanh d->16, 4 residual tanh (h=0.5), linear 16->1."""
    rng = np.random.default_rng(seed)
    layers = [_dense(rng, d, 16, "antitanh")]
    layers += [_dense(rng, 16, 16, "tanh", "residual", 0.5) for _ in range(4)]
    layers += [_dense(rng, 16, 1, "identity")]
    return Problem("P1", layers, rng.standard_normal((n, d)), ALL)


def p2(n=256, seed=0, widths=(50, 768, 768, 512, 512, 1)):
    """PINN MLP of the Taylor-mode literature: 50->768->768->512->512->1, tanh."""
    rng = np.random.default_rng(seed)
    layers = [_dense(rng, a, b, "tanh") for a, b in zip(widths[:-2], widths[1:-1])]
    layers += [_dense(rng, widths[-2], widths[-1], "identity")]
    return Problem("P2", layers, rng.standard_normal((n, widths[0])), ALL)


def p3(d, n=512, seed=0, width=64, depth=2, rank=10):
    """OT-Flow potential Phi(s) = w.N(s) + 1/2 s^T A s + c.s + b0, A = K^T K (rank 10);
    N: antitanh d->width, then ``depth`` residual antitanh layers with step 1/depth."""
    rng = np.random.default_rng(seed)
    layers = [_dense(rng, d, width, "antitanh")]
    layers += [_dense(rng, width, width, "antitanh", "residual", 1.0 / depth) for _ in range(depth)]
    K = rng.standard_normal((rank, d)) / np.sqrt(d)
    pot = {"w": rng.standard_normal(width) / np.sqrt(width), "A": K.T @ K, "c": 0.1 * rng.standard_normal(d), "b0": 0.1}
    return Problem("P3", layers, rng.standard_normal((n, d)), ("value", "gradient", "laplacian"), pot)


def p4(n=200, seed=0, d=64, width=64, depth=4, family="P4", quantities=ALL):
    """A middle ResNet: antitanh d->64, 4 residual tanh (h=0.5), linear 64->1."""
    rng = np.random.default_rng(seed)
    layers = [_dense(rng, d, width, "antitanh")]
    layers += [_dense(rng, width, width, "tanh", "residual", 0.5) for _ in range(depth)]
    layers += [_dense(rng, width, 1, "identity")]
    return Problem(family, layers, rng.standard_normal((n, d)), quantities)


def op(d, k, n=256):
    """Operator rows: P4's network at input dimension d, trace_hessian with k directions
    and the Laplacian over the coordinates 1..d-1 (a "spatial" Laplacian)."""
    p = p4(n=n, d=d, family="OP", quantities=("trace_hessian", "partial_laplacian"))
    p.S = np.random.default_rng(1).standard_normal((d, k))
    return p


def taylor(n=200):
    """Taylor rows: P4's network (d = w = 64), the fourth directional derivative along one fixed v."""
    p = p4(n=n, family="T4", quantities=("taylor4",))
    p.v = np.random.default_rng(2).standard_normal(p.d)
    return p


def biharmonic(d=16, n=200):
    """Biharmonic rows: P4's network at input dimension d, the exact bi-Laplacian."""
    return p4(n=n, d=d, family="BH", quantities=("biharmonic",))


def second_order(d, rank, n=1000, seed=0, width=64):
    """Second-order rows: tanh MLP d->64->64->1, ``xd.second_order`` with a dense symmetric A of the given
    rank, eigenvalues of alternating sign (indefinite), in a random orthonormal basis."""
    rng = np.random.default_rng(seed)
    layers = [_dense(rng, d, width, "tanh"), _dense(rng, width, width, "tanh"), _dense(rng, width, 1, "identity")]
    p = Problem("SO", layers, rng.standard_normal((n, d)), ("value", "second_order"))
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :rank]
    eig = np.linspace(1.0, 2.0, rank) * (-1.0) ** np.arange(rank)
    p.A = (basis * eig) @ basis.T
    return p


def second_order_problems(quick=False):
    """``--problems second_order``: d = 5, 20, 100 (quick: 5, 20), A of full rank and of rank 2; n = 1000 (quick 16)."""
    return [second_order(d, r, n=16 if quick else 1000) for d in ((5, 20) if quick else (5, 20, 100)) for r in (d, 2)]


GPU_QUANTITIES = ("laplacian", "hessian")


def gpu_problems(quick=False):
    """The GPU comparison: hessQuik's timing net (antitanh, 4 residual tanh h = 0.5, linear) at
    d = 64 w = 64 n = 2000, d = 1024 w = 16 n = 10 and the PINN shape d = 3 w = 128 n = 100000, plus P2
    at n = 2048 (quick: the same networks at few points, for a dry run on a CPU)."""
    q = GPU_QUANTITIES
    n = (20, 10, 100, 8) if quick else (2000, 10, 100_000, 2048)
    return [
        p4(n=n[0], d=64, width=64, family="HQ", quantities=q),
        p4(n=n[1], d=1024, width=16, family="HQ", quantities=q),
        p4(n=n[2], d=3, width=128, family="HQ", quantities=q),
        Problem("P2", p2().layers, np.random.default_rng(0).standard_normal((n[3], 50)), q),
    ]


def make_problems(quick=False, which="cpu"):
    """The fixed problem set (quick: the same networks at fewer points); ``which="gpu"``: :func:`gpu_problems`,
    ``which="second_order"``: :func:`second_order_problems`."""
    if which == "gpu":
        return gpu_problems(quick)
    if which == "second_order":
        return second_order_problems(quick)
    if quick:
        return [p1(2, 10), p1(128, 10), p2(n=4), p3(63, n=32), p4(n=10), op(64, 4, n=16), taylor(n=10)] + [
            biharmonic(d=4, n=10)
        ]
    out = [p1(d, n) for n in (10, 1000) for d in (2, 16, 128, 1024)]
    out += [p2(), p3(63), p3(784), p4()]
    return out + [op(64, 4), op(256, 4), op(256, 16), taylor(), biharmonic()]
