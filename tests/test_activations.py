"""Activations: derivatives against finite differences, mpmath and torch, stability at |z| = 1e4, parametric names."""

from __future__ import annotations

import numpy as np
import pytest

import xderiv as xd
from xderiv import activations, get_activation

from .helpers import fd_hessian, fd_jacobian, rel_err
from .networks_zoo import ACTIVATIONS
from .reference import autodiff, mp_derivatives, network_function

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


# --------------------------------------------------------------------------- gelu, elu, mish, ... and parametric ones

NEW = [
    "gelu",
    "gelu_tanh",
    "elu",
    "celu",
    "selu",
    "mish",
    "relu2",
    "gaussian",
    "softplus(beta=2.0)",
    "softplus(beta=0.25)",
    "sin(freq=30.0)",
    "elu(alpha=0.5)",
    "celu(alpha=0.5)",
    "celu(alpha=2.0)",
    "gaussian(width=0.5)",
]
SELU_ALPHA = "1.6732632423543772848170429916717"  # torch's constants, as decimal strings
SELU_SCALE = "1.0507009873554804934193349852946"
U64, U32 = 2.0**-53, 2.0**-24


def _mp_new(name: str, z, mp) -> tuple:
    """(sigma, sigma', sigma'') of a name in NEW at the mpf ``z``, written from the definitions."""
    kind, _, rest = name.partition("(")
    p = mp.mpf(float(rest.split("=")[1].rstrip(")"))) if rest else None
    if kind == "gelu":
        cdf, pdf = mp.ncdf(z), mp.npdf(z)
        return z * cdf, cdf + z * pdf, pdf * (2 - z * z)
    if kind == "gelu_tanh":  # 0.5 z (1 + tanh u) = z sigmoid(w), w = 2u
        c, k = mp.sqrt(2 / mp.pi), mp.mpf("0.044715")
        w, w1, w2 = 2 * c * (z + k * z**3), 2 * c * (1 + 3 * k * z * z), 12 * c * k * z
        s, sc = 1 / (1 + mp.exp(-w)), 1 / (1 + mp.exp(w))
        s1 = s * sc
        s2 = -s1 * mp.tanh(w / 2)
        return z * s, s + z * w1 * s1, 2 * w1 * s1 + z * (w2 * s1 + w1 * w1 * s2)
    if kind in ("elu", "celu", "selu"):
        alpha, scale = (mp.mpf(SELU_ALPHA), mp.mpf(SELU_SCALE)) if kind == "selu" else (p or mp.mpf(1), 1)
        inner = 1 / alpha if kind == "celu" else 1
        if z > 0:
            return scale * z, mp.mpf(scale), mp.mpf(0)
        e = mp.exp(inner * z)
        # torch's autograd at z = 0: sigma' from the left branch, sigma'' = 0 from the right one
        return scale * alpha * mp.expm1(inner * z), scale * alpha * inner * e, scale * alpha * inner**2 * e * (z < 0)
    if kind == "mish":
        sp = mp.log1p(mp.exp(z)) if z < 0 else z + mp.log1p(mp.exp(-z))
        t, sech2 = mp.tanh(sp), 1 / mp.cosh(sp) ** 2
        s, sc = 1 / (1 + mp.exp(-z)), 1 / (1 + mp.exp(z))
        return z * t, t + z * s * sech2, sech2 * (2 * s + z * (s * sc - 2 * t * s * s))
    if kind == "relu2":
        return (z * z, 2 * z, mp.mpf(2)) if z > 0 else (mp.mpf(0),) * 3
    if kind == "gaussian":
        a = p or mp.mpf(1)
        g = mp.exp(-z * z / (2 * a * a))
        return g, -z / a**2 * g, (z * z / a**2 - 1) / a**2 * g
    if kind == "softplus":
        bz = p * z
        s, sc = 1 / (1 + mp.exp(-bz)), 1 / (1 + mp.exp(bz))
        value = mp.log1p(mp.exp(bz)) if bz < 0 else bz + mp.log1p(mp.exp(-bz))
        return value / p, s, p * s * sc
    if kind == "sin":
        return mp.sin(p * z), p * mp.cos(p * z), -p * p * mp.sin(p * z)
    raise KeyError(name)


_NEW_REF: dict = {}


