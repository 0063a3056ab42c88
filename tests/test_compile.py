"""Every operator traces whole: torch.compile(fullgraph=True) with no warning, jax.jit/grad/vmap; xd.compile."""

from __future__ import annotations

import os

import numpy as np
import pytest

import xderiv as xd

from .helpers import COMPILE_BACKEND, quiet_compile, rel_err, torch_compile

OPS = {
    "value": lambda net, x, s, v, mode: xd.value(net, x),
    "jacobian": lambda net, x, s, v, mode: xd.jacobian(net, x, mode=mode),
    "hessian": lambda net, x, s, v, mode: xd.hessian(net, x, mode=mode),
    "laplacian": lambda net, x, s, v, mode: xd.laplacian(net, x, mode=mode),
    "partial-laplacian": lambda net, x, s, v, mode: xd.laplacian(net, x, mode=mode, coords=[1, 2]),
    "trace_hessian": lambda net, x, s, v, mode: xd.trace_hessian(net, x, s, mode=mode),
    "hessian_diagonal": lambda net, x, s, v, mode: xd.hessian_diagonal(net, x, mode=mode),
    "hvp": lambda net, x, s, v, mode: xd.hvp(net, x, v),
    "directional": lambda net, x, s, v, mode: xd.directional(net, x, v)[1],
    "taylor": lambda net, x, s, v, mode: xd.taylor(net, x, s, order=4)[4],
    "biharmonic": lambda net, x, s, v, mode: xd.biharmonic(net, x),
    "partial": lambda net, x, s, v, mode: xd.partial(net, x, (2, 1, 0)),
    # A = s_1 s_1^T - s_0 s_0^T: indefinite, rank 2; its eigendecomposition and checks traced with the call
    "second_order": lambda net, x, s, v, mode: xd.second_order(
        net, x, s[:, 1:] @ s[:, 1:].T - s[:, :1] @ s[:, :1].T, v, 0.5
    ),
}
ONE_MODE = {"value", "hvp", "directional", "taylor", "biharmonic", "partial", "second_order"}
CASES = [(op, mode) for op in OPS for mode in (["auto"] if op in ONE_MODE else ["forward", "backward"])]


def _torch_only(backend):
    if backend.name != "torch":
        pytest.skip("torch.compile: the torch session runs it")
    if os.environ.get("XDERIV_TORCH_DEFAULT_DEVICE"):
        pytest.skip("compiled code is device-checked by the main torch pass")


def _problem(backend):
    net = xd.potential(3, 8, 2, rank=2, seed=0, xp=backend.module, device=backend.device)
    resnet = xd.resnet(3, 8, 2, out_features=2, activation="tanh", seed=1, xp=backend.module, device=backend.device)
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((6, 3)))
    s = backend.asarray(rng.standard_normal((3, 2)))
    v = backend.asarray(rng.standard_normal(3))
    return net, resnet, x, s, v


@pytest.mark.parametrize(("op", "mode"), CASES)
def test_torch_compile_traces_every_operator_whole(backend, op, mode):
    _torch_only(backend)
    import torch

    torch._dynamo.reset()
    potential, resnet, x, s, v = _problem(backend)
    net = resnet if mode == "backward" else potential  # two outputs backward; the Potential's terms forward
    eager = OPS[op](net, x, s, v, mode)
    got = quiet_compile(lambda x: OPS[op](net, x, s, v, mode), x, dynamic=False)
    assert rel_err(backend.to_numpy(got), backend.to_numpy(eager)) < 1e-13


def test_torch_compile_with_dynamic_shapes(backend):
    """The Laplacian of a two-output ResNet, traced once for every batch size (the Hessian with a symbolic
    batch size: the activation test below)."""
    _torch_only(backend)
    import torch

    torch._dynamo.reset()
    _, resnet, x, s, v = _problem(backend)
    compiled = torch_compile(lambda x: xd.laplacian(resnet, x), dynamic=True)
    for n in (5, 9, 17):
        xn = backend.asarray(np.random.default_rng(n).standard_normal((n, 3)))
        want = backend.to_numpy(xd.laplacian(resnet, xn))
        assert rel_err(backend.to_numpy(compiled(xn)), want) < 1e-13


