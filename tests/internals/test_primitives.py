"""The fused primitives of each namespace (``xderiv.backends.primitives``) against the expressions they replace.

On every backend the namespace's :class:`~xderiv.backends.primitives.Primitives` must give what the plain
Array API expressions give, to round-off: torch's ``addmm``/``addcmul``, NumPy's ``einsum``, and on
CuPy (the ``tests-cupy`` and ``tests-gpu`` sessions) the elementwise and reduction kernels and the
activations' one-kernel parts, checked here at the extremes their stable formulas exist for.
"""

from __future__ import annotations

import types

import array_api_compat.numpy as npx
import numpy as np
import pytest

from xderiv import get_activation
from xderiv.backends.primitives import NUMPY, PLAIN, XLA, Primitives, _cupy_primitives, primitives

TOL = {"float64": 1e-14, "float32": 1e-5}


def _close(backend, got, want, dtype: str, elementwise: bool = False) -> None:
    """Equal to round-off: relative to each element (``elementwise``), else to the array's largest
    element too (a fused multiply-add rounds once where ``y + a * b`` rounds twice, which shows in
    relative terms where the sum cancels)."""
    got, want = backend.to_numpy(got), backend.to_numpy(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    atol = 0.0 if elementwise else TOL[dtype] * float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=atol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_primitives_equal_the_plain_expressions(backend, dtype):
    xp, ops = backend.xp, primitives(backend.xp)
    rng = np.random.default_rng(0)

    def arr(*shape):
        return backend.asarray(rng.standard_normal(shape), dtype)

    y, a, b = arr(5, 3, 4), arr(5, 3, 4), arr(5, 1, 4)  # b broadcast over the middle axis, as sigma' is
    _close(backend, ops.addcmul(y, a, b), y + a * b, dtype)
    _close(backend, ops.axpy(y, 0.5, a), y + 0.5 * a, dtype)
    _close(backend, ops.axpy(y, 1.0, a), y + a, dtype)
    for axis, form in [(axis, form) for axis in (-2, 1, -1, 0) for form in (ops, XLA)]:
        _close(backend, form.sum_squares(a, axis, xp), xp.sum(a * a, axis=axis), dtype)
    transposed = xp.permute_dims(a, (0, 2, 1))  # not contiguous
    _close(backend, ops.sum_squares(transposed, -2, xp), xp.sum(transposed * transposed, axis=-2), dtype)
    u, w, bias = arr(6, 3), arr(3, 4), arr(4)
    _close(backend, ops.affine(u, w, bias), u @ w + bias, dtype)
    acc = arr(5, 3, 4)
    # the owned-temporary forms: values as the plain expressions (computed first: NumPy overwrites)
    for shape in ((5, 3, 4), (5, 1, 4), (4,), (1, 3, 4)):  # the last two enlarge nothing / broadcast up
        other = arr(*shape)
        want = [a * other, a + other, y + other * a]
        got = [ops.times(a + 0.0, other), ops.plus(a + 0.0, other), ops.fma(y, other, a + 0.0)]
        for g, expected in zip(got, want):
            _close(backend, g, expected, dtype)
    _close(backend, ops.times(a + 0.0, 0.5), 0.5 * a, dtype)
    lhs = arr(5, 3, 3)
    want = acc + xp.reshape(xp.reshape(lhs, (15, 3)) @ w, (5, 3, 4))
    _close(backend, ops.matmul_add(acc, lhs, w, xp), want, dtype)
    # the jets' collapsed terms, here and in JAX's pairwise form (plain Array API code, run on every backend);
    # odd counts leave a row out at some halving
    for r, form in [(r, form) for r in (1, 2, 3, 5, 7, 8, 13) for form in (ops, XLA)]:
        rows, other, weights = arr(r, 3, 4), arr(r, 3, 4), arr(r)
        _close(backend, form.lead_sum(rows, xp), xp.sum(rows, axis=0, keepdims=True), dtype)
        for w_ in (None, weights):
            scale = 1.0 if w_ is None else xp.reshape(w_, (r, 1, 1))
            want = xp.sum(scale * rows * other, axis=0, keepdims=True)
            _close(backend, form.lead_dot(rows, other, w_, xp), want, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matmul_equals_the_product_over_the_last_axis(backend, dtype):
    """``ops.matmul`` (NumPy: per-point products where faster) against one 2-D product, on either
    side of NumPy's choice: few or many rows per point, narrow or wide, one output, 4-D stacks,
    a transposed weight, a non-contiguous left side, no points."""
    xp, ops = backend.xp, primitives(backend.xp)
    rng = np.random.default_rng(1)

    def arr(*shape):
        return backend.asarray(rng.standard_normal(shape), dtype)

    cases = [(arr(5, 3, 4), arr(4, 8)), (arr(5, 6, 16), arr(16, 16)), (arr(2, 3, 6, 16), arr(16, 8))]
    cases += [(arr(5, 6, 16), arr(16, 1)), (arr(4, 8, 300), arr(300, 9)), (arr(7, 16), arr(16, 16))]
    cases += [
        (arr(5, 6, 16), xp.matrix_transpose(arr(12, 16))),
        (xp.permute_dims(arr(5, 16, 6), (0, 2, 1)), arr(16, 8)),
    ]
    cases += [(arr(0, 6, 16), arr(16, 16))]
    for a, w in cases:
        flat = xp.reshape(a, (-1, a.shape[-1])) @ w
        want = xp.reshape(flat, (*a.shape[:-1], w.shape[-1]))
        _close(backend, ops.matmul(a, w, xp), want, dtype)
        acc = arr(*want.shape)
        _close(backend, ops.matmul_add(acc, a, w, xp), acc + want, dtype)


def test_numpy_multiplies_per_point_where_openblas_is_faster():
    """NumPy's rule (measured, see ``_numpy_matmul``): per-point products from 4 rows per point and widths
    8..256; one 2-D product (two reshapes) otherwise."""
    reshaped = []

    def reshape(a, shape):
        reshaped.append(shape)
        return npx.reshape(a, shape)

    xp = types.SimpleNamespace(reshape=reshape)
    rng = np.random.default_rng(2)
    for a_shape, w_shape, per_point in [
        ((10, 4, 16), (16, 16), True),
        ((10, 64, 256), (256, 256), True),
        ((3, 2, 64, 64), (64, 64), True),
        ((10, 3, 64), (64, 64), False),
        ((10, 16, 16), (16, 1), False),
        ((10, 16, 512), (512, 64), False),
        ((10, 16, 64), (64, 512), False),
    ]:
        reshaped.clear()
        a, w = rng.standard_normal(a_shape), rng.standard_normal(w_shape)
        np.testing.assert_allclose(NUMPY.matmul(a, w, xp), a @ w, rtol=1e-13, atol=1e-13)
        assert (not reshaped) == per_point, (a_shape, w_shape, reshaped)


# z where the stable formulas matter: 0 and -0, tiny, ordinary, where tanh and sigmoid saturate,
# where exp(-|z|) underflows, and the largest floats.
_EXTREMES = [0.0, -0.0, 1e-300, -1e-300, 1e-30, 0.3, -0.7, 1.0, -2.5, 9.0, -19.0, 20.0, 40.0, -40.0, 88.0, -100.0]
_EXTREMES += [700.0, -745.0, 1e3, -1e3, 1e30, -1e30, 1e300, -1e300]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "sin", "gelu", "silu"])
def test_activation_parts_equal_the_formulas(backend, name, dtype):
    """The namespace's ``activation`` (on CuPy one kernel from ``Activation.kernel``) against ``evaluate``."""
    act, xp, ops = get_activation(name), backend.xp, primitives(backend.xp)
    values = np.array(_EXTREMES)
    if dtype == "float32":
        values = values[np.abs(values) < 1e38]
    if name == "sin":
        values = values[np.abs(values) < 1e3]  # sin of huge arguments: argument reduction differs by library
    z = backend.asarray(values, dtype)
    for order in (1, 2):
        got = ops.activation(act, z, xp, order)
        want = act.derivatives(z, xp, order)
        assert len(got) == len(want) == order + 1
        for g, w in zip(got, want):
            _close(backend, g, w, dtype, elementwise=True)


