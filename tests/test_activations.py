"""Activations: derivatives against finite differences and a 50-digit reference, stability at |z| = 1e4."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd
from xderiv.activations import get_activation

from .helpers import fd_hessian, fd_jacobian, rel_err
from .networks_zoo import ACTIVATIONS

Z = [-1e4, -50.0, -20.0, -3.0, -1.0, -0.5, -1e-3, -1e-8, 0.0, 1e-8, 1e-3, 0.5, 0.999, 1.0, 1.001, 3.0, 20.0, 50.0, 1e4]


def _reference(name: str, z: float) -> tuple[float, float, float]:
    """(sigma, sigma', sigma'') at z with mpmath at 50 digits."""
    mp = pytest.importorskip("mpmath").mp
    mp.dps = 50
    z = mp.mpf(z)
    sig = 1 / (1 + mp.exp(-z))
    ds, d2s = sig * (1 - sig), sig * (1 - sig) * (1 - 2 * sig)
    sech2 = 1 / mp.cosh(z) ** 2
    table = {
        "identity": (z, 1, 0),
        "sigmoid": (sig, ds, d2s),
        "tanh": (mp.tanh(z), sech2, -2 * mp.tanh(z) * sech2),
        "softplus": (mp.log(1 + mp.exp(z)), sig, ds),
        "quadratic": (z * z / 2, z, 1),
        "sin": (mp.sin(z), mp.cos(z), -mp.sin(z)),
        "silu": (z * sig, sig + z * ds, 2 * ds + z * d2s),
        "antitanh": (mp.log(2 * mp.cosh(z)), mp.tanh(z), sech2),
        "logcosh": (mp.log(mp.cosh(z)), mp.tanh(z), sech2),
    }
    return tuple(float(v) for v in table[name])


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_accurate_and_finite_for_large_and_tiny_arguments(backend, name):
    act = get_activation(name)
    z = backend.asarray(np.array(Z))
    got = [backend.to_numpy(a) for a in act.evaluate(z, backend.xp, 2)]
    ref = np.array([_reference(name, v) for v in Z]).T
    for k in range(3):
        assert np.all(np.isfinite(got[k])), (name, k)
        # Stable formulas keep full relative accuracy everywhere, even where the
        # value is 1e-4000-tiny (then both underflow to 0) or near 0.
        assert np.all(np.abs(got[k] - ref[k]) <= 1e-13 * np.abs(ref[k]) + 1e-300), (name, k, got[k], ref[k])
    # The fused evaluation of each order returns the same values.
    for order in (0, 1):
        lower = act.evaluate(z, backend.xp, order)
        assert len(lower) == order + 1
        for k in range(order + 1):
            assert np.array_equal(backend.to_numpy(lower[k]), got[k])


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_derivatives_match_finite_differences(backend, name):
    act = get_activation(name)
    zn = np.linspace(-4, 4, 41)
    eps = 1e-6
    ev = [backend.to_numpy(a) for a in act.evaluate(backend.asarray(zn), backend.xp, 2)]
    plus = [backend.to_numpy(a) for a in act.evaluate(backend.asarray(zn + eps), backend.xp, 2)]
    minus = [backend.to_numpy(a) for a in act.evaluate(backend.asarray(zn - eps), backend.xp, 2)]
    assert np.allclose((plus[0] - minus[0]) / (2 * eps), ev[1], atol=1e-8)
    assert np.allclose((plus[1] - minus[1]) / (2 * eps), ev[2], atol=1e-8)


def test_antitanh_is_log_2cosh_and_logcosh_is_offset_by_log2(backend):
    zn = np.linspace(-30, 30, 61)
    z = backend.asarray(zn)
    anti = backend.to_numpy(get_activation("antitanh")(z, backend.xp))
    logcosh = backend.to_numpy(get_activation("logcosh")(z, backend.xp))
    # hessQuik / OT-Flow formula, as the seed notebook wrote it.
    assert np.allclose(anti, np.abs(zn) + np.log1p(np.exp(-2 * np.abs(zn))), rtol=1e-15, atol=0)
    assert np.allclose(anti - logcosh, np.log(2.0), rtol=0, atol=1e-14)


def test_user_activation_through_the_whole_engine(backend):
    name = f"cubic-{backend.name}"
    act = xd.register_activation(name, lambda z: z * z * z / 6.0, lambda z: z * z / 2.0, lambda z: z, overwrite=True)
    gauss = xd.register_activation(
        f"gauss-{backend.name}",
        lambda z, xp: xp.exp(-z * z),
        lambda z, xp: -2.0 * z * xp.exp(-z * z),
        lambda z, xp: (4.0 * z * z - 2.0) * xp.exp(-z * z),
        overwrite=True,
    )
    assert name in xd.available_activations()
    rng = np.random.default_rng(0)
    net = xd.Sequential(
        xd.Dense(backend.asarray(rng.standard_normal((3, 4))), backend.asarray(rng.standard_normal(4)), act),
        xd.Residual(backend.asarray(0.5 * rng.standard_normal((4, 4))), activation=gauss.name, step=0.5),
        xd.Dense(backend.asarray(rng.standard_normal((4, 1)))),
    )
    x = backend.asarray(rng.standard_normal((2, 3)))
    for mode in ("forward", "backward"):
        r = xd.derivatives(net, x, hessian=True, mode=mode)
        assert rel_err(backend.to_numpy(r.jacobian), fd_jacobian(net, x, backend)) < 1e-7
        assert rel_err(backend.to_numpy(r.hessian), fd_hessian(net, x, backend)) < 1e-7


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown activation 'relu6'.*register_activation"):
        get_activation("relu6")
    with pytest.raises(ValueError, match="already registered"):
        xd.register_activation("tanh", lambda z: z, lambda z: z, lambda z: z)
    with pytest.raises(TypeError, match="activation must be a name"):
        get_activation(3)