# Every built-in and one parametrised instance of each family: their stable formulas hold
# clips, branches and constants that Dynamo must trace as they are, with symbolic batch sizes.
ACTIVATION_CASES = [
    *xd.available_activations(),
    *["softplus(beta=2)", "sine(3)", "elu(0.5)", "celu(0.5)", "gaussian(0.5)"],
]
# Cases that trace the very code of one kept: celu and selu are elu's function with other constants, and
# so are elu(0.5) and celu(0.5); sine(3) and gaussian(0.5) are softplus(beta=2)'s rescaling around a
# built-in traced on its own. Dynamo bakes the constants in: the same graph, other numbers.
SAME_CODE = {"celu", "selu", "elu(0.5)", "celu(0.5)", "sine(3)", "gaussian(0.5)"}


def _activation(spec: str) -> xd.Activation:
    if "(" not in spec:
        return xd.get_activation(spec)
    name, arg = spec[:-1].split("(")
    factory = getattr(xd.activations, name)
    return factory(float(arg.split("=")[-1]))


def test_torch_compile_traces_every_activation_with_dynamic_shapes(backend, exhaustive):
    """Hessian and a third-order Taylor row of a sum of one-hidden-layer networks, one per activation,
    traced whole with a symbolic batch size: every activation's formulas in one graph, each on inputs
    spread over its branches (Dynamo alone decides graph breaks, so the eager backend is enough).
    ``--exhaustive`` adds the cases of :data:`SAME_CODE`."""
    _torch_only(backend)
    import torch

    torch._dynamo.reset()
    specs = [spec for spec in ACTIVATION_CASES if exhaustive or spec not in SAME_CODE]
    kw = {"xp": backend.module, "device": backend.device}
    net = xd.mlp([3, 5, 1], activation=_activation(specs[0]), seed=0, **kw)
    for i, spec in enumerate(specs[1:], start=1):
        net = net + xd.mlp([3, 5, 1], activation=_activation(spec), seed=i, **kw)
    v = backend.asarray(np.array([0.3, -0.7, 0.5]))

    def ops(x):
        return xd.hessian(net, x), xd.taylor(net, x, v, order=3)[3]

    compiled = torch.compile(ops, fullgraph=True, dynamic=True, backend="eager")
    for n in (4, 7):
        # spread over the activations' branches: around 0, and out to where the stable forms switch
        x = backend.asarray(np.random.default_rng(n).standard_normal((n, 3)) * 4.0)
        for got, want in zip(compiled(x), ops(x)):
            assert rel_err(backend.to_numpy(got), backend.to_numpy(want)) < 1e-13


def test_compiled_training_step_gives_the_eager_gradients(backend):
    """loss(Δu of a converted module) under torch.compile with inductor, then .backward(): the eager weight
    gradients."""
    _torch_only(backend)
    import torch

    from xderiv.interop.torch import from_torch

    torch._dynamo.reset()
    torch.manual_seed(0)
    with torch.device(backend.device):
        model = torch.nn.Sequential(
            torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        ).double()
    net = from_torch(model)
    x = torch.rand(32, 3, dtype=torch.float64, device=backend.device)

    def loss_fn(x):
        return ((xd.laplacian(net, x) + 1.0) ** 2).mean()

    def grads(loss):
        model.zero_grad()
        loss.backward()
        # a weight the Laplacian does not depend on (the last bias) has no gradient or a zero one
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]

    eager = grads(loss_fn(x))
    compiled = grads(quiet_compile(loss_fn, x, backend="inductor"))  # generated code, forward and backward
    for a, b in zip(compiled, eager):
        assert (a - b).abs().max().item() <= 1e-12 * max(b.abs().max().item(), 1.0)


