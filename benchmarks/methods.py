"""The timed methods: xderiv on each backend and mode, and every peer, built from one Problem.

``build(p, dtype, device)`` returns ``({(quantity, name): Method}, {peer: why unavailable})``.
``Method.fn()`` computes the quantity on the problem's points and returns once the device
is done; ``Method.conv`` turns the result into NumPy float64 in xderiv's shapes: value,
Laplacian and the operators ``(n, m)``, gradient ``(n, d)``, Hessian ``(n, m, d, d)``
(a potential drops the ``m`` axis).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from problems import Problem

MODES = ("auto", "forward", "backward")
# peers that get a quantity from the full Hessian: name per quantity
HESS_NAMES = {
    "torch.func": {"hessian": "vmap(hessian)", "laplacian": "tr(vmap(hessian))"},
    "jax": {"hessian": "jax.hessian jit", "laplacian": "jax tr(hessian) jit"},
}
PEERS = {
    "value": ["torch eager", "jax jit"],
    "gradient": ["torch autograd", "torch.func vmap(grad)", "hessQuik[forward]", "hessQuik[backward]",
                 "jax vmap(grad) jit"],
    "hessian": ["torch.func vmap(hessian)", "torch.func vmap(jacrev(jacrev))", "hessQuik[forward]",
                "hessQuik[backward]", "jax.hessian jit"],
    "laplacian": ["torch.func tr(vmap(hessian))", "torch autograd double-backward loop", "hessQuik[laplacian]",
                  "jax tr(hessian) jit", "folx forward_laplacian jit"],
}  # fmt: skip
OPERATOR_PEERS = ["torch.func vmap(hessian) + contraction", "jax.hessian jit + contraction"]
# Taylor mode: no forward/backward choice; the biharmonic also by its d^2-direction Taylor formula
HIGHER_PEERS = {
    "taylor4": ["torch.func jvp(jvp(jvp(jvp)))", "jax jvp(jvp(jvp(jvp))) jit"],
    "biharmonic": ["torch.func vmap(hessian(laplacian))", "jax vmap(hessian(laplacian)) jit"],
}


@dataclass
class Method:
    fn: Callable[[], object]
    conv: Callable[[object], np.ndarray]
    mem: float = 0.0  # rough upper estimate of the memory one call needs (bytes)


def backends(device: str):
    return ("cupy", "torch") if device == "cuda" else ("numpy", "torch")


CUPY_PLAIN = "xderiv-cupy[plain]"
"""CuPy eager, mode auto, with the plain Array API expressions instead of CuPy's fused kernels (their baseline)."""

SPLIT = "trace_hessian(S+) - trace_hessian(S-)"
"""``second_order`` as a user writes it by hand: A = S+ S+^T - S- S-^T by ``eigh`` (once, untimed), two traces."""

COMPILED = ("xderiv-torch xd.compile", "xderiv-jax xd.compile")
"""xderiv traced by a compiler (torch.compile, plus CUDA graphs on a GPU; jax.jit): mode auto, Laplacian and Hessian."""


def names(quantity: str, device: str = "cpu") -> list[str]:
    """Every method name timed for ``quantity`` (xderiv first)."""
    if quantity == "value" or quantity == "taylor4":
        xs = [f"xderiv-{b}" for b in backends(device)]
    elif quantity == "biharmonic":
        xs = [f"xderiv-{b}{m}" for b in backends(device) for m in ("", "[directions]")]
    else:
        xs = [f"xderiv-{b}[{m}]" for b in backends(device) for m in MODES]
    if quantity == "second_order":
        xs += [f"xderiv-{b} {SPLIT}" for b in backends(device)]
    if quantity in ("laplacian", "hessian"):
        xs += list(COMPILED)
        if device == "cuda":
            xs.append(CUPY_PLAIN)
    return xs + HIGHER_PEERS.get(quantity, PEERS.get(quantity, OPERATOR_PEERS))


def reference_name(quantity: str) -> str:
    """The xderiv method whose float64 NumPy answer every method of ``quantity`` is checked against."""
    return "xderiv-numpy" if quantity in ("value", "taylor4", "biharmonic") else "xderiv-numpy[auto]"


def _contract(q, H, S, diag, einsum, A=None):
    """The operator applied to a full Hessian (..., d, d)."""
    if q == "hessian":
        return H
    if q == "laplacian":
        return diag(H).sum(-1)
    if q == "partial_laplacian":
        return diag(H)[..., 1:].sum(-1)
    if q == "second_order":
        return einsum("...ij,ij->...", H, A)
    return einsum("...ij,ik,jk->...", H, S, S)  # trace_hessian