def _new_grid(dtype: str) -> np.ndarray:
    """|z| log-spaced up to 1e4, both signs, 0, tiny and subnormal values; exact in ``dtype``."""
    if dtype == "float64":
        mags = np.concatenate([np.logspace(-12, 4, 161), [1e-300, 2.2250738585072014e-308, 5e-324]])
    else:
        mags = np.concatenate([np.logspace(-8, 4, 97), [1e-30, 1.1754944e-38]])
    return np.unique(np.concatenate([-mags, [0.0], mags]).astype(dtype))


def _new_reference(name: str, dtype: str) -> np.ndarray:
    """(4, n) float64: sigma, sigma', sigma'' and (for the error bound) sigma''' on the grid, at 40 digits."""
    if (name, dtype) not in _NEW_REF:
        mp = pytest.importorskip("mpmath").mp
        mp.dps = 40
        rows = []
        for v in _new_grid(dtype):
            z = mp.mpf(float(v))
            h = mp.mpf(1e-12) * max(1, abs(z))
            d3 = (_mp_new(name, z + h, mp)[2] - _mp_new(name, z - h, mp)[2]) / (2 * h)
            rows.append([float(t) for t in (*_mp_new(name, z, mp), d3)])
        _NEW_REF[(name, dtype)] = np.array(rows).T
    return _NEW_REF[(name, dtype)]


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_new_activations_against_mpmath_on_a_dense_log_grid(backend, name, dtype):
    """Mixed stability, |got - ref| <= 8u (|f| + |z f'|) + tiny, everywhere on the grid (as every built-in), and
    in float64 1e-13 relative wherever f is well conditioned (|z f'/f| <= 10)."""
    u, tiny = (U64, 1e-306) if dtype == "float64" else (U32, 1e-36)
    zs = _new_grid(dtype)
    ref = _new_reference(name, dtype)
    if backend.name == "jax":  # XLA flushes subnormal inputs to zero: at a kink, z = -5e-324 is evaluated at 0
        normal = (zs == 0) | (np.abs(zs) >= np.finfo(zs.dtype).smallest_normal)
        zs, ref = zs[normal], [r[normal] for r in ref]
    act = get_activation(name)
    got = [backend.to_numpy(a).astype(np.float64) for a in act.evaluate(backend.asarray(zs, dtype), backend.xp, 2)]
    z64 = zs.astype(np.float64)
    for k in range(3):
        assert np.all(np.isfinite(got[k])), (name, k)
        err = np.abs(got[k] - ref[k])
        # gelu_tanh's sigma'' = s'(w) [2w' + z w'' + z w'^2 tanh(-w/2)] adds two terms that cancel by up to ~4x
        # near z = -2, so a 1-ulp difference in a libm's exp (SIMD lane vs scalar tail) moves it by up to ~9u
        c = 12 if (name, k) == ("gelu_tanh", 2) else 8
        bound = c * u * (np.abs(ref[k]) + np.abs(z64 * ref[k + 1])) + tiny
        worst = int(np.argmax(err / bound))
        assert np.all(err <= bound), (name, k, zs[worst], got[k][worst], ref[k][worst], err[worst] / bound[worst])
        if dtype == "float64":
            well = (np.abs(ref[k]) > 1e-290) & (np.abs(z64 * ref[k + 1]) <= 10 * np.abs(ref[k]))
            assert np.all(err[well] <= 1e-13 * np.abs(ref[k][well])), (name, k)


@pytest.mark.parametrize("name", NEW)
def test_new_references_are_the_derivatives_of_their_sigma(name):
    """The closed-form mpmath references above, checked against mpmath's numerical differentiation."""
    mp = pytest.importorskip("mpmath").mp
    mp.dps = 40
    for v in (-3.7, -0.6, 0.4, 2.5):
        z = mp.mpf(v)
        ref = _mp_new(name, z, mp)
        d1 = mp.diff(lambda t: _mp_new(name, t, mp)[0], z)
        d2 = mp.diff(lambda t: _mp_new(name, t, mp)[1], z)
        assert abs(d1 - ref[1]) <= mp.mpf(1e-25) * (1 + abs(ref[1])), (name, v)
        assert abs(d2 - ref[2]) <= mp.mpf(1e-25) * (1 + abs(ref[2])), (name, v)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # an overflow to inf of sigma ~ z (or z^2) is reported
