"""The benchmark problems: each network drawn once as NumPy float64 weights, with its points and quantities.

A network is a dict of weights ``{layer: {"W": (in, out), "b": (out,)}}`` (``z = u @ W + b``), evaluated by
:func:`forward` through any namespace (NumPy, torch, ``jax.numpy``, xderiv's jets, :func:`torch_ops` for torch.fx),
so that every method computes the same function of the same weights.  Weights N(0, 1/fan_in), biases N(0, 0.01),
points N(0, 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

ALL = ("value", "gradient", "hessian", "laplacian")
GRAPHS = ("mMLP", "PirateNet", "LN-MLP", "MLP")
EPS = 1e-5  # LayerNorm


@dataclass
class Problem:
    """A network (its weights, and its layers if it is a chain), its points, and the quantities timed on them."""

    label: str  # "P1 d=2 n=10": the first word names the family or network
    P: dict  # {layer: {"W", "b"}}; a potential's quadratic part under "pot": {"w", "A", "c", "b0"}
    x: np.ndarray  # (n, d)
    quantities: tuple
    chain: list | None = None  # [(layer, "d" (dense) | "r" (residual), activation, step)]
    graph: bool = False  # also differentiated as a graph: xd.function and graph_function
    extra: dict = field(default_factory=dict)  # S (d, k), v (d,), A (d, d); training: xi, xb, f


def _dense(rng: np.random.Generator, a: int, b: int) -> dict:
    return {"W": rng.standard_normal((a, b)) / np.sqrt(a), "b": 0.1 * rng.standard_normal(b)}


ACT = {"tanh": lambda xp, z: xp.tanh(z), "identity": lambda xp, z: z}
ACT["antitanh"] = lambda xp, z: xp.abs(z) + xp.log1p(xp.exp(-2.0 * xp.abs(z)))


def forward(p: Problem, xp: Any, P: dict, x: Any) -> Any:
    """The network of ``p`` on ``x`` (..., d) through the namespace ``xp``, with ``P`` holding xp's arrays."""
    if p.chain is None:
        return _GRAPH[p.label.split()[0]](xp, P, x)
    u = x
    for key, kind, act, h in p.chain:
        a = ACT[act](xp, _lin(P, u, key))
        u = u + h * a if kind == "r" else a
    if "pot" not in P:
        return u
    q = P["pot"]
    return u @ q["w"] + 0.5 * xp.sum((x @ q["A"]) * x, axis=-1) + x @ q["c"] + q["b0"]


def torch_ops() -> SimpleNamespace:
    """The namespace functions :func:`forward` uses, as torch operations that torch.fx and jet-for-pytorch trace."""
    import torch

    return SimpleNamespace(
        **{k: getattr(torch, k) for k in ("tanh", "cos", "sin", "abs", "exp", "log1p")},
        concat=lambda a, axis: torch.cat(a, dim=axis),
        sum=lambda a, axis: a.sum(axis),
        mean=lambda a, axis, keepdims: a.mean(axis, keepdim=keepdims),
    )


def _lin(P: dict, h: Any, k: str) -> Any:
    return h @ P[k]["W"] + P[k]["b"]


def _mmlp(xp: Any, P: dict, x: Any) -> Any:
    """The modified MLP (Wang, Teng & Perdikaris 2021): U, V gates on x, three gated layers H = U + Z(V - U)."""
    U, V, H = (xp.tanh(_lin(P, x, k)) for k in ("U", "V", "L0"))
    for i in range(1, 4):
        H = U + xp.tanh(_lin(P, H, f"L{i}")) * (V - U)  # gates written U + Z(V - U): no rule for 1 - Z needed
    return _lin(P, H, "out")


def _pirate(xp: Any, P: dict, x: Any) -> Any:
    """PirateNet: Fourier features, U, V gates, two gated residual blocks x' = x + a(f(x) - x), a = 0.4, 0.6."""
    xb = x @ P["B"]["W"]
    H = xp.concat([xp.cos(xb), xp.sin(xb)], axis=-1)
    U, V = xp.tanh(_lin(P, H, "U")), xp.tanh(_lin(P, H, "V"))
    for k in range(2):
        Z = V + xp.tanh(_lin(P, H, f"B{k}L0")) * (U - V)
        Z = V + xp.tanh(_lin(P, Z, f"B{k}L1")) * (U - V)
        H = H + P["alpha"]["W"][k] * (xp.tanh(_lin(P, Z, f"B{k}L2")) - H)
    return _lin(P, H, "out")