def _act(name, lib):
    if name == "identity":
        return lambda z: z
    if name == "tanh":
        return lib.tanh
    if name == "antitanh":
        return lambda z: lib.abs(z) + lib.log1p(lib.exp(-2.0 * lib.abs(z)))
    raise ValueError(name)


def _estimates(p: Problem, isz: int):
    """Rough memory (bytes) of: xderiv's Hessian, nested autodiff, hessQuik's forward and backward Hessian."""
    n, d, w, m = p.n, p.d, p.width, p.m
    hess = 1.0 * n * m * d * d * isz
    local = 4.0 * n * max(a * a * b for a, b in (L.W.shape for L in p.layers)) * isz
    return 2 * hess + 4.0 * n * d * w * isz, 10.0 * n * d * w * p.depth * isz + 2 * hess, local + 4 * hess * w, local


# --------------------------------------------------------------------------- xderiv


def _xderiv(p: Problem, dtype: str, backend: str, device: str, est_hess: float):
    import xderiv as xd

    if backend == "torch":
        import torch

        def arr(a):
            return torch.tensor(np.asarray(a), dtype=getattr(torch, dtype), device=device)

        def conv(a):
            return a.detach().cpu().double().numpy()

        sync = torch.cuda.synchronize if device == "cuda" else None
    else:
        lib = __import__(backend)

        def arr(a):
            return lib.asarray(np.asarray(a), dtype=dtype)

        def conv(a):
            return np.asarray(a.get() if hasattr(a, "get") else a, dtype=np.float64)

        sync = lib.cuda.Device().synchronize if backend == "cupy" else None

    layers = [
        xd.Dense(arr(L.W), arr(L.b), activation=L.activation)
        if L.kind == "dense"
        else xd.Residual(arr(L.W), arr(L.b), activation=L.activation, step=L.step)
        for L in p.layers
    ]
    net = xd.Sequential(*layers)
    if p.potential is not None:
        q = p.potential
        net = xd.Potential(net, arr(q["w"]), arr(q["A"]), arr(q["c"]), arr(np.asarray(q["b0"])))
    x = arr(p.x)
    S = None if p.S is None else arr(p.S)
    A = None if p.A is None else arr(p.A)
    coords = list(range(1, p.d))
    ops = {
        "gradient": lambda m: xd.gradient(net, x, mode=m),
        "hessian": lambda m: xd.hessian(net, x, mode=m),
        "laplacian": lambda m: xd.laplacian(net, x, mode=m),
        "trace_hessian": lambda m: xd.trace_hessian(net, x, S, mode=m),
        "partial_laplacian": lambda m: xd.laplacian(net, x, mode=m, coords=coords),
        "second_order": lambda m: xd.second_order(net, x, A, mode=m),
    }

    def timed(f):
        if sync is None:
            return f

        def g():
            out = f()
            sync()
            return out

        return g

    tag = f"xderiv-{backend}"
    out = {("value", tag): Method(timed(lambda: net(x)), conv)}
    if p.A is not None:
        w, q = np.linalg.eigh(p.A)
        tol = p.d * np.finfo(float).eps * np.abs(w).max()  # the null directions of a low-rank A dropped
        pos, neg = arr(q[:, w > tol] * np.sqrt(w[w > tol])), arr(q[:, w < -tol] * np.sqrt(-w[w < -tol]))
        split = lambda: xd.trace_hessian(net, x, pos) - xd.trace_hessian(net, x, neg)  # noqa: E731
        out[("second_order", f"{tag} {SPLIT}")] = Method(timed(split), conv)
    if p.v is not None:
        v = arr(p.v)
        out[("taylor4", tag)] = Method(timed(lambda: xd.taylor(net, x, v, order=4)[4]), conv)
    from xderiv.operators.biharmonic import biharmonic_by_directions

    out[("biharmonic", tag)] = Method(timed(lambda: xd.biharmonic(net, x)), conv)
    out[("biharmonic", f"{tag}[directions]")] = Method(timed(lambda: biharmonic_by_directions(net, x)), conv)
    for q, op in ops.items():
        for m in MODES:
            out[(q, f"{tag}[{m}]")] = Method(timed(lambda op=op, m=m: op(m)), conv, est_hess if q == "hessian" else 0)
    if backend == "cupy":
        for q in ("laplacian", "hessian"):
            plain = _with_plain_primitives(type(x), ops[q])
            mem = est_hess if q == "hessian" else 0
            out[(q, CUPY_PLAIN)] = Method(timed(lambda plain=plain: plain("auto")), conv, mem)
    return out


