"""The methods that are timed: xderiv on each backend and mode, and every peer.

Each provider turns a :class:`bench_problems.Problem` (NumPy float64 weights) into
:class:`Method` objects whose ``fn()`` computes one quantity on the problem's
points.  Outputs are converted by ``to_numpy`` to xderiv's shapes:

=========  ===========================  ======================
quantity   Sequential (m outputs)       Potential (scalar)
=========  ===========================  ======================
value      (n, m)                       (n,)
gradient   (n, d)   (m = 1 only)        (n, d)
hessian    (n, m, d, d)                 (n, d, d)
laplacian  (n, m)                       (n,)
=========  ===========================  ======================

A peer that is not installed contributes a single ``unavailable`` record.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from bench_problems import Problem

# --------------------------------------------------------------------------- records


@dataclass
class Method:
    name: str
    quantity: str
    fn: Callable[[], object]
    to_numpy: Callable[[object], np.ndarray]
    flop_kind: str
    mem_estimate: float = 0.0  # bytes, a rough upper estimate used to skip
    backend: str = ""
    is_xderiv: bool = False
    mode: str = ""
    sync: Callable[[object], None] = field(default=lambda out: None)


@dataclass
class Unavailable:
    name: str
    quantity: str
    reason: str
    is_xderiv: bool = False


def installed(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def out_shape(p: Problem, quantity: str):
    n, d, m = p.n, p.d, p.m
    pot = p.potential is not None
    return {
        "value": (n,) if pot else (n, m),
        "gradient": (n, d),
        "hessian": (n, d, d) if pot else (n, m, d, d),
        "laplacian": (n,) if pot else (n, m),
    }[quantity]


def out_bytes(p: Problem, quantity: str, itemsize: int) -> float:
    return float(np.prod(out_shape(p, quantity))) * itemsize


# memory estimates (bytes).  Deliberately rough; used only to skip what would not fit.


def _est_nested_ad(p, q, isz):
    base = 10.0 * p.n * p.d * p.width * p.depth * isz
    return base + 2.0 * out_bytes(p, "hessian", isz)


def _est_xderiv(p, q, mode, isz):
    n, d, w, m = p.n, p.d, p.width, p.m
    jac = 4.0 * n * d * w * isz
    if q in ("value", "gradient"):
        return 6.0 * n * max(w, d) * p.depth * isz
    # xderiv's "forward" Hessian is the sum-of-layers form (J sweep + adjoints), its
    # "backward" Hessian/Laplacian carries Theta (n, w, w, m) from the output.
    theta = 3.0 * n * m * w * w * isz
    if q == "hessian":
        if mode == "backward":
            return 2.0 * out_bytes(p, q, isz) + theta + jac
        return 2.0 * out_bytes(p, q, isz) + jac
    if q == "laplacian":
        if mode == "backward":
            return theta + jac
        return jac
    raise ValueError(q)


def _est_hessquik(p, q, mode, isz):
    n, d, w = p.n, p.d, p.width
    if q == "hessian":
        # both modes form the layer-local Hessian (n, in, in, out) at every layer:
        # n w^3 at width w; forward mode also carries (n, d, d, w)
        local = 4.0 * n * max(a * a * b for a, b in (L.W.shape for L in p.layers)) * isz
        return local + (4.0 * n * d * d * w * isz if mode == "forward" else 0.0)
    return 4.0 * n * d * w * isz


# --------------------------------------------------------------------------- activations


def _act_torch(name):
    import torch

    if name == "identity":
        return lambda z: z
    if name == "tanh":
        return torch.tanh
    if name == "antitanh":
        return lambda z: torch.abs(z) + torch.log1p(torch.exp(-2.0 * torch.abs(z)))
    if name == "sigmoid":
        return torch.sigmoid
    if name == "softplus":
        return torch.nn.functional.softplus
    raise ValueError(f"no torch activation {name!r}")


def _act_jax(name):
    import jax
    import jax.numpy as jnp

    if name == "identity":
        return lambda z: z
    if name == "tanh":
        return jnp.tanh
    if name == "antitanh":
        return lambda z: jnp.abs(z) + jnp.log1p(jnp.exp(-2.0 * jnp.abs(z)))
    if name == "sigmoid":
        return jax.nn.sigmoid
    if name == "softplus":
        return jax.nn.softplus
    raise ValueError(f"no jax activation {name!r}")


# --------------------------------------------------------------------------- xderiv


def xderiv_version():
    try:
        import xderiv

        return getattr(xderiv, "__version__", "unknown")
    except Exception as exc:  # noqa: BLE001
        return f"unavailable ({type(exc).__name__}: {exc})"


def build_xderiv_model(p: Problem, backend: str, dtype: str):
    """The problem as an explicit xderiv model on ``backend`` ("numpy" | "torch")."""
    import xderiv as xd

    if backend == "numpy":
        npdt = np.dtype(dtype)

        def arr(a):
            return np.asarray(a, dtype=npdt)
    else:
        import torch

        tdt = getattr(torch, dtype)

        def arr(a):
            return torch.tensor(np.asarray(a), dtype=tdt)

    layers = []
    for L in p.layers:
        if L.kind == "dense":
            layers.append(xd.Dense(arr(L.W), arr(L.b), activation=L.activation))
        else:
            layers.append(xd.Residual(arr(L.W), arr(L.b), activation=L.activation, step=L.step))
    net = xd.Sequential(*layers)
    if p.potential is not None:
        pot = p.potential
        net = xd.Potential(net, arr(pot["w"]), arr(pot["A"]), arr(pot["c"]), arr(np.asarray(pot["b0"])))
    return net, arr(p.x)


def xderiv_methods(p: Problem, dtype: str, backend: str, quantities, modes=("auto", "forward", "backward")):
    tag = f"xderiv-{backend}"
    try:
        import xderiv as xd

        if backend == "torch" and not installed("torch"):
            raise ImportError("torch not installed")
        net, x = build_xderiv_model(p, backend, dtype)
    except Exception as exc:  # noqa: BLE001
        return [Unavailable(tag, q, f"{type(exc).__name__}: {exc}", True) for q in quantities]

    if backend == "numpy":

        def conv(a):
            return np.asarray(a, dtype=np.float64)
    else:

        def conv(a):
            return a.detach().cpu().double().numpy()

    isz = np.dtype(dtype).itemsize
    out = []

    def add(q, mode, fn, fk):
        out.append(
            Method(
                f"{tag}[{mode}]" if mode else tag, q, fn, conv, fk, _est_xderiv(p, q, mode, isz), backend, True, mode
            )
        )

    for q in quantities:
        if q == "value":
            add(q, "", lambda: net(x), "value")
        elif q == "gradient":
            for mode in modes:
                fk = {"auto": "min", "forward": "jac_forward", "backward": "grad_reverse"}[mode]
                add(q, mode, (lambda mode=mode: xd.gradient(net, x, mode=mode)), fk)
        elif q == "laplacian":
            for mode in modes:
                fk = {"auto": "min", "forward": "lap_forward", "backward": "lap_gram"}[mode]
                add(q, mode, (lambda mode=mode: xd.laplacian(net, x, mode=mode)), fk)
        elif q == "hessian":
            for mode in modes:
                fk = {"auto": "min", "forward": "hess_sumlayers", "backward": "hess_backward"}[mode]
                add(q, mode, (lambda mode=mode: xd.hessian(net, x, mode=mode)), fk)
    return out


# --------------------------------------------------------------------------- torch peers


def torch_model(p: Problem, dtype: str):
    """A plain torch function f(x) of the problem, for (..., d) or a single (d,) input."""
    import torch

    tdt = getattr(torch, dtype)

    def t(a):
        return torch.tensor(np.asarray(a), dtype=tdt)

    layers = [(L.kind, t(L.W), t(L.b), _act_torch(L.activation), L.step) for L in p.layers]
    pot = None
    if p.potential is not None:
        pot = {k: t(v) for k, v in p.potential.items()}

    def f(x):
        u = x
        for kind, W, b, act, h in layers:
            a = act(u @ W + b)
            u = u + h * a if kind == "residual" else a
        if pot is None:
            return u
        return u @ pot["w"] + 0.5 * ((x @ pot["A"]) * x).sum(-1) + x @ pot["c"] + pot["b0"]

    return f, t(p.x)


def torch_peer_methods(p: Problem, dtype: str, quantities):
    if not installed("torch"):
        return [Unavailable("torch", q, "not installed") for q in quantities]
    import torch
    from torch.func import grad, hessian, jacrev, vmap

    f, x = torch_model(p, dtype)
    pot = p.potential is not None
    isz = np.dtype(dtype).itemsize

    def conv(a):
        return a.detach().cpu().double().numpy()

    def f_scalar(xi):  # single sample -> scalar (m = 1)
        y = f(xi)
        return y if pot else y[0]

    def autograd_grad():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xx).sum(), xx)
        return g

    def double_backward_laplacian():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xx).sum(), xx, create_graph=True)
        lap = torch.zeros(x.shape[0], dtype=x.dtype)
        for i in range(x.shape[1]):
            (gi,) = torch.autograd.grad(g[:, i].sum(), xx, retain_graph=True)
            lap = lap + gi[:, i]
        return lap if pot else lap[:, None]

    vh = vmap(hessian(f))
    vjj = vmap(jacrev(jacrev(f)))

    def trace(H):
        return torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)

    small = 20.0 * p.n * p.width * p.depth * isz + 4.0 * p.n * p.d * isz
    out = []
    for q in quantities:
        if q == "value":
            out.append(Method("torch eager", q, lambda: f(x), conv, "value", small, "torch"))
        elif q == "gradient":
            out.append(Method("torch autograd", q, autograd_grad, conv, "grad_reverse", small, "torch"))
            out.append(
                Method(
                    "torch.func vmap(grad)", q, lambda: vmap(grad(f_scalar))(x), conv, "grad_reverse", small, "torch"
                )
            )
        elif q == "hessian":
            est = _est_nested_ad(p, q, isz)
            out.append(Method("torch.func vmap(hessian)", q, lambda: vh(x), conv, "nested_ad", est, "torch"))
            out.append(
                Method("torch.func vmap(jacrev(jacrev))", q, lambda: vjj(x), conv, "nested_ad", 1.5 * est, "torch")
            )
        elif q == "laplacian":
            est = _est_nested_ad(p, q, isz)
            out.append(Method("torch.func tr(vmap(hessian))", q, lambda: trace(vh(x)), conv, "nested_ad", est, "torch"))
            out.append(
                Method(
                    "torch autograd double-backward loop",
                    q,
                    double_backward_laplacian,
                    conv,
                    "nested_ad",
                    small,
                    "torch",
                )
            )
    return out


# --------------------------------------------------------------------------- hessQuik


def hessquik_model(p: Problem, dtype: str):
    import hessQuik.activations as hact
    import hessQuik.layers as hlay
    import hessQuik.networks as hnet
    import torch

    tdt = getattr(torch, dtype)
    acts = {
        "identity": hact.identityActivation,
        "tanh": hact.tanhActivation,
        "antitanh": hact.antiTanhActivation,  # |z| + log(1 + exp(-2|z|)), same as xderiv's
        "sigmoid": hact.sigmoidActivation,
        "softplus": hact.softplusActivation,
    }
    mods = []
    for L in p.layers:
        a, b = L.W.shape
        if L.kind == "dense":
            lay = hlay.singleLayer(a, b, act=acts[L.activation](), dtype=tdt)
            tgt = lay
        else:
            lay = hlay.resnetLayer(a, h=L.step, act=acts[L.activation](), dtype=tdt)
            tgt = lay.layer
        with torch.no_grad():
            tgt.K.copy_(torch.tensor(L.W, dtype=tdt))  # hessQuik's K is (in, out): same convention
            tgt.b.copy_(torch.tensor(L.b, dtype=tdt))
        mods.append(lay)
    quad = None
    if p.potential is not None:
        pot = p.potential
        w = pot["w"]
        lay = hlay.singleLayer(w.shape[0], 1, act=hact.identityActivation(), dtype=tdt)
        with torch.no_grad():
            lay.K.copy_(torch.tensor(w[:, None], dtype=tdt))
            lay.b.zero_()
        mods.append(lay)
        As = 0.5 * (pot["A"] + pot["A"].T)
        quad = {
            k: torch.tensor(np.asarray(v), dtype=tdt)
            for k, v in {"A": As, "c": pot["c"], "b0": pot["b0"], "trA": np.trace(As)}.items()
        }
    net = hnet.NN(*mods)
    for prm in net.parameters():
        prm.requires_grad_(False)
    return net, quad, torch.tensor(p.x, dtype=tdt)


def hessquik_methods(p: Problem, dtype: str, quantities):
    if not installed("hessQuik") or not installed("torch"):
        return [Unavailable("hessQuik", q, "not installed") for q in quantities if q != "value"]
    net, quad, x = hessquik_model(p, dtype)
    n, _d, m = p.n, p.d, p.m
    isz = np.dtype(dtype).itemsize

    def conv(a):
        return a.detach().cpu().double().numpy()

    def grad(fwd):
        _, g, _ = net(x, do_gradient=True, forward_mode=fwd)  # (n, d, m)
        if quad is None:
            return g[..., 0]
        return g[..., 0] + x @ quad["A"] + quad["c"]

    def hess(fwd):
        _, _, H = net(x, do_gradient=True, do_Hessian=True, forward_mode=fwd)  # (n, d, d, m)
        return H.permute(0, 3, 1, 2)

    def lap():
        _, _, L = net(x, do_gradient=True, do_Laplacian=True)  # (n, 1, m)
        L = L.reshape(n, m)
        if quad is None:
            return L
        return L[:, 0] + quad["trA"]

    out = []
    for q in quantities:
        if q == "gradient":
            for mode, fwd, fk in (("forward", True, "jac_forward"), ("backward", False, "grad_reverse")):
                out.append(
                    Method(
                        f"hessQuik[{mode}]",
                        q,
                        (lambda fwd=fwd: grad(fwd)),
                        conv,
                        fk,
                        _est_hessquik(p, q, mode, isz),
                        "torch",
                    )
                )
        elif q == "hessian":
            for mode, fwd, fk in (("forward", True, "hessquik_forward"), ("backward", False, "hess_backward")):
                out.append(
                    Method(
                        f"hessQuik[{mode}]",
                        q,
                        (lambda fwd=fwd: hess(fwd)),
                        conv,
                        fk,
                        _est_hessquik(p, q, mode, isz),
                        "torch",
                    )
                )
        elif q == "laplacian":
            out.append(
                Method(
                    "hessQuik[laplacian]", q, lap, conv, "lap_forward", _est_hessquik(p, q, "laplacian", isz), "torch"
                )
            )
    return out


# --------------------------------------------------------------------------- jax / folx


def jax_model(p: Problem, dtype: str):
    import jax.numpy as jnp

    jdt = getattr(jnp, dtype)
    params = {
        "layers": [(jnp.asarray(L.W, dtype=jdt), jnp.asarray(L.b, dtype=jdt)) for L in p.layers],
    }
    if p.potential is not None:
        params["pot"] = {k: jnp.asarray(v, dtype=jdt) for k, v in p.potential.items()}
    meta = [(L.kind, _act_jax(L.activation), L.step) for L in p.layers]

    def f(params, x):
        u = x
        for (kind, act, h), (W, b) in zip(meta, params["layers"]):
            a = act(u @ W + b)
            u = u + h * a if kind == "residual" else a
        if "pot" not in params:
            return u
        pot = params["pot"]
        return u @ pot["w"] + 0.5 * jnp.sum((x @ pot["A"]) * x, axis=-1) + x @ pot["c"] + pot["b0"]

    return f, params, jnp.asarray(p.x, dtype=jdt)


def jax_methods(p: Problem, dtype: str, quantities):
    if not (installed("jax") and installed("jaxlib")):
        return [Unavailable("jax", q, "not installed") for q in quantities]
    import jax
    import jax.numpy as jnp

    f, params, x = jax_model(p, dtype)
    pot = p.potential is not None
    isz = np.dtype(dtype).itemsize

    def conv(a):
        return np.asarray(a, dtype=np.float64)

    def sync(a):
        a.block_until_ready()

    def f_scalar(prm, xi):
        y = f(prm, xi)
        return y if pot else y[0]

    value = jax.jit(f)
    gradient = jax.jit(jax.vmap(jax.grad(f_scalar, argnums=1), in_axes=(None, 0)))
    hess = jax.jit(jax.vmap(jax.hessian(f, argnums=1), in_axes=(None, 0)))
    lap_tr = jax.jit(
        lambda prm, X: jnp.trace(jax.vmap(jax.hessian(f, argnums=1), in_axes=(None, 0))(prm, X), axis1=-2, axis2=-1)
    )
    small = 20.0 * p.n * p.width * p.depth * isz + 4.0 * p.n * p.d * isz
    est = _est_nested_ad(p, "hessian", isz)
    out = []
    for q in quantities:
        if q == "value":
            out.append(Method("jax jit", q, lambda: value(params, x), conv, "value", small, "jax", sync=sync))
        elif q == "gradient":
            out.append(
                Method(
                    "jax vmap(grad) jit", q, lambda: gradient(params, x), conv, "grad_reverse", small, "jax", sync=sync
                )
            )
        elif q == "hessian":
            out.append(Method("jax.hessian jit", q, lambda: hess(params, x), conv, "nested_ad", est, "jax", sync=sync))
        elif q == "laplacian":
            out.append(
                Method("jax tr(hessian) jit", q, lambda: lap_tr(params, x), conv, "nested_ad", est, "jax", sync=sync)
            )
            if installed("folx"):
                from folx import forward_laplacian

                def one(prm, xi):
                    return forward_laplacian(lambda z: f(prm, z))(xi).laplacian

                folx_lap = jax.jit(jax.vmap(one, in_axes=(None, 0)))
                out.append(
                    Method(
                        "folx forward_laplacian jit",
                        q,
                        lambda folx_lap=folx_lap: folx_lap(params, x),
                        conv,
                        "lap_forward",
                        6.0 * p.n * p.d * p.width * p.depth * isz,
                        "jax",
                        sync=sync,
                    )
                )
            else:
                out.append(Unavailable("folx forward_laplacian jit", q, "not installed"))
    return out


def all_methods(p: Problem, dtype: str, backends=("numpy", "torch"), peers=("torch", "hessQuik", "jax")):
    qs = p.quantities
    out = []
    for b in backends:
        out += xderiv_methods(p, dtype, b, qs)
    if "torch" in peers:
        out += torch_peer_methods(p, dtype, qs)
    if "hessQuik" in peers:
        out += hessquik_methods(p, dtype, qs)
    if "jax" in peers:
        out += jax_methods(p, dtype, qs)
    return out