@pytest.mark.parametrize("name", NEW)
def test_new_activations_finite_and_nan_free_at_extreme_arguments(backend, name):
    act = get_activation(name)
    moderate = np.array([-1e4, -1e-300, -0.0, 0.0, 1e-300, 1e4])
    got = [backend.to_numpy(a) for a in act.evaluate(backend.asarray(moderate), backend.xp, 2)]
    for k in range(3):
        assert np.all(np.isfinite(got[k])), (name, k, got[k])
    huge = np.array([-np.finfo(np.float64).max, -1e300, -1e30, 1e30, 1e300, np.finfo(np.float64).max])
    if name.startswith("sin("):  # sin(freq z) is undefined where freq z overflows
        huge = huge[np.abs(huge) < 1e300]
    got = [backend.to_numpy(a) for a in act.evaluate(backend.asarray(huge), backend.xp, 2)]
    # sigma grows like |z| (relu2: z^2, and its sigma' like z), so may overflow; the rest is bounded
    grows = {0, 1} if name == "relu2" else set() if name.startswith(("gaussian", "sin")) else {0}
    for k in range(3):
        assert not np.any(np.isnan(got[k])), (name, k, got[k])
        if k not in grows:
            assert np.all(np.isfinite(got[k])), (name, k, got[k])


@pytest.mark.parametrize("name", NEW)
def test_new_activations_derivatives_match_finite_differences_and_fused_orders(backend, name):
    act = get_activation(name)
    zn = np.linspace(-4, 4, 40)  # not 0: ELU's sigma'' jumps there
    eps = 1e-6
    ev, plus, minus = (
        [backend.to_numpy(a) for a in act.evaluate(backend.asarray(zn + d), backend.xp, 2)] for d in (0.0, eps, -eps)
    )
    assert np.allclose((plus[0] - minus[0]) / (2 * eps), ev[1], rtol=1e-7, atol=1e-8)
    assert np.allclose((plus[1] - minus[1]) / (2 * eps), ev[2], rtol=1e-7, atol=1e-8)
    for order in (0, 1):
        lower = act.evaluate(backend.asarray(zn), backend.xp, order)
        assert len(lower) == order + 1
        for k in range(order + 1):
            assert np.array_equal(backend.to_numpy(lower[k]), ev[k])


def test_erf_erfc_and_normal_distribution_against_mpmath(backend):
    """The portable erf/erfc (Cody's rational approximations), and Phi, phi: full relative accuracy in the tails."""
    mp = pytest.importorskip("mpmath").mp
    mp.dps = 40
    xp = backend.xp
    mags = np.logspace(-10, np.log10(26.5), 400)  # erfc(26.5) ~ 1e-307, still a normal float
    x = np.concatenate([-mags[::-1], [0.0], mags])
    z = np.concatenate([x * np.sqrt(2.0), np.linspace(-37.5, 8.5, 201)])  # Phi(-37.5) ~ 5e-308
    cases = [
        (activations._erf, x, mp.erf),
        (activations._erfc, x, mp.erfc),
        (lambda a, xp: activations._normal_parts(a, xp)[0], z, mp.ncdf),
        (lambda a, xp: activations._normal_parts(a, xp)[1], z, mp.npdf),
    ]
    for fn, pts, ref_fn in cases:
        got = backend.to_numpy(fn(backend.asarray(pts), xp))
        ref = np.array([float(ref_fn(mp.mpf(float(v)))) for v in pts])
        assert np.all(np.abs(got - ref) <= 2e-15 * np.abs(ref)), (ref_fn, np.max(np.abs(got - ref) / np.abs(ref)))
    cdf, pdf = activations._normal_parts(backend.asarray(np.array([-30.0, -1e4, 1e4])), xp)
    assert abs(backend.to_numpy(cdf)[0] / float(mp.ncdf(-30)) - 1) < 4e-16  # 4.9e-198, not 0 or NaN
    assert list(backend.to_numpy(cdf)[1:]) == [0.0, 1.0] and list(backend.to_numpy(pdf)[1:]) == [0.0, 0.0]


# --------------------------------------------------------------------------- against torch's own activations

TORCH_FUNCTIONAL = {
    "gelu": ("gelu", {}),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}),
    "elu": ("elu", {}),
    "elu(alpha=0.5)": ("elu", {"alpha": 0.5}),
    "celu": ("celu", {}),
    "celu(alpha=0.5)": ("celu", {"alpha": 0.5}),
    "selu": ("selu", {}),
    "mish": ("mish", {}),
    "softplus(beta=2.0)": ("softplus", {"beta": 2.0}),
    "softplus(beta=0.25)": ("softplus", {"beta": 0.25}),
}