def _with_plain_primitives(array_type: type, fn: Callable[[str], object]) -> Callable[[str], object]:
    """``fn`` run with the plain Array API expressions for ``array_type``, not its namespace's fused primitives."""
    import dataclasses

    from xderiv.backends import namespace as _namespace
    from xderiv.backends.primitives import PLAIN

    def run(mode: str) -> object:
        fused = _namespace._KINDS[array_type]
        _namespace._KINDS[array_type] = dataclasses.replace(fused, prims=PLAIN)
        try:
            return fn(mode)
        finally:
            _namespace._KINDS[array_type] = fused

    return run


def _compiled(p: Problem, dtype: str, device: str, est_hess: float):
    """``xd.compile`` of the Laplacian and Hessian on torch (``torch.compile``; CUDA graphs on a GPU) and on jax."""
    import xderiv as xd

    out = {}
    for lib in ("torch", "jax"):
        try:
            if lib == "torch":
                import torch

                def arr(a, torch=torch):
                    return torch.tensor(np.asarray(a), dtype=getattr(torch, dtype), device=device)

                def conv(a):
                    return a.detach().cpu().double().numpy()

                def done(a, torch=torch):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    return a.clone() if device == "cuda" else a  # a replayed CUDA graph reuses its output

            else:
                import jax
                import jax.numpy as jnp

                jax.config.update("jax_enable_x64", True)
                if device == "cuda" and jax.default_backend() != "gpu":
                    continue

                def arr(a, jnp=jnp):
                    return jnp.asarray(np.asarray(a), dtype=dtype)

                def conv(a):
                    return np.asarray(a, dtype=np.float64)

                def done(a):
                    return a.block_until_ready()

        except ImportError:
            continue
        layers = [
            xd.Dense(arr(L.W), arr(L.b), activation=L.activation)
            if L.kind == "dense"
            else xd.Residual(arr(L.W), arr(L.b), activation=L.activation, step=L.step)
            for L in p.layers
        ]
        net = xd.Sequential(*layers)
        if p.potential is not None:
            q = p.potential
            net = xd.Potential(net, arr(q["w"]), arr(q["A"]), arr(q["c"]), arr(np.asarray(q["b0"])))
        x = arr(p.x)
        for q, op in (("laplacian", xd.laplacian), ("hessian", xd.hessian)):
            f = xd.compile(op, net)
            out[(q, f"xderiv-{lib} xd.compile")] = Method(
                lambda f=f, x=x, done=done: done(f(x)), conv, est_hess if q == "hessian" else 0
            )
    return out


# --------------------------------------------------------------------------- torch peers


def _torch_function(p: Problem, dtype: str, device: str):
    """The problem as a plain torch function f(x) of (..., d) or (d,) inputs."""
    import torch

    def t(a):
        return torch.tensor(np.asarray(a), dtype=getattr(torch, dtype), device=device)

    layers = [(L.kind, t(L.W), t(L.b), _act(L.activation, torch), L.step) for L in p.layers]
    pot = None if p.potential is None else {k: t(v) for k, v in p.potential.items()}

    def f(x):
        u = x
        for kind, W, b, act, h in layers:
            a = act(u @ W + b)
            u = u + h * a if kind == "residual" else a
        if pot is None:
            return u
        return u @ pot["w"] + 0.5 * ((x @ pot["A"]) * x).sum(-1) + x @ pot["c"] + pot["b0"]

    return f, t(p.x), t


