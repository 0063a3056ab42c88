"""Every timed method of one problem and quantity: xderiv on each backend and every peer, on the same weights.

``build(p, q, dtype, device)`` returns ``{name: fn}``: ``fn()`` computes ``q`` on the problem's points, the device
done; a ``training`` step returns the loss, then every weight's gradient in the order of ``p.P``.  Each library's
methods are first functions of the points, so that a training step can take any Laplacian.  A peer that is not
installed is left out (the run's ``versions`` show it missing).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from problems import Problem, forward, torch_ops

import xderiv as xd
from xderiv.operators.biharmonic import biharmonic_by_directions

MODES = ("auto", "forward", "backward")
AUTODIFF = {  # quantity: the names of torch.func's and jax's own derivative (jitted); others: the Hessian contracted
    "value": ("torch eager", "jax jit"),
    "gradient": ("torch.func vmap(grad)", "jax vmap(grad) jit"),
    "hessian": ("torch.func vmap(hessian)", "jax.hessian jit"),
    "laplacian": ("torch.func tr(vmap(hessian))", "jax tr(hessian) jit"),
    "taylor4": ("torch.func jvp(jvp(jvp(jvp)))", "jax jvp(jvp(jvp(jvp))) jit"),
    "biharmonic": ("torch.func vmap(hessian(laplacian))", "jax vmap(hessian(laplacian)) jit"),
}
CONTRACTED = ("torch.func vmap(hessian) + contraction", "jax.hessian jit + contraction")
Fns = dict[str, Callable]


def to_numpy(a: Any) -> np.ndarray:
    """A result of any library as a flat NumPy float64 array."""
    a = a.detach().cpu() if hasattr(a, "detach") else a.get() if hasattr(a, "get") else a
    return np.asarray(a, dtype=np.float64).reshape(-1)


def memory(p: Problem, q: str, name: str, itemsize: int) -> float:
    """A rough upper estimate of one call's memory in bytes (``--mem-budget-gb`` skips what exceeds it)."""
    n, d = p.x.shape
    shapes = [v["W"].shape for v in p.P.values() if np.ndim(v.get("W")) == 2]
    w, hess = max(b for _, b in shapes), n * d * d * itemsize
    nested = 10.0 * n * d * w * len(shapes) * itemsize + 2 * hess  # autodiff's Hessian of the whole network
    if "jvp" in name or "hessian(laplacian)" in name:
        return nested * (16 if "jvp" in name else d * d)
    if name.startswith("hessQuik") and q == "hessian":
        return 4.0 * n * max(a * a * b for a, b in shapes) * itemsize + 4 * hess * w * ("forward" in name)
    if q == "hessian":
        return 2 * hess + 4.0 * n * d * w * itemsize if name.startswith("xderiv") else nested
    return nested if "hessian" in name else 0.0


def flops(fn: Callable) -> float | None:
    """One call's flops: XLA's cost analysis of a jitted call, else torch's ``FlopCounterMode`` (products only)."""
    if hasattr(fn, "lowered"):
        cost = fn.lowered().compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost).get("flops")
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
    except Exception:  # not torch, or what the counter refuses (torch.func's hessian, create_graph)
        return None
    return counter.get_total_flops() or None


def reference_rank(name: str) -> int:
    """The order in which methods are tried as the reference: torch's autodiff, then xderiv-numpy, then the rest."""
    return 0 if name.startswith(("torch.func", "torch autograd", "torch eager")) else 1 + (name[:12] != "xderiv-numpy")


def chain_net(p: Problem, P: dict) -> Any:
    """The chain as ``xd.Sequential`` of the arrays ``P`` (``xd.Potential`` with its quadratic part)."""
    layers = [
        xd.Residual(P[k]["W"], P[k]["b"], a, step=h) if kind == "r" else xd.Dense(P[k]["W"], P[k]["b"], a)
        for k, kind, a, h in p.chain
    ]
    net, q = xd.Sequential(*layers), P.get("pot")
    return net if q is None else xd.Potential(net, q["w"], q["A"], q["c"], q["b0"])


def _contract(q: str, H: Any, e: dict) -> Any:
    """The quantity from a full Hessian (..., d, d)."""
    if q in ("laplacian", "partial_laplacian"):
        return H.diagonal(0, -2, -1)[..., (q == "partial_laplacian") :].sum(-1)
    return (H * e["A"]).sum((-2, -1)) if q == "second_order" else ((H @ e["S"]) * e["S"]).sum((-2, -1))