def test_compiled_call_of_a_converted_module_sees_data_edits(backend):
    """Arrays computed from a module's tensors (a normalisation, a folded slope) are computed inside the
    compiled graph: an edit through .data after compiling is seen, with no conversion probe in the graph."""
    _torch_only(backend)
    import torch

    from xderiv.interop.torch import from_torch

    torch._dynamo.reset()
    torch.manual_seed(0)

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("sd", torch.tensor([2.0, 0.5, 1.5], dtype=torch.float64, device=backend.device))
            self.a = torch.nn.Parameter(torch.full((2,), 1.5, dtype=torch.float64, device=backend.device))
            self.l = torch.nn.Linear(3, 2, dtype=torch.float64, device=backend.device)

        def forward(self, x):
            return torch.tanh(self.a * self.l(x / self.sd))

    model = Scaled()
    net = from_torch(model)
    x = torch.rand(8, 3, dtype=torch.float64, device=backend.device)
    compiled = torch.compile(lambda x: xd.value(net, x), fullgraph=True, backend="eager")  # Dynamo alone
    for edit in (lambda: None, lambda: model.sd.data.mul_(2.0), lambda: model.a.data.clamp_(min=3.0)):
        edit()
        with torch.no_grad():
            assert (compiled(x) - model(x)).abs().max().item() <= 1e-13


def test_xd_compile_equals_the_operator_on_every_backend(backend):
    if backend.name == "torch" and os.environ.get("XDERIV_TORCH_DEFAULT_DEVICE"):
        pytest.skip("compiled code is device-checked by the main torch pass")
    _, resnet, x, s, v = _problem(backend)
    lap = xd.compile(xd.laplacian, resnet, mode="forward")
    assert rel_err(backend.to_numpy(lap(x)), backend.to_numpy(xd.laplacian(resnet, x, mode="forward"))) < 1e-13
    tr = xd.compile(xd.trace_hessian, resnet)
    assert rel_err(backend.to_numpy(tr(x, s)), backend.to_numpy(xd.trace_hessian(resnet, x, s))) < 1e-13


def test_xd_compile_takes_every_argument_the_operator_takes(backend):
    """Keyword arguments, and positional ones that are not arrays (orders, multi-indices), reach the
    operator as given; on JAX they are static, each distinct value traced once."""
    if backend.name == "torch":
        pytest.skip("torch.compile passes every argument through as it is (traced in the cases above)")
    potential, resnet, x, s, v = _problem(backend)
    calls = [
        (xd.laplacian, (x,), {"coords": [0, 2]}),
        (xd.laplacian, (x,), {"coords": (1,)}),
        (xd.taylor, (x, v, 3), {}),
        (xd.taylor, (x, v), {"order": 2}),
        (xd.partial, (x, (2, 1, 0)), {}),
        (xd.trace_hessian, (x,), {"directions": s}),
    ]
    for op, args, kwargs in calls:
        compiled = xd.compile(op, resnet)
        got, want = compiled(*args, **kwargs), op(resnet, *args, **kwargs)
        for g, w in zip(got, want) if isinstance(want, tuple) else [(got, want)]:
            assert rel_err(backend.to_numpy(g), backend.to_numpy(w)) < 1e-13, (op.__name__, args[1:], kwargs)
    both = xd.compile(xd.derivatives, potential)(x, hessian=True, laplacian=True)
    eager = xd.derivatives(potential, x, hessian=True, laplacian=True)
    assert type(both) is type(eager) and both.jacobian is not None
    for name in ("value", "jacobian", "hessian", "laplacian"):
        assert rel_err(backend.to_numpy(getattr(both, name)), backend.to_numpy(getattr(eager, name))) < 1e-13


def test_xd_compile_sees_new_weights(backend):
    """In-place updates (an optimizer step) and a converted module cast after compiling are both seen."""
    _torch_only(backend)
    import torch

    from xderiv.interop.torch import from_torch

    torch.manual_seed(1)
    with torch.device(backend.device):
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    net = from_torch(model)
    hess = xd.compile(xd.hessian, net)
    x = torch.rand(4, 3, dtype=torch.float32, device=backend.device)
    assert (hess(x) - xd.hessian(net, x)).abs().max().item() < 1e-6
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    assert (hess(x) - xd.hessian(net, x)).abs().max().item() < 1e-6
    model.double()
    x64 = x.double()
    out = hess(x64)
    assert out.dtype == torch.float64
    assert (out - xd.hessian(net, x64)).abs().max().item() < 1e-13


