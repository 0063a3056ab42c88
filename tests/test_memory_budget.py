"""The memory budget in training: checkpointed chunks give the same gradients and keep what autodiff holds within it.

``xd.set_memory_budget(nbytes, checkpoint=True)`` runs each chunk of a call that autodiff records
as a checkpoint (torch.utils.checkpoint non-reentrant, jax.checkpoint).  Checked here: the
results and every weight's gradient equal the unchunked call's to 1e-12 (chains in both modes, a
Potential, a graph), torch's saved tensors and the peak of live tensors in the backward pass stay
under a small budget (counted exactly, by saved-tensor hooks and a dispatch mode, not by RSS),
inference is untouched, and the checkpointed call traces under torch.compile and jax.jit.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest

import xderiv as xd
from xderiv.backends.checkpoint import recomputing
from xderiv.engine.call import checkpointing

from .helpers import rel_err


@pytest.fixture(autouse=True)
def _default_budget():
    yield
    xd.set_memory_budget(1 << 30)


def _nets(backend):
    mlp = xd.mlp([3, 16, 16, 2], activation="tanh", seed=0, xp=backend.module, device=backend.device)
    pot = xd.potential(3, 8, 2, rank=2, seed=1, xp=backend.module, device=backend.device)
    return mlp, pot


def _graph(net):
    return xd.function(lambda x: net(x) * (1.0 + x[..., :1] ** 2))


CASES = {
    "laplacian-forward": lambda net, x, **kw: xd.laplacian(net, x, mode="forward", **kw),
    "laplacian-backward": lambda net, x, **kw: xd.laplacian(net, x, mode="backward", **kw),
    "hessian": lambda net, x, **kw: xd.hessian(net, x, **kw),
    "potential": lambda net, x, **kw: xd.laplacian(net, x, **kw),
    "graph": lambda net, x, **kw: xd.laplacian(_graph(net), x, **kw),
}


def _net_for(case, mlp, pot):
    return pot if case == "potential" else mlp


def test_the_budget_and_its_checkpoint_setting():
    assert xd.get_memory_budget() == 1 << 30 and not checkpointing()
    with xd.memory_budget(1 << 20, checkpoint=True):
        assert xd.get_memory_budget() == 1 << 20 and checkpointing()
    assert xd.get_memory_budget() == 1 << 30 and not checkpointing()
    xd.set_memory_budget(1 << 22, checkpoint=True)
    xd.set_memory_budget(1 << 21)  # each call states the whole policy
    assert not checkpointing()
    with pytest.raises(TypeError, match="checkpoint"):
        xd.set_memory_budget(1 << 20, checkpoint="yes")
    with pytest.raises(ValueError, match="positive"):
        xd.set_memory_budget(0, checkpoint=True)


def test_nothing_recorded_nothing_checkpointed(backend):
    """Inference is unchanged: no wrapper where nothing is differentiated (every backend), same results."""
    mlp, pot = _nets(backend)
    x = backend.asarray(np.random.default_rng(0).standard_normal((12, 3)))
    if backend.name not in ("torch", "jax"):
        assert recomputing(backend.xp, [x, *mlp.arrays()], opaque=True) is None
    elif backend.name == "jax":  # concrete arrays outside any transformation
        assert recomputing(backend.xp, [x, *mlp.arrays()], opaque=True) is None
    cases = ("laplacian-forward", "potential", "graph") if backend.name != "jax" else ("graph",)  # eager JAX: slow
    for case in cases:
        op, net = CASES[case], _net_for(case, mlp, pot)
        plain = op(net, x, chunk_size=6)
        with xd.memory_budget(1 << 30, checkpoint=True):
            got = op(net, x, chunk_size=6)
        assert rel_err(backend.to_numpy(got), backend.to_numpy(plain)) < 1e-13, case


def _torch_only(backend):
    if backend.name != "torch":
        pytest.skip("torch autograd: the torch session runs it")


def _torch_grads(op, net, x, **kw):
    """The loss mean(op ** 2) and its gradient in every weight and in x (zeros where none flows)."""
    import torch

    ws = net.arrays()
    for w in ws:
        w.grad = None
    x = x.detach().requires_grad_(True)
    loss = (op(net, x, **kw) ** 2).mean()
    loss.backward()
    return [loss.detach()] + [w.grad if w.grad is not None else torch.zeros_like(w) for w in ws] + [x.grad]


@pytest.mark.parametrize("case", list(CASES))
def test_torch_gradients_equal_with_checkpointed_chunks(backend, case):
    _torch_only(backend)
    mlp, pot = _nets(backend)
    net = _net_for(case, mlp, pot)
    for w in net.arrays():
        w.requires_grad_(True)
    x = backend.asarray(np.random.default_rng(1).standard_normal((30, 3)))
    whole = _torch_grads(CASES[case], net, x)
    with xd.memory_budget(1 << 30, checkpoint=True):
        assert recomputing(backend.xp, [x, *net.arrays()]) is not None
        chunked = _torch_grads(CASES[case], net, x, chunk_size=7)
    for a, b in zip(chunked, whole):
        assert rel_err(backend.to_numpy(a), backend.to_numpy(b)) < 1e-12, case


class _LiveBytes:
    """Peak bytes of the torch tensors allocated inside a block (views counted once per storage).

    A ``TorchDispatchMode`` sees every tensor an operation returns, forward and backward, and a
    finaliser sees it die: the running sum of live storages is what the block holds, exactly.
    """

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        meter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    meter.track(t)
                return out

        self.mode = Mode()
        self.counts: dict[int, list[int]] = {}
        self.live = self.peak = 0

    def track(self, t):
        import torch

        if not isinstance(t, torch.Tensor):
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        entry = self.counts.get(key)
        if entry is None:
            entry = self.counts[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(t, self.drop, key)

    def drop(self, key):
        entry = self.counts[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.counts[key]

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd saves for the backward pass while ``fn`` runs, and its result."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def test_torch_training_step_stays_within_the_budget(backend):
    """d = 20, widths 32, 700 points, a 1 MiB budget: checkpointing keeps the saved tensors and the peak under it."""
    _torch_only(backend)
    if not backend.on_cpu:
        pytest.skip("counted on the CPU")
    net = xd.mlp([20, 32, 32, 32, 1], activation="tanh", seed=0, xp=backend.module, device=backend.device)
    for w in net.arrays():
        w.requires_grad_(True)
    x = backend.asarray(np.random.default_rng(2).uniform(size=(700, 20)))
    budget = 1 << 20
    result = {}
    for checkpoint in (False, True):
        xd.set_memory_budget(budget, checkpoint=checkpoint)
        with _LiveBytes() as meter:
            saved, lap = _saved_bytes(lambda: xd.laplacian(net, x))
            outputs = meter.live  # what the forward pass leaves alive: saved tensors, the result
            (lap**2).mean().backward()
        result[checkpoint] = saved, outputs, meter.peak
    saved, outputs, peak = result[False]
    assert saved > 10 * budget and peak > 10 * budget  # every chunk's activations, kept
    saved, outputs, peak = result[True]
    assert saved <= x.numel() * 8  # the points (which the caller holds), no activation
    assert outputs <= x.numel() * 8 + 0.05 * budget  # a view of the points, the result and a few sums
    assert peak < budget  # one chunk recomputed at a time


def test_torch_inference_is_not_checkpointed(backend):
    _torch_only(backend)
    import torch

    mlp, _ = _nets(backend)
    x = backend.asarray(np.random.default_rng(3).standard_normal((20, 3)))
    with xd.memory_budget(1 << 30, checkpoint=True):
        assert recomputing(backend.xp, [x, *mlp.arrays()]) is None  # nothing requires grad
        for w in mlp.arrays():
            w.requires_grad_(True)
        with torch.no_grad():
            assert recomputing(backend.xp, [x, *mlp.arrays()], opaque=True) is None
            lap = xd.laplacian(mlp, x, chunk_size=6)
        assert recomputing(backend.xp, [x, *mlp.arrays()]) is not None
    assert not lap.requires_grad


def test_torch_compile_traces_the_checkpointed_chunks(backend):
    """fullgraph=True: each chunk becomes Dynamo's activation-checkpoint region; gradients unchanged."""
    _torch_only(backend)
    import torch

    mlp, _ = _nets(backend)
    for w in mlp.arrays():
        w.requires_grad_(True)
    x = backend.asarray(np.random.default_rng(4).standard_normal((30, 3)))

    def op(net, x, **kw):
        return xd.laplacian(net, x, chunk_size=10)

    whole = _torch_grads(lambda net, x: xd.laplacian(net, x), mlp, x)
    graphs = []

    def keep(gm, inputs):
        graphs.append(str(gm.graph))
        return gm

    torch._dynamo.reset()
    with xd.memory_budget(1 << 30, checkpoint=True):
        compiled = torch.compile(op, fullgraph=True, backend=keep)
        got = _torch_grads(compiled, mlp, x)
    torch._dynamo.reset()
    assert any("checkpoint" in g for g in graphs)
    for a, b in zip(got, whole):
        assert rel_err(backend.to_numpy(a), backend.to_numpy(b)) < 1e-12