def test_numpy_writes_into_the_temporaries_it_is_handed():
    """``Primitives.times/plus/fma`` with ``in_place``: into the owned array where the result fits it."""
    owned, row = np.ones((4, 3)), np.full(3, 2.0)
    assert NUMPY.times(owned, row) is owned and np.all(owned == 2.0)
    assert NUMPY.plus(owned, row) is owned and np.all(owned == 4.0)
    assert NUMPY.fma(row, row, owned) is owned and np.all(owned == 10.0)
    small = np.ones(3)
    for enlarged in (NUMPY.times(small, owned), NUMPY.plus(small, owned)):  # broadcasting up: a new array
        assert enlarged.shape == (4, 3) and np.all(small == 1.0)
    assert NUMPY.times(owned, row.astype(np.float32)).dtype == np.float64 and np.all(owned == 10.0)  # dtypes differ
    assert PLAIN.times(owned, row) is not owned and np.all(owned == 10.0)


def test_numpy_sweeps_in_place_give_the_same_bits(backend):
    """The forward sweeps with and without writing into their temporaries: identical results."""
    if backend.name != "numpy":
        pytest.skip("in place on NumPy only")
    import dataclasses

    import xderiv as xd
    from xderiv.backends import namespace as _namespace

    net = xd.resnet(5, 8, 3, step=0.5, activation="tanh", seed=0)
    x = np.random.default_rng(1).standard_normal((7, 5))
    seed = np.random.default_rng(2).standard_normal((7, 5, 2))
    calls = [
        lambda: xd.laplacian(net, x, mode="forward"),
        lambda: xd.jacobian(net, x, mode="forward"),
        lambda: xd.hessian(net, x, mode="forward"),
        lambda: xd.trace_hessian(net, x, seed, mode="forward"),
    ]
    fused = _namespace._KINDS[np.ndarray]
    assert fused.prims.in_place
    results = [call() for call in calls]
    _namespace._KINDS[np.ndarray] = dataclasses.replace(fused, prims=dataclasses.replace(fused.prims, in_place=False))
    try:
        for call, got in zip(calls, results):
            np.testing.assert_array_equal(got, call())
    finally:
        _namespace._KINDS[np.ndarray] = fused
    x_before = x.copy()
    xd.laplacian(net, x, mode="forward")
    np.testing.assert_array_equal(x, x_before)