def _autodiff(ad: Any, f: Callable, q: str, e: dict) -> Callable:
    """torch.func's or jax's own way to ``q`` of ``f`` (points (n, d) -> (n, 1)), as a function of the points."""
    one = lambda y: f(y).reshape(())  # noqa: E731
    vh = ad.vmap(ad.hessian(one))
    if q == "value":
        return f
    if q == "gradient":
        return ad.vmap(ad.grad(one))
    if q == "taylor4":  # four nested jvp along v
        g = f
        for _ in range(4):
            g = (lambda h: lambda z: ad.jvp(h, (z,), (0 * z + e["v"],))[1])(g)
        return g
    if q == "biharmonic":  # the Hessian of the Laplacian
        return ad.vmap(lambda y: ad.hessian(lambda z: ad.hessian(one)(z).diagonal().sum())(y).diagonal().sum())
    return vh if q == "hessian" else lambda z: _contract(q, vh(z), e)


def _xderiv(p: Problem, q: str, tag: str, P: dict, e: dict, modes=MODES, jit: str = "", graph=True) -> Fns:
    """xderiv's methods on one backend as functions of the points: the chain in each mode, ``xd.function``."""
    net = None if p.chain is None else chain_net(p, P)
    if q in ("value", "taylor4", "biharmonic"):
        if net is None:
            return {}
        if q == "biharmonic":
            by_directions = lambda z: biharmonic_by_directions(net, z)  # noqa: E731
            return {tag + jit: lambda z: xd.biharmonic(net, z), f"{tag}[directions]{jit}": by_directions}
        return {tag + jit: lambda z: net(z) if q == "value" else xd.taylor(net, z, e["v"], order=4)[4]}
    forms = {} if net is None else {(f"{tag}[{m}]" if len(modes) > 1 else tag) + jit: (net, m) for m in modes}
    if p.graph and graph:
        forms[f"{tag} xd.function{jit}"] = (_function(p, P), "auto")
    op, args = (
        getattr(xd, q.removeprefix("partial_")),
        [e[k] for k in {"trace_hessian": "S", "second_order": "A"}.get(q, "")],
    )
    kw = {"coords": list(range(1, p.x.shape[1]))} if q == "partial_laplacian" else {}  # the Laplacian over x[1:]
    out = {k: (lambda z, n=n, m=m: op(n, z, *args, mode=m, **kw)) for k, (n, m) in forms.items()}
    if q == "second_order" and net is not None:  # as a user splits it by hand: two trace_hessian calls
        split = lambda z: xd.trace_hessian(net, z, e["Sp"]) - xd.trace_hessian(net, z, e["Sm"])  # noqa: E731
        out[f"{tag} trace_hessian(S+) - trace_hessian(S-){jit}"] = split
    return out


def _function(p: Problem, P: dict) -> Any:
    """The network of ``p`` as ``xd.function`` of the weights ``P``."""
    return xd.function(lambda z: forward(p, array_namespace(z), P, z))


def _fx_compiled(fn: Callable) -> Callable:
    """``fn`` traced to aten by ``make_fx`` at its first points, then ``torch.compile``d (Dynamo cannot trace
    torch.func's nested transforms in torch 2.13); the weights it closes over stay references."""
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    compiled: dict = {}

    def run(z: Any) -> Any:
        key = (tuple(z.shape), torch.is_grad_enabled())
        if key not in compiled:
            compiled[key] = torch.compile(make_fx(fn)(z), fullgraph=True)
        return compiled[key](z)

    return run


def _loss(lap: Callable, u: Callable, e: dict) -> Any:
    """A PINN step's loss: mean((Δu - f)²) on the interior points + 100 mean(u²) on the boundary."""
    return ((lap(e["xi"]).reshape(-1) - e["f"]) ** 2).mean() + 100.0 * (u(e["xb"]) ** 2).mean()


def _timed(fns: Fns, x: Any, sync: Callable | None = None) -> Fns:
    """The functions of the points as calls on ``x`` that return once the device (``sync``) is done."""
    return {k: (lambda g=g: (g(x), sync and sync())[0]) for k, g in fns.items()}


def _array_library(p: Problem, q: str, dtype: str, device: str) -> Fns:
    """xderiv eager on NumPy, or on CuPy on cuda."""
    b = "cupy" if device == "cuda" else "numpy"
    lib = importlib.import_module(b)
    arr = lambda a: lib.asarray(np.asarray(a), dtype=dtype)  # noqa: E731
    P, e = {k: {kk: arr(v) for kk, v in d.items()} for k, d in p.P.items()}, {k: arr(v) for k, v in p.extra.items()}
    fns = _xderiv(p, q, f"xderiv-{b}", P, e, graph=False) if q != "training" else {}
    if q == "value" and b == "numpy":
        fns["numpy eager"] = lambda z: forward(p, np, P, z)  # the forward pass written out: the unit
    return _timed(fns, arr(p.x), lib.cuda.Device().synchronize if b == "cupy" else None)