@pytest.mark.parametrize("name", list(TORCH_FUNCTIONAL))
def test_matches_torch_functional_and_its_autograd(backend, name):
    """Values, and first and second derivatives by torch's autograd, to 1e-12 relative in float64.

    Relative agreement on [-3, 3] (and at 0 and tiny |z|, ELU's kink included); on [-10, 10] to 1e-12
    absolute, because torch's own formulas cancel in the tails (1 + erf(z/sqrt 2) for z << 0,
    1 - tanh^2 in mish'' and the softplus double backward for z >> 0) where xderiv keeps full
    relative accuracy (the mpmath tests above).  softplus stays inside torch's threshold, |beta z| < 20.
    """
    if backend.name != "torch":
        pytest.skip("torch's functional activations: the torch session")
    import torch

    fn_name, kwargs = TORCH_FUNCTIONAL[name]
    fn = getattr(torch.nn.functional, fn_name)
    act = get_activation(name)
    core = np.concatenate([np.linspace(-3, 3, 121), [-1e-8, -1e-300, 0.0, 1e-300, 1e-8]])
    tails = np.linspace(-10, 10, 201)
    if fn_name == "softplus":  # torch's softplus'' is 0 where |beta z| > threshold = 20
        tails = tails[np.abs(kwargs["beta"] * tails) < 19]
    for zs, rtol, atol in ((core, 1e-12, 0.0), (tails, 0.0, 1e-12)):
        x = backend.asarray(zs).requires_grad_(True)
        y = fn(x, **kwargs)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), x)
        want = [backend.to_numpy(t) for t in (y, g, h)]
        got = [backend.to_numpy(t) for t in act.evaluate(backend.asarray(zs), backend.xp, 2)]
        for k in range(3):
            err = np.abs(got[k] - want[k])
            assert np.all(err <= rtol * np.abs(want[k]) + atol * (1 + np.abs(zs))), (name, k, zs[np.argmax(err)])


# --------------------------------------------------------------------------- in networks

NET_ACTIVATIONS = ["gelu", "gelu_tanh", "mish", "selu", "celu", "elu(alpha=0.5)", "relu2", "gaussian", "sin(freq=3.0)"]


@pytest.mark.parametrize("name", NET_ACTIVATIONS)
def test_mlp_hessian_and_laplacian(backend, name):
    """xd.mlp(..., activation=name): Hessian and Laplacian in both modes against finite differences, and in the
    torch and JAX sessions against autodiff of the plain re-implementation (tests/reference.py)."""
    net = xd.mlp([3, 6, 5, 2], activation=name, seed=4, xp=backend.module, device=backend.device)
    assert net.layers[0].activation is get_activation(name)
    x = backend.asarray(np.random.default_rng(1).standard_normal((4, 3)))
    fd = fd_hessian(net, x, backend)
    for mode in ("forward", "backward"):
        h = backend.to_numpy(xd.hessian(net, x, mode=mode))
        lap = backend.to_numpy(xd.laplacian(net, x, mode=mode))
        assert rel_err(h, fd) < 1e-7, mode
        assert rel_err(lap, np.trace(h, axis1=-2, axis2=-1)) < 1e-13, mode
    if backend.name in ("torch", "jax") and "(" not in name:
        vmap, _, hessian, _ = autodiff(backend)
        f = network_function(net, backend.xp)
        want = backend.to_numpy(vmap(hessian(f, argnums=1), in_dims=(None, 0))(net.arrays(), x))
        assert rel_err(backend.to_numpy(xd.hessian(net, x)), want) < 1e-12
        assert rel_err(backend.to_numpy(xd.laplacian(net, x)), np.trace(want, axis1=-2, axis2=-1)) < 1e-12


# --------------------------------------------------------------------------- factories, names, registry

FACTORIES = [
    (activations.softplus, "beta", 2.0, "softplus(beta=2.0)", "softplus"),
    (activations.sine, "freq", 30.0, "sin(freq=30.0)", "sin"),
    (activations.elu, "alpha", 0.5, "elu(alpha=0.5)", "elu"),
    (activations.celu, "alpha", 0.5, "celu(alpha=0.5)", "celu"),
    (activations.gaussian, "width", 0.5, "gaussian(width=0.5)", "gaussian"),
]


@pytest.mark.parametrize("factory, param, value, canonical, default", FACTORIES, ids=[f[4] for f in FACTORIES])
def test_parametric_factories_are_cached_named_and_read_back(factory, param, value, canonical, default):
    before = xd.available_activations()
    act = factory(**{param: value})
    assert act.name == canonical
    assert factory(value) is act and factory(**{param: int(value) if value.is_integer() else value}) is act
    assert get_activation(canonical) is act
    assert get_activation(canonical.replace(f"{value!r}", f"{value:.3e}")) is act  # any float spelling
    assert factory() is get_activation(default) and factory(1) is get_activation(default)
    assert get_activation(f"{default}({param}=1.0)") is get_activation(default)
    assert xd.available_activations() == before  # no global side effect
    assert canonical not in before and default in before
    assert xd.Dense(np.ones((2, 3)), activation=canonical).activation is act