def test_every_xd_compile_has_its_own_recompile_budget(backend):
    """torch.compile limits recompilations per code object; two compiled networks do not share the limit."""
    _torch_only(backend)
    import torch

    x = backend.asarray(np.linspace(0.1, 0.9, 12).reshape(4, 3))
    nets = [xd.mlp([3, w, 1], xp=torch, device=backend.device, seed=w) for w in (5, 6)]
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    with config.patch(**{limit: 1}):  # the ninth network used to meet the default limit of 8
        for net in nets:
            assert rel_err(backend.to_numpy(xd.compile(xd.value, net)(x)), backend.to_numpy(xd.value(net, x))) < 1e-15


def test_jax_vmap_of_an_operator_equals_the_batched_call(backend):
    if backend.name != "jax":
        pytest.skip("jax.vmap: the jax session runs it")
    import jax

    _, resnet, x, s, v = _problem(backend)
    per_point = jax.vmap(lambda p: xd.laplacian(resnet, p))(x)
    assert rel_err(backend.to_numpy(per_point), backend.to_numpy(xd.laplacian(resnet, x))) < 1e-13
    hv = jax.vmap(lambda p, w: xd.hvp(resnet, p, w), in_axes=(0, None))(x, v)
    assert rel_err(backend.to_numpy(hv), backend.to_numpy(xd.hvp(resnet, x, v))) < 1e-13


def test_cuda_graph_capture_replays_the_operator(backend):
    """An operator captured in a CUDA graph (no host synchronisation inside) replays to the eager result."""
    _torch_only(backend)
    import torch

    if getattr(backend.device, "type", None) != "cuda":
        pytest.skip("CUDA graphs need the torch session on a CUDA device (XDERIV_DEVICE=cuda)")
    _, resnet, x, s, v = _problem(backend)
    static_x = x.clone()
    for op in ("laplacian", "hessian", "trace_hessian"):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            OPS[op](resnet, static_x, s, v, "auto")  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = OPS[op](resnet, static_x, s, v, "auto")
        static_x.copy_(2.0 * x)
        graph.replay()
        want = OPS[op](resnet, 2.0 * x, s, v, "auto")
        assert rel_err(backend.to_numpy(out), backend.to_numpy(want)) < 1e-13
        static_x.copy_(x)


def _graph_compile_backend(monkeypatch, backend=None):
    """torch.compile as xd.compile calls it for graphs, with ``backend`` (default: the tests' COMPILE_BACKEND,
    aot_eager: Dynamo and AOT autograd without inductor's code generation, which costs 25 s a graph here;
    the graph benchmarks run inductor and check its results first); returns the list of graphs compiled."""
    import torch

    traces, compile_ = [], torch.compile

    def counting(graph, **kw):
        traces.append(graph)
        return compile_(graph, **{**kw, "backend": backend or COMPILE_BACKEND})

    monkeypatch.setattr(torch, "compile", counting)
    return traces