def test_each_namespace_gets_its_primitives(backend):
    ops = primitives(backend.xp)
    expected = {"numpy": NUMPY, "strict": PLAIN, "dask": PLAIN}
    if backend.name in expected:
        assert ops is expected[backend.name]
    elif backend.name == "cupy":
        assert ops is not PLAIN and ops.sum_squares is not PLAIN.sum_squares
    else:  # torch's addmm/addcmul, JAX's cost ratio
        assert ops is not PLAIN


_CPP = """
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
using namespace std;
%(bodies)s
template <typename T> int run(int which) {
    int n;
    if (scanf("%%d", &n) != 1) return 1;
    for (int i = 0; i < n; ++i) {
        double v;
        if (scanf("%%lf", &v) != 1) return 1;
        const T z = (T)v;
        T s, d1, d2;
        switch (which) { %(cases)s }
        printf("%%.17g %%.17g %%.17g\\n", (double)s, (double)d1, (double)d2);
    }
    return 0;
}
int main(int argc, char** argv) {
    int which = atoi(argv[1]);
    return strcmp(argv[2], "float") == 0 ? run<float>(which) : run<double>(which);
}
"""


def test_activation_kernel_bodies_compute_the_formulas(backend, tmp_path):
    """``Activation.kernel`` bodies compiled as C++ on the host (the CUDA math functions' host twins)
    against ``evaluate`` at the extremes, float32 and float64: their syntax and formulas, checked on
    any machine with a C++ compiler, ahead of the CuPy session that runs them as kernels."""
    import shutil
    import subprocess

    if backend.name != "numpy":
        pytest.skip("host C++, independent of the backend: the numpy session runs it")
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler on this machine")
    names = ("tanh", "sigmoid", "softplus", "sin")  # the built-ins with a kernel body
    assert all(get_activation(name).kernel for name in names)
    bodies = "\n".join(
        f"template <typename T> void k{i}(const T& z, T& s, T& d1, T& d2) {{ {get_activation(name).kernel} }}"
        for i, name in enumerate(names)
    )
    cases = " ".join(f"case {i}: k{i}<T>(z, s, d1, d2); break;" for i in range(len(names)))
    (tmp_path / "kernels.cpp").write_text(_CPP % {"bodies": bodies, "cases": cases})
    exe = tmp_path / "kernels"
    subprocess.run([compiler, "-O1", "-ffp-contract=off", "-o", str(exe), str(tmp_path / "kernels.cpp")], check=True)
    for i, name in enumerate(names):
        for dtype in ("float64", "float32"):
            values = np.array(_EXTREMES)
            if dtype == "float32":
                values = values[np.abs(values) < 1e38]
            if name == "sin":
                values = values[np.abs(values) < 1e3]
            z = values.astype(dtype)
            stdin = f"{len(z)} " + " ".join(repr(float(v)) for v in z)
            out = subprocess.run(
                [str(exe), str(i), "float" if dtype == "float32" else "double"],
                input=stdin,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got = np.array([[float(t) for t in line.split()] for line in out.splitlines()])
            want = np.stack(
                [np.asarray(p, dtype=np.float64) for p in get_activation(name).derivatives(npx.asarray(z), npx, 2)],
                axis=1,
            )
            np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=0, err_msg=f"{name} {dtype}")