@pytest.mark.parametrize("factory, param, value, canonical, default", FACTORIES, ids=[f[4] for f in FACTORIES])
def test_parametric_factories_validate_their_parameter(factory, param, value, canonical, default):
    bad = [float("nan"), float("inf"), -float("inf")] + ([0.0, -1.0] if param != "freq" else [])
    for v in bad:
        with pytest.raises(ValueError, match=f"{param} must be a"):
            factory(v)
        with pytest.raises(ValueError, match=param):
            get_activation(f"{default}({param}={v!r})")
    for v in ("2", None, True, [2.0]):
        with pytest.raises(TypeError, match=f"{param} must be a real number"):
            factory(v)
    with pytest.raises(ValueError, match="is not a number"):
        get_activation(f"{default}({param}=two)")
    other = "width" if param != "width" else "beta"
    with pytest.raises(ValueError, match="unknown activation.*parametric: softplus\\(beta=...\\)"):
        get_activation(f"{default}({other}={value!r})")


def test_sine_allows_any_finite_frequency():
    assert activations.sine(-2.0).name == "sin(freq=-2.0)"
    assert activations.sine(0.0) is activations.sine(-0.0)


def test_gelu_factory_and_plain_names(backend):
    assert activations.gelu() is get_activation("gelu") and activations.gelu("none") is get_activation("gelu")
    assert activations.gelu(approximate="tanh") is get_activation("gelu_tanh")
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        activations.gelu("erf")
    for name in ("gelu", "gelu_tanh", "selu", "mish", "relu2", "gaussian", "elu", "celu"):
        assert name in xd.available_activations()
        net = xd.mlp([2, 3, 1], activation=name, seed=0, xp=backend.module, device=backend.device)
        assert net.layers[0].activation.name == name
        assert np.all(np.isfinite(backend.to_numpy(xd.laplacian(net, backend.asarray(np.ones((2, 2)))))))
    with pytest.raises(ValueError, match="unknown activation 'tanh\\(beta=2.0\\)'"):
        get_activation("tanh(beta=2.0)")


def test_parametric_activations_survive_save_and_load(tmp_path, backend):
    from xderiv.interop import io

    acts = [
        activations.softplus(beta=2.0),
        activations.sine(freq=30.0),
        activations.elu(alpha=0.5),
        activations.celu(alpha=2.0),
        activations.gaussian(width=0.5),
        "gelu",
        "gelu_tanh",
        "mish",
    ]
    rng = np.random.default_rng(5)
    layers = [xd.Dense(0.1 * rng.standard_normal((3, 4)), rng.standard_normal(4), activation=acts[0])]
    layers += [xd.Residual(0.1 * rng.standard_normal((4, 4)), rng.standard_normal(4), activation=a) for a in acts[1:]]
    net = xd.Sequential(*layers, xd.Dense(rng.standard_normal((4, 1))))
    io.save(net, tmp_path / "net.npz")
    loaded = io.load(tmp_path / "net.npz", xp=backend.module, device=backend.device)
    assert [a.activation for a in loaded.layers] == [a.activation for a in net.layers]
    assert all(a.activation is b.activation for a, b in zip(loaded.layers, net.layers))
    x = rng.standard_normal((3, 3))
    want = xd.laplacian(net, x)
    assert rel_err(backend.to_numpy(xd.laplacian(loaded, backend.asarray(x))), want) < 1e-13


# --------------------------------------------------------------------------- derivatives of any order (Taylor mode)

HIGHER = ACTIVATIONS + NEW[:8] + ["softplus(beta=2.0)", "sin(freq=30.0)", "elu(alpha=0.5)", "celu(alpha=2.0)"]
HIGHER += ["gaussian(width=0.5)"]
K = 6  # orders checked: sigma ... sigma^(6), against sigma^(7) for the conditioning bound
_HIGHER_REF: dict = {}


def _bell(k: int) -> int:
    """The Bell number B_k: the number of terms of Faa di Bruno's formula at order k."""
    row = [1]
    for _ in range(k):
        nxt = [row[-1]]
        for a in row:
            nxt.append(nxt[-1] + a)
        row = nxt
    return row[0]