def test_xd_compile_of_a_graph_on_torch_gives_the_eager_derivatives(backend, monkeypatch):
    """A converted modified MLP, traced to aten by make_fx and compiled: the eager Laplacian and the eager
    weight gradients of a loss of it, in one trace, with no warning from xderiv."""
    _torch_only(backend)
    import warnings

    import torch

    from tests.test_interop_torch_graph import ModifiedMLP
    from xderiv.interop.torch import from_torch

    traces = _graph_compile_backend(monkeypatch)
    torch.manual_seed(0)
    with torch.device(backend.device):
        model = ModifiedMLP(d=2, width=6, depth=1).double()
    net, x = from_torch(model), torch.rand(5, 2, dtype=torch.float64, device=backend.device)
    lap = xd.compile(xd.laplacian, net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lap(x)
    assert not [w for w in caught if "xd." in str(w.message)]
    want = xd.laplacian(net, x)
    assert rel_err(backend.to_numpy(got), backend.to_numpy(want)) < 1e-13
    params = [p for name, p in model.named_parameters() if name != "out.bias"]  # the Laplacian's weights
    compiled = torch.autograd.grad((got**2).sum(), params)
    eager = torch.autograd.grad((want**2).sum(), params)
    for a, b in zip(compiled, eager):
        assert (a - b).abs().max().item() <= 1e-12 * max(b.abs().max().item(), 1.0)
    assert len(traces) == 1


def test_xd_compile_of_a_graph_retraces_when_what_it_read_changes(backend, monkeypatch):
    """The make_fx trace reads the module's own tensors: .data edits are seen without a new trace; a new
    shape, a cast (model.double()), a new structure or a reassigned Parameter traces again; arguments pass
    through (tensors traced, the rest keys of the trace); a NumPy generator as seed is refused (it would be
    drawn once)."""
    _torch_only(backend)
    import functools

    import torch
    from array_api_compat import array_namespace

    from tests.test_interop_torch_graph import ModifiedMLP
    from xderiv.interop.torch import from_torch

    traces = _graph_compile_backend(monkeypatch, "eager")  # Dynamo alone: the test is of the trace keys
    torch.manual_seed(1)
    with torch.device(backend.device):
        model = ModifiedMLP(d=3, width=5, depth=1)
    net, x = from_torch(model), torch.rand(4, 3, dtype=torch.float32, device=backend.device)
    hess = xd.compile(xd.hessian, net)
    assert (hess(x) - xd.hessian(net, x)).abs().max().item() < 1e-5
    with torch.no_grad():
        model.first.weight.data.mul_(2.0)
    assert (hess(x) - xd.hessian(net, x)).abs().max().item() < 1e-5 and len(traces) == 1
    assert (hess(x[:2]) - xd.hessian(net, x[:2])).abs().max().item() < 1e-5 and len(traces) == 2
    model.double()
    x64 = x.double()
    assert (hess(x64) - xd.hessian(net, x64)).abs().max().item() < 1e-13 and len(traces) == 3
    model.hidden[0] = torch.nn.Linear(5, 5, dtype=torch.float64, device=backend.device)
    assert (hess(x64) - xd.hessian(net, x64)).abs().max().item() < 1e-13 and len(traces) == 4
    model.out.bias = torch.nn.Parameter(model.out.bias.detach() + 1.0)  # a Parameter reassigned
    assert (hess(x64) - xd.hessian(net, x64)).abs().max().item() < 1e-13 and len(traces) == 5
    assert (xd.compile(xd.value, net)(x64) - model(x64)).abs().max().item() < 1e-13

    w = model.first.weight.T.detach()  # (3, 5): a Hessian with off-diagonal terms, which Hutchinson samples
    u = xd.function(lambda y: array_namespace(y).sum(array_namespace(y).sin(y @ w), axis=-1))
    est = xd.compile(xd.laplacian, u, estimator="hutchinson", samples=3)
    one, two = est(x64, seed=1), est(x64, seed=2)
    assert (two - xd.laplacian(u, x64, estimator="hutchinson", samples=3, seed=2)).abs().max().item() < 1e-13
    assert (one - two).abs().max().item() > 1e-3  # each seed its own directions, not the first trace's
    s = torch.rand(3, 2, dtype=torch.float64, device=backend.device)
    tr = xd.compile(xd.trace_hessian, u)
    assert (tr(x64, s) - xd.trace_hessian(u, x64, s)).abs().max().item() < 1e-13
    assert (tr(x64, 2 * s) - xd.trace_hessian(u, x64, 2 * s)).abs().max().item() < 1e-13
    traced = len(traces)
    w.mul_(0.5)  # a tensor the function closes over, edited in place: read by the same trace
    assert (tr(x64, s) - xd.trace_hessian(u, x64, s)).abs().max().item() < 1e-13 and len(traces) == traced
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        est(x64, seed=np.random.default_rng(0))
    with pytest.warns(UserWarning, match="traced per batch shape"):
        functools.partial(xd.compile, dynamic=True)(xd.laplacian, net)