def _ln_mlp(xp: Any, P: dict, x: Any) -> Any:
    """Four tanh layers, each followed by an affine LayerNorm."""
    H = x
    for i in range(4):
        H = xp.tanh(_lin(P, H, f"L{i}"))
        C = H - xp.mean(H, axis=-1, keepdims=True)
        H = C * (xp.mean(C * C, axis=-1, keepdims=True) + EPS) ** -0.5 * P[f"LN{i}"]["W"] + P[f"LN{i}"]["b"]
    return _lin(P, H, "out")


_GRAPH = {"mMLP": _mmlp, "PirateNet": _pirate, "LN-MLP": _ln_mlp}


def chain(label, widths, n, q=ALL, kinds="", act="tanh", first="tanh", last="identity", nb=0, **extra) -> Problem:
    """A chain ``widths[0] -> ...`` of dense (``d``) or residual (``r``, step ½) layers; ``nb`` boundary points."""
    rng = np.random.default_rng(0)
    P = {f"L{i}": _dense(rng, a, b) for i, (a, b) in enumerate(zip(widths, widths[1:]))}
    acts = [first] + [act] * (len(P) - 2) + [last]
    layers = [(f"L{i}", k, a, 0.5) for i, (k, a) in enumerate(zip(kinds.ljust(len(P), "d"), acts))]
    return _problem(label, P, widths[0], n, q, rng, nb, layers, **extra)


def _problem(label, P, d, n, q, rng, nb=0, layers=None, graph=False, **extra) -> Problem:
    x = rng.standard_normal((n, d))
    if nb:  # a PINN step's points: interior uniform in [-1, 1]^d, boundary on its faces, f = Σ sin(xi)
        xi, xb = rng.uniform(-1.0, 1.0, (n, d)), rng.uniform(-1.0, 1.0, (nb, d))
        xb[np.arange(nb), rng.integers(0, d, nb)] = rng.choice([-1.0, 1.0], nb)
        extra |= {"xi": xi, "xb": xb, "f": np.sin(xi).sum(-1)}
    label = f"{label} d={d}{''.join(f' {k}={v}' for k, v in extra.items() if np.ndim(v) == 0)} n={n}"
    return Problem(label, P, x, q, layers, graph, {k: np.asarray(v) for k, v in extra.items() if np.ndim(v)})


def resnet(label: str, d: int, n: int, w: int = 16, q: tuple = ALL, **extra: Any) -> Problem:
    """hessQuik's timing net: antitanh d -> w, 4 residual tanh layers (h = ½), linear w -> 1."""
    return chain(label, (d, w, w, w, w, w, 1), n, q, "drrrr", first="antitanh", **extra)


def p3(d: int, n: int, w: int = 64) -> Problem:
    """OT-Flow potential w·N(s) + ½sᵀAs + c·s + b0, A = KᵀK (K: 10 × d), N: antitanh d -> 64, 2 residual antitanh."""
    a = "antitanh"
    p = chain("P3", (d, w, w, w), n, ("value", "gradient", "laplacian"), "drr", act=a, first=a, last=a)
    rng = np.random.default_rng(1)
    K = rng.standard_normal((10, d)) / np.sqrt(d)
    p.P["pot"] = dict(w=rng.standard_normal(w) / w**0.5, A=K.T @ K, c=0.1 * rng.standard_normal(d), b0=np.array(0.1))
    return p


def second_order(d: int, r: int, n: int) -> Problem:
    """tanh MLP d -> 64 -> 64 -> 1 and a dense symmetric A of rank r, eigenvalues ±(1..2) alternating in sign.

    ``Sp``, ``Sm``: A = Sp Spᵀ - Sm Smᵀ, the split a user makes by hand (``eigh``, null directions dropped).
    """
    V = np.linalg.qr(np.random.default_rng(3).standard_normal((d, d)))[0][:, :r]
    w = np.linspace(1, 2, r) * (-1.0) ** np.arange(r)
    Sp, Sm = V[:, w > 0] * np.sqrt(w[w > 0]), V[:, w < 0] * np.sqrt(-w[w < 0])
    return chain("SO", (d, 64, 64, 1), n, ("value", "second_order"), r=r, A=(V * w) @ V.T, Sp=Sp, Sm=Sm)