def _higher_grid(name: str) -> np.ndarray:
    mags = np.logspace(-8, 4, 49)
    z = np.unique(np.concatenate([-mags, [0.0], mags]))
    return z[np.abs(z) <= 1e3] if name.startswith("sin(") else z  # sin(30 z) loses its argument beyond


def _higher_reference(name: str) -> np.ndarray:
    """(K + 2, n) float64: sigma, ..., sigma^(K+1) on the grid, from mpmath series at 50 digits."""
    if name not in _HIGHER_REF:
        mp = pytest.importorskip("mpmath").mp
        mp.dps = 50
        rows = [[float(t) for t in mp_derivatives(name, float(z), K + 1)] for z in _higher_grid(name)]
        _HIGHER_REF[name] = np.array(rows).T
    return _HIGHER_REF[name]


@pytest.mark.parametrize("name", HIGHER)
def test_any_order_derivatives_against_mpmath(backend, name):
    """sigma^(k) for k <= 6 on a log grid up to |z| = 1e4 (and 0): mixed stability with the error of Faa di Bruno's
    sum, |got - ref| <= 8 B_k u (|f^(k)| + |z f^(k+1)|) + 1e-40 (largest |f^(j)| there) + tiny (B_k the Bell number,
    the 1e-40 term mpmath's own 50-digit noise), and 1e-12 relative wherever f^(k) is well conditioned (and not an
    exact zero, which mpmath gives as noise)."""
    act = get_activation(name)
    z = _higher_grid(name)
    ref = _higher_reference(name)
    got = [backend.to_numpy(a) for a in act.derivatives(backend.asarray(z), backend.xp, K)]
    assert len(got) == K + 1
    scale = np.max(np.abs(ref), axis=0)
    for k in range(K + 1):
        assert np.all(np.isfinite(got[k])), (name, k)
        err = np.abs(got[k] - ref[k])
        cond = np.abs(ref[k]) + np.abs(z * ref[k + 1])
        bound = 8 * _bell(k) * U64 * cond + 1e-40 * scale + 1e-300
        worst = int(np.argmax(err / bound))
        assert np.all(err <= bound), (name, k, z[worst], got[k][worst], ref[k][worst])
        well = (np.abs(ref[k]) > 1e-30 * scale + 1e-290) & (np.abs(z * ref[k + 1]) <= 10 * np.abs(ref[k]))
        assert np.all(err[well] <= 1e-12 * np.abs(ref[k][well])), (name, k)


@pytest.mark.parametrize("name", HIGHER)
def test_series_references_are_the_derivatives_of_sigma(name):
    """The mpmath series references, checked against mpmath's numerical differentiation of sigma itself."""
    mp = pytest.importorskip("mpmath").mp
    mp.dps = 40
    for v in (-3.7, -0.6, 0.4, 2.5):
        ref = mp_derivatives(name, v, K)
        numeric = mp.diffs(lambda t: mp_derivatives(name, t, 0)[0], mp.mpf(v), K)
        for k, d in enumerate(numeric):
            assert abs(d - ref[k]) <= mp.mpf(1e-20) * (1 + abs(ref[k])), (name, v, k)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # an overflow to inf of sigma ~ z (or z^2) is reported
@pytest.mark.parametrize("name", HIGHER)
def test_any_order_finite_and_nan_free_at_extreme_arguments(backend, name):
    act = get_activation(name)
    huge = np.array([-np.finfo(np.float64).max, -1e300, -1e30, -1e4, 1e4, 1e30, 1e300, np.finfo(np.float64).max])
    if name.startswith("sin"):  # sin(freq z) is undefined where freq z overflows
        huge = huge[np.abs(huge) <= 1e4]
    got = [backend.to_numpy(a) for a in act.derivatives(backend.asarray(huge), backend.xp, K)]
    grows = {0, 1} if name in ("relu2", "quadratic") else {0, 1} if name == "identity" else {0}
    for k in range(K + 1):
        assert not np.any(np.isnan(got[k])), (name, k, got[k])
        if k not in grows:
            assert np.all(np.isfinite(got[k])), (name, k, got[k])