def _torch(p: Problem, dtype: str, device: str, est_nested: float):
    import torch
    from torch.func import grad, hessian, jacrev, vmap

    f, x, t = _torch_function(p, dtype, device)
    S = None if p.S is None else t(p.S)
    A = None if p.A is None else t(p.A)
    pot = p.potential is not None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def conv(a):
        return a.detach().cpu().double().numpy()

    def timed(g):
        def h():
            out = g()
            sync()
            return out

        return h

    def autograd_grad():
        xx = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(xx).sum(), xx)[0]

    def double_backward_laplacian():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xx).sum(), xx, create_graph=True)
        lap = sum(torch.autograd.grad(g[:, i].sum(), xx, retain_graph=True)[0][:, i] for i in range(p.d))
        return lap if pot else lap[:, None]

    vh = vmap(hessian(f))
    vjj = vmap(jacrev(jacrev(f)))
    out = {
        ("value", "torch eager"): Method(timed(lambda: f(x)), conv),
        ("gradient", "torch autograd"): Method(timed(autograd_grad), conv),
        ("gradient", "torch.func vmap(grad)"): Method(timed(lambda: vmap(grad(lambda xi: f(xi).sum()))(x)), conv),
        ("hessian", "torch.func vmap(jacrev(jacrev))"): Method(timed(lambda: vjj(x)), conv, 1.5 * est_nested),
        ("laplacian", "torch autograd double-backward loop"): Method(timed(double_backward_laplacian), conv),
    }
    if p.v is not None:
        vt = t(p.v).expand(p.n, p.d)

        def nested_jvp():
            g = f
            for _ in range(4):
                g = (lambda prev: lambda x: torch.func.jvp(prev, (x,), (vt,))[1])(g)
            return g(x)

        out[("taylor4", "torch.func jvp(jvp(jvp(jvp)))")] = Method(timed(nested_jvp), conv, 16 * est_nested)

    def one(xi):
        return f(xi).reshape(())

    def lap(xi):
        return torch.diagonal(hessian(one)(xi)).sum()

    bih = vmap(lambda xi: torch.diagonal(hessian(lap)(xi)).sum())
    out[("biharmonic", "torch.func vmap(hessian(laplacian))")] = Method(
        timed(lambda: bih(x).reshape(p.n, p.m)), conv, p.d * p.d * est_nested
    )
    for q in ("hessian", "laplacian", "trace_hessian", "partial_laplacian", "second_order"):
        name = "torch.func " + HESS_NAMES["torch.func"].get(q, "vmap(hessian) + contraction")
        diag = lambda H: torch.diagonal(H, dim1=-2, dim2=-1)  # noqa: E731
        fn = timed(lambda q=q: _contract(q, vh(x), S, diag, torch.einsum, A))
        out[(q, name)] = Method(fn, conv, est_nested)
    return out


def _hessquik(p: Problem, dtype: str, device: str, est_fwd: float, est_bwd: float):
    import hessQuik.activations as hact
    import hessQuik.layers as hlay
    import hessQuik.networks as hnet
    import torch

    tdt = getattr(torch, dtype)

    def t(a):
        return torch.tensor(np.asarray(a), dtype=tdt, device=device)

    acts = {"identity": hact.identityActivation, "tanh": hact.tanhActivation, "antitanh": hact.antiTanhActivation}
    mods = []
    specs = [(L.kind, L.W, L.b, L.activation, L.step) for L in p.layers]
    if p.potential is not None:  # w . N(s) as a last linear layer; the quadratic part is added analytically
        specs.append(("dense", p.potential["w"][:, None], np.zeros(1), "identity", 1.0))
    for kind, W, b, act, h in specs:
        if kind == "dense":
            lay = tgt = hlay.singleLayer(*W.shape, act=acts[act](), dtype=tdt, device=device)
        else:
            lay = hlay.resnetLayer(W.shape[0], h=h, act=acts[act](), dtype=tdt, device=device)
            tgt = lay.layer
        with torch.no_grad():
            tgt.K.copy_(t(W))  # hessQuik's K is (in, out): the same convention
            tgt.b.copy_(t(b))
        mods.append(lay)
    net = hnet.NN(*mods)
    for prm in net.parameters():
        prm.requires_grad_(False)
    x, n, m = t(p.x), p.n, p.m
    pot = p.potential
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def conv(a):
        return a.detach().cpu().double().numpy()

    def grad(fwd):
        _, g, _ = net(x, do_gradient=True, forward_mode=fwd)  # (n, d, m)
        sync()
        return g[..., 0] if pot is None else g[..., 0] + x @ t(0.5 * (pot["A"] + pot["A"].T)) + t(pot["c"])

    def hess(fwd):
        _, _, H = net(x, do_gradient=True, do_Hessian=True, forward_mode=fwd)  # (n, d, d, m)
        sync()
        return H.permute(0, 3, 1, 2)

    def lap():
        _, _, L = net(x, do_gradient=True, do_Laplacian=True)  # (n, 1, m)
        sync()
        return L.reshape(n, m) if pot is None else L.reshape(n) + float(np.trace(pot["A"]))

    return {
        ("gradient", "hessQuik[forward]"): Method(lambda: grad(True), conv),
        ("gradient", "hessQuik[backward]"): Method(lambda: grad(False), conv),
        ("hessian", "hessQuik[forward]"): Method(lambda: hess(True), conv, est_fwd),
        ("hessian", "hessQuik[backward]"): Method(lambda: hess(False), conv, est_bwd),
        ("laplacian", "hessQuik[laplacian]"): Method(lap, conv),
    }


# --------------------------------------------------------------------------- jax / folx