class _FakeKernels:
    """A stand-in for CuPy's kernel classes on NumPy: records each kernel and evaluates it by name.

    Checks the glue (which operands each kernel gets, which calls fall back), not the CUDA bodies,
    which the tests above check on a GPU.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.bodies: list[str] = []

    def ElementwiseKernel(self, in_params, out_params, body, name):  # noqa: N802 - CuPy's name
        def run(*args):
            self.calls.append(name)
            if name == "xderiv_addcmul":
                y, a, b = args
                return y + a * b
            if name == "xderiv_axpy":
                y, a, h = args
                assert isinstance(h, np.floating) and h.dtype == a.dtype  # the scalar in the operands' dtype
                return y + h * a
            assert name == "xderiv_activation" and (in_params, out_params) == ("T z", "T s, T d1, T d2")
            self.bodies.append(body)
            return get_activation("tanh").derivatives(args[0], npx, 2)

        return run

    def ReductionKernel(self, in_params, out_params, map_expr, reduce_expr, post_expr, identity, name):  # noqa: N802
        assert (map_expr, reduce_expr, identity) == ("x * x", "a + b", "0")

        def run(a, axis):
            self.calls.append(name)
            assert 0 <= axis < a.ndim  # normalised
            return np.sum(a * a, axis=axis)

        return run


def test_cupy_glue_calls_its_kernels_and_falls_back_otherwise():
    """``_cupy_primitives`` on a fake namespace: kernels for float operands of one dtype, plain expressions else."""
    fake = _FakeKernels()
    xp = types.SimpleNamespace(
        __name__="array_api_compat.cupy",
        ElementwiseKernel=fake.ElementwiseKernel,
        ReductionKernel=fake.ReductionKernel,
        float32=np.float32,
        float64=np.float64,
        sum=np.sum,
    )
    ops = _cupy_primitives(xp)
    assert isinstance(ops, Primitives) and ops is not PLAIN
    y, a = np.ones((2, 3)), np.full((2, 3), 2.0)
    np.testing.assert_array_equal(ops.addcmul(y, a, a), 5.0)
    np.testing.assert_array_equal(ops.axpy(y, 0.5, a), 2.0)
    np.testing.assert_array_equal(ops.sum_squares(a[None], -2, xp), np.full((1, 3), 8.0))
    assert fake.calls == ["xderiv_addcmul", "xderiv_axpy", "xderiv_sum_squares"]
    # h = 1, mixed dtypes and integers take the plain expressions
    ops.axpy(y, 1.0, a)
    ops.addcmul(y, a, a.astype(np.float32))
    ops.sum_squares(np.ones((2, 3), dtype=np.int64), -1, xp)
    assert len(fake.calls) == 3
    # the activation kernel: orders 1 and 2 of an activation with a kernel body, sliced to the order
    tanh, z = get_activation("tanh"), np.linspace(-2.0, 2.0, 5)
    assert len(ops.activation(tanh, z, npx, 1)) == 2 and len(ops.activation(tanh, z, npx, 2)) == 3
    assert fake.bodies == [tanh.kernel, tanh.kernel] and fake.calls[-2:] == ["xderiv_activation"] * 2
    ops.activation(tanh, z, npx, 0)
    ops.activation(tanh, z, npx, 3)
    ops.activation(get_activation("gelu"), z, npx, 2)  # no kernel body
    assert len(fake.calls) == 5
    # a namespace without kernel classes keeps the plain expressions
    assert _cupy_primitives(types.SimpleNamespace(__name__="array_api_compat.cupy")) is PLAIN