@pytest.mark.parametrize("case", ["laplacian-backward", "graph"])
def test_jax_gradients_equal_with_checkpointed_chunks(backend, case):
    """Under jax.jit(jax.grad(...)): the same gradients, and one remat region per chunk in the trace."""
    if backend.name != "jax":
        pytest.skip("jax.grad: the jax session runs it")
    import jax
    import jax.numpy as jnp

    mlp, pot = _nets(backend)
    net = _net_for(case, mlp, pot)
    x = backend.asarray(np.random.default_rng(5).standard_normal((20, 3)))

    def make_loss(**kw):  # a new function per setting: jax.jit and make_jaxpr trace each once
        def loss(ws, x):
            return jnp.mean(CASES[case](net.with_arrays(ws), x, **kw) ** 2)

        return loss

    def remat(jaxpr):
        return [e for e in jaxpr.eqns if "remat" in e.primitive.name or "checkpoint" in e.primitive.name]

    whole = jax.jit(jax.grad(make_loss(), argnums=(0, 1)))(net.arrays(), x)
    with xd.memory_budget(1 << 30, checkpoint=True):
        got = jax.jit(jax.grad(make_loss(chunk_size=10), argnums=(0, 1)))(net.arrays(), x)
        on = jax.make_jaxpr(make_loss(chunk_size=10))(net.arrays(), x)
    off = jax.make_jaxpr(make_loss(chunk_size=10))(net.arrays(), x)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(whole)):
        assert rel_err(np.asarray(a), np.asarray(b)) < 1e-12, case
    assert len(remat(on)) == 2 and not remat(off)  # one per chunk of 10 of the 20 points