def _jax(p: Problem, dtype: str, est_nested: float):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    jdt = getattr(jnp, dtype)
    params = {"layers": [(jnp.asarray(L.W, dtype=jdt), jnp.asarray(L.b, dtype=jdt)) for L in p.layers]}
    if p.potential is not None:
        params["pot"] = {k: jnp.asarray(v, dtype=jdt) for k, v in p.potential.items()}
    if p.S is not None:
        params["S"] = jnp.asarray(p.S, dtype=jdt)
    if p.A is not None:
        params["A"] = jnp.asarray(p.A, dtype=jdt)
    meta = [(L.kind, _act(L.activation, jnp), L.step) for L in p.layers]
    x = jnp.asarray(p.x, dtype=jdt)

    def f(prm, x):
        u = x
        for (kind, act, h), (W, b) in zip(meta, prm["layers"]):
            a = act(u @ W + b)
            u = u + h * a if kind == "residual" else a
        if "pot" not in prm:
            return u
        q = prm["pot"]
        return u @ q["w"] + 0.5 * jnp.sum((x @ q["A"]) * x, axis=-1) + x @ q["c"] + q["b0"]

    def conv(a):
        return np.asarray(a, dtype=np.float64)

    def timed(g):
        return lambda: g(params, x).block_until_ready()

    vhess = jax.vmap(jax.hessian(f, argnums=1), in_axes=(None, 0))
    gradient = jax.vmap(jax.grad(lambda prm, xi: f(prm, xi).sum(), argnums=1), in_axes=(None, 0))
    out = {
        ("value", "jax jit"): Method(timed(jax.jit(f)), conv),
        ("gradient", "jax vmap(grad) jit"): Method(timed(jax.jit(gradient)), conv),
    }
    if p.v is not None:
        params["v"] = jnp.broadcast_to(jnp.asarray(p.v, dtype=jdt), (p.n, p.d))

        def nested_jvp(prm, x):
            g = lambda z: f(prm, z)  # noqa: E731
            for _ in range(4):
                g = (lambda prev: lambda z: jax.jvp(prev, (z,), (prm["v"],))[1])(g)
            return g(x)

        out[("taylor4", "jax jvp(jvp(jvp(jvp))) jit")] = Method(timed(jax.jit(nested_jvp)), conv, 16 * est_nested)

    def lap(prm, xi):
        return jnp.trace(jax.hessian(lambda z: f(prm, z).reshape(()))(xi))

    bih = jax.vmap(lambda prm, xi: jnp.trace(jax.hessian(lambda z: lap(prm, z))(xi)), in_axes=(None, 0))
    out[("biharmonic", "jax vmap(hessian(laplacian)) jit")] = Method(
        timed(jax.jit(lambda prm, x: bih(prm, x).reshape(p.n, p.m))), conv, p.d * p.d * est_nested
    )
    diag = lambda H: jnp.diagonal(H, axis1=-2, axis2=-1)  # noqa: E731
    for q in ("hessian", "laplacian", "trace_hessian", "partial_laplacian", "second_order"):
        g = jax.jit(lambda prm, x, q=q: _contract(q, vhess(prm, x), prm.get("S"), diag, jnp.einsum, prm.get("A")))
        out[(q, HESS_NAMES["jax"].get(q, "jax.hessian jit + contraction"))] = Method(timed(g), conv, est_nested)
    try:
        from folx import forward_laplacian
    except ImportError:
        return out
    one = lambda prm, xi: forward_laplacian(lambda z: f(prm, z))(xi).laplacian  # noqa: E731
    out[("laplacian", "folx forward_laplacian jit")] = Method(timed(jax.jit(jax.vmap(one, in_axes=(None, 0)))), conv)
    return out


def build(p: Problem, dtype: str, device: str = "cpu"):
    """Every method for ``p`` that can be built here, and why the others cannot."""
    est_hess, est_nested, est_hq_fwd, est_hq_bwd = _estimates(p, np.dtype(dtype).itemsize)
    builders = {f"xderiv-{b}": (lambda b=b: _xderiv(p, dtype, b, device, est_hess)) for b in backends(device)}
    builders["xderiv compiled"] = lambda: _compiled(p, dtype, device, est_hess)
    builders["torch"] = lambda: _torch(p, dtype, device, est_nested)
    builders["hessQuik"] = lambda: _hessquik(p, dtype, device, est_hq_fwd, est_hq_bwd)
    builders["jax"] = lambda: _jax(p, dtype, est_nested)
    methods, missing = {}, {}
    for peer, make in builders.items():
        try:
            methods.update(make())
        except ImportError as exc:
            missing[peer] = f"{type(exc).__name__}: {exc}"
    return methods, missing