def graph(name: str, d: int, n: int, w: int = 64) -> Problem:
    """A network of :data:`GRAPHS` at width 64, with the quantities of the graphs family."""
    q = ("value", "laplacian") + ("hessian", "training") * (d <= 10)
    rng = np.random.default_rng(0)
    if name == "MLP":
        return dataclasses.replace(chain("MLP", (d, w, w, w, w, 1), n, q, nb=n // 2), graph=True)
    if name == "mMLP":
        P = {"U": _dense(rng, d, w), "V": _dense(rng, d, w), "L0": _dense(rng, d, w)}
        P |= {f"L{i}": _dense(rng, w, w) for i in range(1, 4)}
    elif name == "PirateNet":
        P = {"B": {"W": rng.standard_normal((d, w // 2))}, "U": _dense(rng, w, w), "V": _dense(rng, w, w)}
        P |= {f"B{k}L{j}": _dense(rng, w, w) for k in range(2) for j in range(3)}
        P["alpha"] = {"W": np.array([0.4, 0.6])}
    else:
        P = {f"L{i}": _dense(rng, w if i else d, w) for i in range(4)}
        P |= {f"LN{i}": {"W": 1 + 0.1 * rng.standard_normal(w), "b": 0.1 * rng.standard_normal(w)} for i in range(4)}
    return _problem(name, P | {"out": _dense(rng, w, 1)}, d, n, q, rng, n // 2, graph=True)


def problems(family: str, quick: bool) -> list[Problem]:
    """The problems of one run (``--family``), at full size or ``quick`` (the same networks at fewer points)."""
    P2, OP, rng = (50, 768, 768, 512, 512, 1), ("trace_hessian", "partial_laplacian"), np.random.default_rng(1)

    def size(full: Any, fast: Any) -> Any:
        return fast if quick else full

    if family == "chain":  # P1-P4, the operators OP, Taylor mode T4, the biharmonic BH
        out = [resnet("P1", d, n) for n in size((10, 1000), (10,)) for d in size((2, 16, 128, 1024), (2, 128))]
        out += [chain("P2", P2, size(256, 4)), *(p3(d, size(512, 32)) for d in size((63, 784), (63,)))]
        out += [
            resnet("P4", 64, size(200, 10), 64),
            resnet("T4", 64, size(200, 10), 64, ("taylor4",), v=rng.standard_normal(64)),
        ]
        out += [
            resnet("OP", d, size(256, 16), 64, OP, k=k, S=rng.standard_normal((d, k)))
            for d, k in size(((64, 4), (256, 4), (256, 16)), ((64, 4),))
        ]
        return out + [resnet("BH", size(16, 4), size(200, 10), 64, ("biharmonic",))]
    if family == "second_order":
        return [second_order(d, r, size(1000, 16)) for d in size((5, 20, 100), (5, 20)) for r in (d, 2)]
    if family == "graphs":
        nets, dims = size(GRAPHS, ("mMLP", "MLP")), size((2, 10, 100), (2,))
        return [graph(name, d, size(250 if d >= 100 else 1000, 16)) for name in nets for d in dims]
    if family == "training":  # the PINN step of two tanh MLPs
        return [
            chain("TR", w, size(2000, 32), ("training",), nb=size(1200, 16))
            for w in ((3, 64, 64, 1), (10, 128, 128, 128, 1))
        ]
    if family == "overhead":  # tiny batches: per-call cost beside the forward pass written out in NumPy and torch
        return [resnet("OV", 16, n) for n in (1, 10)]
    if family == "gpu":  # hessQuik's net at three sizes, P2, last the modified MLP's Laplacian (quick: the CPU dry run)
        out = [resnet("HQ", 64, size(2000, 20), 64, ALL[2:]), resnet("HQ", 1024, 10, 16, ALL[2:])]
        out += [resnet("HQ", 3, size(100_000, 100), 128, ALL[2:]), chain("P2", P2, size(2048, 8), ALL[2:])]
        return out + [dataclasses.replace(graph("mMLP", 2, size(100_000, 100)), quantities=("laplacian",))]
    raise ValueError(f"--family {family}: chain, second_order, graphs, training, overhead or gpu")