def test_registered_activation_with_and_without_higher_derivatives(backend):
    xp = backend.xp
    cubic = xd.register_activation(
        f"cubic-any-{backend.name}",
        lambda z: z * z * z / 6.0,
        lambda z: z * z / 2.0,
        lambda z: z,
        nth_derivative=lambda z, k: z * 0.0 + (1.0 if k == 3 else 0.0),
        overwrite=True,
    )
    tanh_copy = xd.register_activation(
        f"tanh-copy-{backend.name}",
        lambda z, xp: xp.tanh(z),
        lambda z, xp: get_activation("tanh").evaluate(z, xp, 1)[1],
        lambda z, xp: get_activation("tanh").evaluate(z, xp, 2)[2],
        nth_derivative=lambda z, xp, k: get_activation("tanh").derivatives(z, xp, k)[k],
        overwrite=True,
    )
    plain = xd.register_activation(
        f"plain-{backend.name}",
        lambda z, xp: xp.tanh(z),
        lambda z, xp: 1.0 - xp.tanh(z) ** 2,
        lambda z: z,
        overwrite=True,
    )
    z = backend.asarray(np.linspace(-2, 2, 9))
    parts = [backend.to_numpy(a) for a in cubic.derivatives(z, xp, 5)]
    zn = np.linspace(-2, 2, 9)
    for got, want in zip(parts, [zn**3 / 6, zn**2 / 2, zn, np.ones(9), np.zeros(9), np.zeros(9)]):
        assert np.allclose(got, want, rtol=1e-15, atol=0)
    builtin = get_activation("tanh").derivatives(z, xp, 6)
    assert all(
        np.array_equal(backend.to_numpy(a), backend.to_numpy(b))
        for a, b in zip(tanh_copy.derivatives(z, xp, 6), builtin)
    )
    assert plain.max_order == 2 and tanh_copy.max_order is None and get_activation("gelu").max_order is None
    assert len(plain.derivatives(z, xp, 2)) == 3
    with pytest.raises(
        ValueError, match=f"activation 'plain-{backend.name}' supplies derivatives up to order 2.*nth_derivative"
    ):
        plain.derivatives(z, xp, 3)
    with pytest.raises(TypeError, match="nth_derivative must be a callable f\\(z, k\\)"):
        xd.register_activation("bad-nth", lambda z: z, lambda z: z, lambda z: z, nth_derivative=lambda z: z)


def test_registered_activation_takes_constants_and_the_library_own_functions(backend):
    """A constant derivative written as a number, and the backend library's own ``tanh`` (a NumPy
    ufunc, whose signature also lists ``out``; a torch builtin, whose signature cannot be read)."""
    square = xd.register_activation(
        f"square-const-{backend.name}",
        lambda z: z * z,
        lambda z: 2.0 * z,
        lambda z: 2.0,
        nth_derivative=lambda z, k: 0.0,
        overwrite=True,
    )
    lib = backend.module
    tanh = xd.register_activation(
        f"lib-tanh-{backend.name}",
        lib.tanh,
        lambda z, xp: 1.0 - xp.tanh(z) ** 2,
        lambda z, xp: -2.0 * xp.tanh(z) * (1.0 - xp.tanh(z) ** 2),
        overwrite=True,
    )
    zn = np.linspace(-2, 2, 9)
    z = backend.asarray(zn)
    parts = [backend.to_numpy(a) for a in square.derivatives(z, backend.xp, 4)]
    for got, want in zip(parts, [zn * zn, 2 * zn, np.full(9, 2.0), np.zeros(9), np.zeros(9)]):
        assert got.shape == (9,) and np.array_equal(got, want)
    assert np.allclose(backend.to_numpy(tanh(z, backend.xp)), np.tanh(zn), rtol=1e-15, atol=0)
    rng = np.random.default_rng(1)
    net = xd.Sequential(
        xd.Dense(backend.asarray(rng.standard_normal((2, 3))), backend.asarray(rng.standard_normal(3)), square),
        xd.Dense(backend.asarray(rng.standard_normal((3, 3))), activation=tanh),
        xd.Dense(backend.asarray(rng.standard_normal((3, 1)))),
    )
    x = backend.asarray(rng.standard_normal((4, 2)))
    for mode in ("forward", "backward"):
        h = backend.to_numpy(xd.hessian(net, x, mode=mode))
        assert rel_err(h, fd_hessian(net, x, backend)) < 1e-7
        assert rel_err(backend.to_numpy(xd.laplacian(net, x, mode=mode)), np.trace(h, axis1=-2, axis2=-1)) < 1e-13


# --------------------------------------------------------------------------- the next derivative from the parts

AFTER = [name for name in ACTIVATIONS + NEW if get_activation(name).after is not None]


def test_the_built_ins_that_gain_have_a_next_derivative():
    assert set(AFTER) == {"tanh", "antitanh", "logcosh", "sin", "gelu", "gelu_tanh", "silu", "mish", "gaussian"}