def _torch(p: Problem, q: str, dtype: str, device: str) -> Fns:
    """xderiv on torch (each mode, ``xd.function``, ``graph_function``, ``xd.compile``) and torch's own ways."""
    import torch
    import torch.func as ad

    from xderiv.interop.torch_graph import graph_function

    arr = lambda a: torch.as_tensor(np.asarray(a), dtype=getattr(torch, dtype), device=device)  # noqa: E731
    qq, ops = "laplacian" if q == "training" else q, torch_ops()
    leaves = [torch.nn.Parameter(arr(v), requires_grad=q == "training") for d in p.P.values() for v in d.values()]
    it = iter(leaves)
    P, e = {k: {kk: next(it) for kk in d} for k, d in p.P.items()}, {k: arr(v) for k, v in p.extra.items()}
    u = lambda z: forward(p, ops, P, z)  # noqa: E731
    module = type("Net", (torch.nn.Module,), {"forward": lambda self, z: u(z)})()
    module.w = torch.nn.ParameterList(leaves)  # graph_function reads the weights from the module
    fns = _xderiv(p, qq, "xderiv-torch", P, e)
    if p.graph and qq in ("laplacian", "hessian"):
        gf = xd.function(graph_function(module))
        fns["xderiv-torch graph_function"] = lambda z: getattr(xd, qq)(gf, z)
    if p.graph and qq == "hessian":  # in chunks of 100 points, each term small
        fns["xderiv-torch xd.function chunk_size=100"] = lambda z: xd.hessian(_function(p, P), z, chunk_size=100)
    if qq in ("laplacian", "hessian"):  # the chain; a graph as xd.function (make_fx, then torch.compile)
        nets = ([("", chain_net(p, P))] if p.chain else []) + ([(" xd.function", _function(p, P))] if p.graph else [])
        for tag, net in nets:
            c = xd.compile(getattr(xd, qq), net)
            fns[f"xderiv-torch{tag} xd.compile"] = lambda z, c=c: c(z).clone() if device == "cuda" else c(z)
    fns[AUTODIFF.get(qq, CONTRACTED)[0]] = _autodiff(ad, u, qq, e)
    if p.graph and qq in ("laplacian", "hessian"):  # compiled as xd.compile compiles a graph
        fns[AUTODIFF[qq][0] + " make_fx+torch.compile"] = _fx_compiled(_autodiff(ad, u, qq, e))
    if qq == "hessian":
        fns["torch.func vmap(jacrev(jacrev))"] = ad.vmap(ad.jacrev(ad.jacrev(lambda y: u(y).reshape(()))))
    if qq in ("gradient", "laplacian"):

        def autograd(z):  # the gradient by one backward pass; the Laplacian by one more per coordinate
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(u(z).sum(), z, create_graph=qq == "laplacian")
            grad = lambda y: torch.autograd.grad(y, z, retain_graph=True, create_graph=q == "training")[0]  # noqa: E731
            return g if qq == "gradient" else sum(grad(g[:, i].sum())[:, i] for i in range(z.shape[1]))

        fns["torch autograd" + " double-backward" * (qq == "laplacian")] = autograd
    if p.graph and qq == "laplacian":
        try:
            import jet

            fns["jet-for-pytorch collapsed"] = ad.vmap(jet.laplacian(module, (arr(p.x[0]),), collapsed=True))
        except ImportError:
            pass
    if q == "training":

        def step(lap):
            loss = _loss(lap, u, e)
            return torch.cat([loss.reshape(1), *(g.reshape(-1) for g in torch.autograd.grad(loss, leaves))])

        return {k: (lambda lap=lap: step(lap)) for k, lap in fns.items()}
    return _timed(fns, arr(p.x), torch.cuda.synchronize if device == "cuda" else None)


