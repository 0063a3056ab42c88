"""torch's activation node (the fused sigma', sigma'' path of backends/primitives.py): derivatives and vmap."""

from __future__ import annotations

import numpy as np
import pytest

from xderiv import get_activation

from ..helpers import rel_err
from ..test_activations import AFTER, NEW  # noqa: F401


@pytest.mark.parametrize("name", AFTER)
def test_torch_activation_node_derivatives(backend, name):
    """torch's one-node activation (Primitives.activation): its backward, double backward and jvp
    against finite differences (gradcheck) and against the any-order derivatives."""
    if backend.name != "torch":
        pytest.skip("torch's autograd node: the torch session")
    import torch
    import torch.autograd.forward_ad as fwad

    from xderiv.backends.primitives import primitives

    act, xp = get_activation(name), backend.xp
    ops = primitives(xp)
    z = backend.asarray(np.linspace(-3.0, 3.0, 7)).requires_grad_()  # both signs and 0: every branch
    for order in (1, 2, 3):

        def node(z, order=order):
            return ops.activation(act, z, xp, order)

        assert torch.autograd.gradcheck(node, (z,), check_forward_ad=True)
        assert torch.autograd.gradgradcheck(node, (z,))
    # the node is taken, and its reverse derivative is sigma^(j+1) for part j
    parts = ops.activation(act, z, xp, 2)
    assert parts[0].grad_fn is not None and type(parts[0].grad_fn).__name__.startswith("ActivationParts")
    want = act.derivatives(z.detach(), xp, 3)
    for j in range(3):
        (g,) = torch.autograd.grad(parts[j].sum(), z, retain_graph=True)
        assert rel_err(backend.to_numpy(g), backend.to_numpy(want[j + 1])) < 1e-15
    tangent = backend.asarray(np.linspace(1.0, 2.0, 7))
    with fwad.dual_level():
        dual = ops.activation(act, fwad.make_dual(z, tangent), xp, 2)
        assert type(dual[0].grad_fn).__name__.startswith("ActivationParts")  # the node's jvp, not the formulas'
        for j in range(3):
            got = fwad.unpack_dual(dual[j]).tangent
            assert rel_err(backend.to_numpy(got), backend.to_numpy(want[j + 1] * tangent)) < 1e-15


def test_torch_activation_node_under_vmap(backend):
    """torch.func.vmap of the node's gradient (its generated vmap rule), for tanh.

    (Not for the activations whose formulas clip: array-api-compat's torch ``clip`` at its floor
    assigns through a boolean mask, which vmap refuses, with or without the node.)
    """
    if backend.name != "torch":
        pytest.skip("torch's autograd node: the torch session")
    import torch

    from xderiv.backends.primitives import primitives

    act, xp = get_activation("tanh"), backend.xp
    ops = primitives(xp)
    z = backend.asarray(np.linspace(-3.0, 3.0, 13))
    per_point = torch.func.vmap(torch.func.grad(lambda t: ops.activation(act, t, xp, 2)[2]))(z)
    want = act.derivatives(z, xp, 3)[3]
    assert rel_err(backend.to_numpy(per_point), backend.to_numpy(want)) < 1e-15