@pytest.mark.parametrize("name", AFTER)
def test_next_derivative_is_the_next_higher_derivative(backend, name):
    """sigma^(k+1) from (sigma, ..., sigma^(k)) equals the any-order evaluation's, for k = 0 ... 5, on a wide grid."""
    act = get_activation(name)
    z = backend.asarray(np.concatenate([-np.logspace(-8, 2.5, 40), [0.0], np.logspace(-8, 2.5, 40)]))
    want = [backend.to_numpy(a) for a in act.derivatives(z, backend.xp, 6)]
    for k in range(6):
        parts = act.derivatives(z, backend.xp, k)
        got = backend.to_numpy(act.next_derivative(z, tuple(parts), backend.xp))
        scale = np.maximum(np.abs(want[k + 1]), 1e-300)
        assert np.all(np.abs(got - want[k + 1]) <= 8 * U64 * scale + 1e-300), (name, k)


NON_SMOOTH = ("elu", "celu", "selu", "relu2")  # kinks at 0, taken as torch's autograd takes them (module docs)
SMOOTH = [name for name in ACTIVATIONS + NEW if name.partition("(")[0] not in NON_SMOOTH]


@pytest.mark.parametrize("name", SMOOTH)
def test_autodiff_through_the_formulas_is_exact_at_zero(backend, name):
    """The stable formulas are written in |z|; differentiated by the backend's own autodiff, reverse and
    forward, part j gives sigma^(j+1) at z = 0 too (``abs``' sign(0) = 0 made sigmoid'(0) come out 0,
    and with it the weight gradients of a sigmoid network wherever a pre-activation is exactly 0)."""
    if backend.name not in ("torch", "jax"):
        pytest.skip("autodiff: the torch and jax sessions")
    grad = autodiff(backend)[3]
    if backend.name == "torch":
        from torch.func import jvp
    else:
        from jax import jvp
    act, xp = get_activation(name), backend.xp
    z = backend.asarray([0.0, -0.0, 1e-300, -1e-300, 0.3, -0.7])
    want = [backend.to_numpy(a) for a in act.derivatives(z, xp, 3)]
    for j in range(3):

        def part(t, j=j):
            return act.derivatives(t, xp, 2)[j]

        reverse = backend.to_numpy(grad(lambda t: xp.sum(part(t)))(z))
        forward = backend.to_numpy(jvp(part, (z,), (xp.ones_like(z),))[1])
        for got in (reverse, forward):
            # relative, but absolute at z = +-1e-300 (autodiff through 1 - exp(-2|z|) rounds there)
            assert np.all(np.abs(got - want[j + 1]) <= 1e-13 * np.abs(want[j + 1]) + 1e-290), (name, j, got, want)


def test_weight_gradients_of_a_sigmoid_network_at_a_zero_pre_activation(backend):
    """Zero biases and the origin put every first-layer pre-activation at exactly 0: the weight gradients of
    the value and of the Laplacian still equal those of the plain network (autodiff of torch.sigmoid/jax's)."""
    if backend.name not in ("torch", "jax"):
        pytest.skip("autodiff: the torch and jax sessions")
    grad = autodiff(backend)[3]
    xp = backend.xp
    rng = np.random.default_rng(3)
    w1, w2 = backend.asarray(rng.standard_normal((2, 3))), backend.asarray(rng.standard_normal((3, 1)))
    b1, b2 = backend.asarray(np.zeros(3)), backend.asarray(np.zeros(1))
    x = backend.asarray(np.zeros((1, 2)))

    def ours(arrays, quantity):
        net = xd.Sequential(xd.Dense(arrays[0], arrays[1], "sigmoid"), xd.Dense(arrays[2], b2, "identity"))
        return xp.sum(getattr(xd, quantity)(net, x))

    def plain(arrays, quantity):
        def u(p):
            return xp.sum(1.0 / (1.0 + xp.exp(-(p @ arrays[0] + arrays[1]))) * arrays[2][:, 0])

        if quantity == "value":
            return u(x[0])
        return sum(grad(lambda t, i=i: grad(u)(t)[i])(x[0])[i] for i in range(2))

    for quantity in ("value", "laplacian"):
        got = grad(lambda a, q=quantity: ours(a, q))([w1, b1, w2])
        want = grad(lambda a, q=quantity: plain(a, q))([w1, b1, w2])
        for a, b in zip(got, want):
            assert rel_err(backend.to_numpy(a), backend.to_numpy(b)) < 1e-14, quantity