def _hessquik(p: Problem, q: str, dtype: str, device: str) -> Fns:
    """hessQuik's network of the same layers: gradient and Hessian in forward and backward mode, the Laplacian."""
    if p.chain is None or q not in ("gradient", "hessian", "laplacian"):
        return {}
    import hessQuik.activations as ha
    import hessQuik.layers as hl
    import hessQuik.networks as hn
    import torch

    dt = getattr(torch, dtype)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dt, device=device)  # noqa: E731
    acts = {"identity": ha.identityActivation, "tanh": ha.tanhActivation, "antitanh": ha.antiTanhActivation}
    pot, layers = p.P.get("pot"), []
    for key, kind, act, h in p.chain + [("pot", "d", "identity", 1.0)] * (pot is not None):  # w·N(s) a last layer
        W, b = (pot["w"][:, None], np.zeros(1)) if key == "pot" else (p.P[key]["W"], p.P[key]["b"])
        make, shape = (hl.singleLayer, W.shape) if kind == "d" else (partial(hl.resnetLayer, h=h), W.shape[:1])
        layers.append(make(*shape, act=acts[act](), dtype=dt, device=device))
        target = layers[-1] if kind == "d" else layers[-1].layer
        target.K.data, target.b.data = t(W), t(b)  # hessQuik's K is (in, out) as here
    net, x = hn.NN(*layers).requires_grad_(False), t(p.x)
    A, c = (t(pot["A"]), t(pot["c"])) if pot else (0.0, 0.0)  # a potential's quadratic part, added by hand

    def call(fwd: bool):
        out = net(x, do_gradient=True, do_Hessian=q == "hessian", do_Laplacian=q == "laplacian", forward_mode=fwd)
        if q == "laplacian":
            return out[2].reshape(-1) + (float(np.trace(pot["A"])) if pot else 0.0)
        return out[1][..., 0] + (x @ A + c if pot else 0.0) if q == "gradient" else out[2]

    names = {"forward": True, "backward": False} if q != "laplacian" else {"laplacian": True}
    fns = {f"hessQuik[{k}]": (lambda z, fwd=fwd: call(fwd)) for k, fwd in names.items()}
    return _timed(fns, x, torch.cuda.synchronize if device == "cuda" else None)


def _jax(p: Problem, q: str, dtype: str, device: str) -> Fns:
    """xderiv traced by ``jax.jit`` (the chain, ``xd.function``), jax's own ways and folx, all jitted."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    if device == "cuda" and jax.default_backend() != "gpu":
        return {}
    try:
        from folx import forward_laplacian
    except ImportError:
        forward_laplacian = None
    arr = lambda a: jnp.asarray(np.asarray(a), dtype=dtype)  # noqa: E731
    prm, e = {k: {kk: arr(v) for kk, v in d.items()} for k, d in p.P.items()}, {k: arr(v) for k, v in p.extra.items()}
    qq = "laplacian" if q == "training" else q

    def fns(prm: dict) -> Fns:  # the weights as arguments: jax.jit over them, jax.grad with respect to them
        f = lambda z: forward(p, jnp, prm, z)  # noqa: E731
        out = _xderiv(p, qq, "xderiv-jax", prm, e, ("auto",), " jit")
        out[AUTODIFF.get(qq, CONTRACTED)[1]] = _autodiff(jax, f, qq, e)
        if qq == "laplacian" and forward_laplacian is not None:
            folx = lambda y: forward_laplacian(lambda z: f(z).reshape(()))(y).laplacian  # noqa: E731
            out["folx forward_laplacian jit"] = jax.vmap(folx)
        return out

    def flat(v, g):  # the loss, then every weight's gradient
        return jnp.concatenate([v.ravel()] + [g[k][kk].ravel() for k in prm for kk in prm[k]]).block_until_ready()

    if q == "training":
        loss = lambda prm, k: _loss(fns(prm)[k], lambda z: forward(p, jnp, prm, z), e)  # noqa: E731
        step = jax.jit(jax.value_and_grad(loss), static_argnums=1)
        return {k: (lambda k=k: flat(*step(prm, k))) for k in fns(prm)}
    x = arr(p.x)

    def run(j):  # a jitted call, and (for flops) its lowering
        call = lambda: j(prm, x).block_until_ready()  # noqa: E731
        call.lowered = lambda: j.lower(prm, x)
        return call

    return {k: run(jax.jit(lambda prm, z, k=k: fns(prm)[k](z))) for k in fns(prm)}


def build(p: Problem, q: str, dtype: str = "float64", device: str = "cpu") -> Fns:
    """Every method for ``q`` on ``p`` that can be built here (NumPy's xderiv is CuPy's on cuda)."""
    out: Fns = {}
    for make in (_array_library, _torch, _hessquik, _jax):
        try:
            out.update(make(p, q, dtype, device))
        except ImportError:
            pass
    return out
