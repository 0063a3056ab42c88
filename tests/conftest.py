"""The ``backend`` fixture, hypothesis profiles and the representative subset for the slow backends.

Backend
    ``XDERIV_BACKEND`` is ``numpy`` (default), ``torch``, ``strict``
    (array-api-strict with extensions disabled, arrays on its ``device1``),
    ``jax`` (float64 enabled), ``dask`` (dask.array, lazy) or ``cupy``;
    ``XDERIV_DEVICE=cuda`` puts the torch session on the GPU.  A backend that
    cannot run here skips every test, saying why.

    Every array a test builds goes through the fixture (``backend.asarray``,
    ``device=backend.device``) and every conversion back to NumPy through
    ``backend.to_numpy``, which asserts that the array lives on the session's
    device.  ``XDERIV_TORCH_DEFAULT_DEVICE=meta`` (torch session only) checks
    this without a GPU: a tensor a test file builds without ``device=`` is an
    error naming the line, and one built without ``device=`` elsewhere (in
    xderiv, say) lands on ``meta`` instead of the session's device, as a CPU
    tensor does in a CUDA session, and fails where it meets the session's
    tensors (device mismatch, or no data to convert).

Hypothesis profiles
    ``XDERIV_HYPOTHESIS_PROFILE`` selects ``ci`` (few examples, derandomized,
    no example database), ``dev`` (the default) or ``thorough`` (many
    examples); ``XDERIV_HYPOTHESIS_EXAMPLES=N`` overrides ``max_examples``.

Representative subset
    JAX (eager, op by op) and dask (a graph per call) are slow per test, so
    their sessions run a representative subset by default: every operator
    and every mode, but the zoo networks cut to :data:`SUBSET_NETS`, a few
    other parameter grids thinned (see :data:`SUBSET_RULES`) and, on those two
    backends, the tests of :data:`SUBSET_DROP_BY_BACKEND` left out.  ``--full`` or ``XDERIV_FULL=1`` runs everything;
    ``--subset`` or ``XDERIV_SUBSET=1`` asks for the subset on any backend.
    Dropped parametrizations are *deselected* (reported as such), not skipped.

Exhaustive sweeps
    A few sweeps repeat, case after case, a check whose every kind already
    runs on representative cases (and whose other cases are checked another
    way): they run only with ``--exhaustive`` or ``XDERIV_EXHAUSTIVE=1``
    (which implies ``--full``): the tests take the ``exhaustive`` fixture and do
    the costly part on a few cases without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

BACKEND = os.environ.get("XDERIV_BACKEND", "numpy")
TORCH_DEFAULT_DEVICE = os.environ.get("XDERIV_TORCH_DEFAULT_DEVICE")  # "meta": the device-cleanliness check
SLOW_BACKENDS = ("jax", "dask")  # run the representative subset unless --full / XDERIV_FULL=1


def _flag(name: str) -> bool | None:
    """``True``/``False`` for a set environment flag (``1``/``0``, ``yes``/``no``, ...), ``None`` when unset."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    return value not in ("0", "no", "false", "off")


# --------------------------------------------------------------------------- hypothesis profiles

HYPOTHESIS_PROFILE = os.environ.get("XDERIV_HYPOTHESIS_PROFILE", "dev")
HYPOTHESIS_EXAMPLES = {"ci": 25, "dev": 100, "thorough": 1000}


def _load_hypothesis_profile() -> str | None:
    """Register ``ci``, ``dev`` and ``thorough``; load ``XDERIV_HYPOTHESIS_PROFILE``. Returns a description."""
    try:
        from hypothesis import settings
    except ImportError:
        return None
    # The backends dispatch op by op and JAX compiles on first use: timings vary too much for a deadline.
    settings.register_profile(
        "ci", max_examples=HYPOTHESIS_EXAMPLES["ci"], derandomize=True, deadline=None, database=None
    )
    settings.register_profile("dev", max_examples=HYPOTHESIS_EXAMPLES["dev"], deadline=None)
    settings.register_profile("thorough", max_examples=HYPOTHESIS_EXAMPLES["thorough"], deadline=None)
    if HYPOTHESIS_PROFILE not in HYPOTHESIS_EXAMPLES:
        raise pytest.UsageError(
            f"XDERIV_HYPOTHESIS_PROFILE={HYPOTHESIS_PROFILE!r}: expected one of {', '.join(HYPOTHESIS_EXAMPLES)}"
        )
    name = HYPOTHESIS_PROFILE
    examples = os.environ.get("XDERIV_HYPOTHESIS_EXAMPLES")
    if examples:
        name = f"{HYPOTHESIS_PROFILE}-{int(examples)}-examples"
        settings.register_profile(name, parent=settings.get_profile(HYPOTHESIS_PROFILE), max_examples=int(examples))
    settings.load_profile(name)
    return f"{name} (max_examples={settings.default.max_examples}, derandomize={settings.default.derandomize})"


# Loaded at import, before any test module builds its settings objects from the active profile.
HYPOTHESIS_DESCRIPTION = _load_hypothesis_profile()


# --------------------------------------------------------------------------- backend


@dataclass
class Backend:
    """A backend under test: factory module, device, namespace and converters."""

    name: str
    module: Any  # what a user passes as xp= to the factories
    device: Any  # device of every array the tests create (None: the library's only/default device)
    xp: Any  # the Array API namespace of those arrays

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def asarray(self, a: Any, dtype: str = "float64") -> Any:
        """``a`` (anything NumPy reads) as an array of the session's backend, on its device."""
        return self.xp.asarray(np.asarray(a), dtype=self.dtype(dtype), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        """A NumPy copy of ``a``, which must be an array of this session on the session's device."""
        self.check_device(a)
        if self.name == "torch":
            return a.detach().cpu().numpy()
        if self.name == "cupy":
            return a.get()
        if self.name == "dask":
            return np.asarray(a.compute())
        if self.name == "strict":
            import array_api_strict

            return np.asarray(a.to_device(array_api_strict.Device("CPU_DEVICE")))
        return np.asarray(a)

    def device_of(self, a: Any) -> Any:
        import array_api_compat

        return array_api_compat.device(a)

    def check_device(self, a: Any) -> None:
        """Assert that ``a`` lives on the session's device (when the session names one)."""
        if self.device is None:
            return
        dev = self.device_of(a)
        assert dev == self.device, (
            f"an array on device {dev} in a session on {self.device}: build test arrays with "
            "backend.asarray(...) or device=backend.device"
        )

    def default_device(self) -> contextlib.AbstractContextManager[Any]:
        """Make the session's device the library default, for code run as written (README, demos)."""
        if self.name == "torch" and self.device is not None:
            return self.device  # a torch.device is a context manager that sets the default device
        return contextlib.nullcontext()

    @property
    def on_cpu(self) -> bool:
        """Whether the session's arrays live in host memory (NumPy-convertible without a copy to host)."""
        if self.name == "cupy":
            return False
        if self.name == "torch":
            return self.device is None or self.device.type == "cpu"
        return True


def _torch_device(torch: Any) -> Any:
    """The torch session's device: ``XDERIV_DEVICE`` (``cuda`` means the current CUDA device), else the CPU."""
    name = os.environ.get("XDERIV_DEVICE", "cpu")  # e.g. "cuda" on a GPU machine
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"XDERIV_DEVICE={name} but torch sees no CUDA device")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:  # arrays report cuda:0, not cuda
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _make_backend(name: str) -> Backend:
    import array_api_compat

    if name == "numpy":
        return Backend("numpy", np, None, array_api_compat.array_namespace(np.zeros(1)))
    if name == "torch":
        torch = pytest.importorskip("torch", reason="torch is not installed in this session")
        torch.set_num_threads(1)  # the test problems are tiny: threads only add dispatch overhead
        device = _torch_device(torch)
        return Backend("torch", torch, device, array_api_compat.array_namespace(torch.zeros(1, device=device)))
    if name == "strict":
        strict = pytest.importorskip("array_api_strict")
        strict.set_array_api_strict_flags(enabled_extensions=())
        dev = strict.Device("device1")
        return Backend("strict", strict, dev, strict)
    if name == "jax":
        jax = pytest.importorskip("jax", reason="jax is not installed in this session")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return Backend("jax", jnp, None, array_api_compat.array_namespace(jnp.zeros(1)))
    if name == "dask":
        da = pytest.importorskip("dask.array", reason="dask is not installed in this session")
        return Backend("dask", da, None, array_api_compat.array_namespace(da.zeros(1)))
    if name == "cupy":
        try:
            import cupy
        except ImportError as exc:
            pytest.skip(f"CuPy is not installed: {exc}")
        try:
            if not cupy.is_available():
                pytest.skip("CuPy imports but cupy.is_available() is False: no usable CUDA GPU/driver here")
            cupy.zeros(1)
        except Exception as exc:  # the first allocation raises without a GPU
            pytest.skip(f"CuPy cannot allocate on a GPU here: {exc}")
        return Backend("cupy", cupy, None, array_api_compat.array_namespace(cupy.zeros(1)))
    raise ValueError(f"XDERIV_BACKEND={name!r}: expected numpy, torch, strict, jax, dask or cupy")


@pytest.fixture(scope="session")
def backend() -> Backend:
    """The backend this session tests (``XDERIV_BACKEND``)."""
    return _make_backend(BACKEND)


@pytest.fixture(scope="session")
def xp(backend: Backend) -> Any:
    """The Array API namespace of the session's backend."""
    return backend.xp


@pytest.fixture(autouse=True)
def _restore_memory_budget() -> Iterator[None]:
    """xderiv's memory budget is process-global: whatever a test sets, the next test starts from the same value.

    (Tests that change it restore it themselves too; this keeps a failing or new test from
    leaking its budget into the tests that follow it on the same pytest-xdist worker.)
    """
    import xderiv as xd

    before = xd.get_memory_budget() if hasattr(xd, "get_memory_budget") else None
    yield
    if before is not None and xd.get_memory_budget() != before:
        xd.set_memory_budget(before)


@pytest.fixture(scope="session")
def torch_device(request: pytest.FixtureRequest) -> Any:
    """Where tests of torch-only code (``xderiv.interop``) build their tensors.

    The session's device in the torch session (so ``XDERIV_DEVICE=cuda`` moves them to the GPU
    too), the CPU in every other session.
    """
    torch = pytest.importorskip("torch")
    if BACKEND == "torch":
        return request.getfixturevalue("backend").device
    return torch.device("cpu")


# --------------------------------------------------------------------------- options, header


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xderiv")
    group.addoption("--subset", action="store_true", help="run the representative subset (default on jax and dask)")
    group.addoption("--full", action="store_true", help="run every parametrization, also on jax and dask")
    group.addoption(
        "--exhaustive",
        action="store_true",
        help="also the opt-in exhaustive sweeps (the exhaustive fixture); implies --full",
    )


def _torch_device_check(device: str) -> Any:
    """A torch function mode for ``XDERIV_TORCH_DEFAULT_DEVICE``: tensors built without ``device=``.

    Built in a test file (tests/), such a tensor is an error naming the file and line: test
    tensors belong on ``backend.device``.  Built elsewhere (xderiv, array-api-compat, hessQuik,
    torch itself) it lands on ``device`` (e.g. ``meta``) instead of the session's device, as a
    CPU tensor does in a CUDA session, and fails wherever it meets the session's tensors.
    Inside an explicit ``with torch.device(...)`` (README blocks, examples, modules built on
    the CPU on purpose) that device applies.
    """
    import sys

    import torch
    import torch.utils._device as torch_device_module
    from torch.overrides import TorchFunctionMode

    tests_dir = os.path.dirname(os.path.abspath(__file__)) + os.sep
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    target = torch.device(device)

    class DeviceCheck(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
            kwargs = dict(kwargs or {})
            if (
                kwargs.get("device") is None
                and torch_device_module.CURRENT_DEVICE is None  # no explicit `with torch.device(...)`
                and func in torch_device_module._device_constructors()
            ):
                frame = sys._getframe(1)
                while frame is not None and frame.f_code.co_filename.startswith(torch_dir):
                    frame = frame.f_back
                if frame is not None and frame.f_code.co_filename.startswith(tests_dir):
                    where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
                    raise RuntimeError(
                        f"{where}: torch.{getattr(func, '__name__', func)} without device=: build test tensors "
                        "with backend.asarray(...) or device=backend.device"
                    )
                kwargs["device"] = target
            return func(*args, **kwargs)

    return DeviceCheck()


def _jax_compilation_cache(config: pytest.Config) -> None:
    """JAX compiles every primitive for every new shape, even eagerly: most of a JAX session's time.

    Keep the compiled kernels in pytest's cache directory (``.pytest_cache/d/xderiv-jax``),
    shared by the pytest-xdist workers and reused by the next run.  ``XDERIV_JAX_CACHE=0``
    turns it off; an explicit ``JAX_COMPILATION_CACHE_DIR`` is left alone.
    """
    if _flag("XDERIV_JAX_CACHE") is False or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    try:
        import jax
    except ImportError:
        return
    if cache is None:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache.mkdir("xderiv-jax")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # the kernels are tiny but many
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_configure(config: pytest.Config) -> None:
    global HYPOTHESIS_DESCRIPTION
    if HYPOTHESIS_DESCRIPTION and subset_enabled(config) and not os.environ.get("XDERIV_HYPOTHESIS_EXAMPLES"):
        from hypothesis import settings

        if settings.default.max_examples > SUBSET_HYPOTHESIS_EXAMPLES:
            name = f"{HYPOTHESIS_PROFILE}-subset"
            settings.register_profile(
                name, parent=settings.get_profile(HYPOTHESIS_PROFILE), max_examples=SUBSET_HYPOTHESIS_EXAMPLES
            )
            settings.load_profile(name)
            HYPOTHESIS_DESCRIPTION = (
                f"{name} (max_examples={settings.default.max_examples}, derandomize={settings.default.derandomize})"
            )
    if BACKEND == "jax":
        _jax_compilation_cache(config)
    if BACKEND == "torch" and TORCH_DEFAULT_DEVICE:
        try:
            import torch  # noqa: F401
        except ImportError:
            return
        config._xderiv_device_check = _torch_device_check(TORCH_DEFAULT_DEVICE)  # type: ignore[attr-defined]
        config._xderiv_device_check.__enter__()  # type: ignore[attr-defined]


def exhaustive_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--exhaustive") or _flag("XDERIV_EXHAUSTIVE"))


@pytest.fixture(scope="session")
def exhaustive(request: pytest.FixtureRequest) -> bool:
    """Whether the opt-in exhaustive sweeps run (``--exhaustive`` or ``XDERIV_EXHAUSTIVE=1``)."""
    return exhaustive_enabled(request.config)


def subset_enabled(config: pytest.Config) -> bool:
    if config.getoption("--full") or _flag("XDERIV_FULL") or exhaustive_enabled(config):
        return False
    if config.getoption("--subset"):
        return True
    env = _flag("XDERIV_SUBSET")
    return BACKEND in SLOW_BACKENDS if env is None else env


def pytest_report_header(config: pytest.Config) -> list[str]:
    device = os.environ.get("XDERIV_DEVICE", "default")
    subset = "on" if subset_enabled(config) else "off (full)"
    sweeps = "on" if exhaustive_enabled(config) else "off"
    lines = [f"xderiv: backend={BACKEND} device={device} subset={subset} exhaustive sweeps={sweeps}"]
    if TORCH_DEFAULT_DEVICE:
        lines.append(f"xderiv: tensors built without device= go to {TORCH_DEFAULT_DEVICE} (device-cleanliness check)")
    if HYPOTHESIS_DESCRIPTION:
        lines.append(f"xderiv: hypothesis profile {HYPOTHESIS_DESCRIPTION}")
    return lines


# --------------------------------------------------------------------------- representative subset

# Zoo networks kept by the subset wherever a test of a module that uses tests/networks_zoo.py
# is parametrized over the zoo (parameters ``name``, ``net_name`` or the ``case`` fixture).
# Together they take every code path of the recursions:
# - residual-first: a Residual straight on the input (J_u = I), then Dense and Residual layers;
# - potential-general: the Potential head on a Dense + Residual trunk (a plain Dense opening), with
#   a non-symmetric A and a linear term.
# Every operator and every mode still runs on each of them; the activations are covered one
# by one by test_activations and the activation tests of test_reliability, kept whole.  The zoo's
# plain Dense chain with a nonlinear output layer (mlp-silu) runs the same per-layer code, and the
# numpy, torch and strict sessions run it in full.
SUBSET_NETS = frozenset({"residual-first", "potential-general"})
# JAX and dask keep the one with every layer kind and head term: the residual opening differs from it in
# which recursion branch runs, not in the namespace functions it calls (the floors session's subset and
# the numpy, torch and strict sessions run residual-first).
SLOW_SUBSET_NETS = frozenset({"potential-general"})

# Test function -> {parameter: values kept}, narrower than SUBSET_NETS where one network or a
# few grid points exercise the same code.  No rule ever drops a value of ``mode`` or ``op``.
SUBSET_RULES: dict[str, dict[str, frozenset[Any]]] = {
    # test_interop_torch_graph: the modules with the most kinds of operation (gating, slogdet, the medley)
    "test_value_matches_module": {
        "name": frozenset({"modified-mlp", "logdet-slogdet", "medley"}),
        "batch": frozenset({(2, 3)}),
    },
    "test_weight_gradients_match": {"name": frozenset({"piratenet", "attention"})},
    "test_only_the_namespace_touches_the_input": {"name": frozenset({"medley", "layernorm-mlp"})},
    # test_jets: one jet-kind check with products and softmax, one with slogdet
    "test_jet_kinds_agree": {"name": frozenset({"attention", "log_determinant"})},
    "test_finite_differences": {"name": frozenset({"layer_norm"})},
    # test_autodiff: every operator x mode, with its weight gradient, on the OT-Flow-style
    # potential (Dense opening, Residual trunk, quadratic and linear head terms).
    "test_operator_and_weight_gradient_match_autodiff": {"name": frozenset({"potential"})},
    # test_check: the reference (jax's nested autodiff, or differences of lazy arrays) on one operator; the
    # check itself is the same code on every namespace (numpy, torch and strict run every case)
    "test_every_operator_passes_and_catches_a_perturbation": {"case": frozenset({"hessian"})},
    # test_second_order: products and graphs on one of them
    "test_composites_potentials_and_graphs": {"name": frozenset({"composite"})},
    # test_derivatives
    "test_float32_matches_float64": {"name": frozenset({"potential-general"})},
    "test_batch_shapes": {"batch": frozenset({(2, 3), (0,)})},
    # test_reliability
    "test_zero_size_batch_gives_empty_results_of_the_right_shape": {"batch": frozenset({(3, 0)})},
    "test_one_input_dimension": {"kind": frozenset({"potential", "residual-only"})},
    "test_float32_within_the_documented_tolerance": {
        "kind": frozenset({"resnet"}),
        "depth": frozenset({3}),
        "width": frozenset({32}),
    },
    "test_no_operator_mutates_inputs_weights_or_aliases_them": {"name": frozenset({"potential-general"})},
    "test_non_finite_input_stays_in_its_own_row": {"bad": frozenset({float("inf"), 1e300})},
    # test_composition: a scalar Potential times a two-output network plus a one-output network
    # (broadcasting, Sum, Product of a scalar), and a product of sums with scalings (nesting)
    "test_jacobian_and_hessian_match_finite_differences": {"case": frozenset({"broadcast", "nested"})},
    "test_every_operator_by_the_product_rule": {"case": frozenset({"broadcast", "nested"})},
    "test_directional_and_hvp": {"case": frozenset({"broadcast", "nested"})},
    # test_activations: every new activation runs through a network on every backend elementwise
    # (mpmath grids); through xd.mlp and autodiff the subset keeps the erf-based one and a parametric one
    "test_mlp_hessian_and_laplacian": {"name": frozenset({"gelu", "sin(freq=3.0)"})},
    # test_estimators: each estimator's statistics on the composite phi * N (diagonal quadratic times an
    # MLP: the product rule's cross term and a Potential's trace along per-point directions); the numpy,
    # torch and strict sessions also run the two-output MLP and the dense-A Potential
    "test_mean_converges_to_the_laplacian_within_the_stated_standard_error": {"name": frozenset({"hard-bc"})},
    # test_threads: the float64 network with every layer kind (float32 callers: the dtype test below)
    "test_concurrent_evaluation_matches_sequential": {"name": frozenset({"potential-general"})},
    # test_taylor: every layer kind with one and several directions per point, and three activations whose
    # any-order derivatives take different routes (polynomial in tanh, Hermite times the density, composed
    # series); each activation is checked to order 6 on its own by test_activations, kept whole
    "test_taylor_matches_nested_jvp": {
        "case": frozenset({"act-tanh", "act-gelu", "act-mish", "layers-point", "layers-multi-shared"}),
    },
    "test_composites_by_leibniz_rule": {"name": frozenset({"hard-bc", "nested"})},
    "test_weighted_top_derivative_is_the_weighted_sum": {"order": frozenset({4})},
    # against nested Hessians (torch, jax): the smallest network, as the reference's fourth derivatives compile whole
    # on JAX; composites' biharmonic and partials are checked on every backend by the next test ("scalar")
    "test_biharmonic_and_partials_match_nested_hessians": {"name": frozenset({"mlp-tanh"})},
    "test_biharmonic_and_partials_agree_with_each_other_and_the_hessian": {"name": frozenset({"layers", "scalar"})},
}

# Test functions the subset leaves out entirely, with what covers them instead.
SUBSET_DROP = {
    # chunk sizes 1, 3, 35, 1000 for every operator: the same chunking path is run in both modes
    # by test_operators::test_chunking_gives_identical_results (budget and chunk_size).
    "test_low_memory_budget_chunks_and_gives_the_same_results",
    # test_taylor: eight layouts of v and x, each a new shape to compile; the reading of the layouts is
    # argument handling that never touches the namespace beyond reshape (numpy, torch and strict run it)
    "test_shapes_layouts_and_orders",
}

# Per backend, further test functions the subset leaves out.
CHECK_EXTRAS = (  # test_check beyond one operator: the report, every(), composites, seeds (numpy, torch, strict)
    "test_report_is_a_small_frozen_record",
    "test_every_checks_one_call_in_n",
    "test_graphs_and_composites",
    "test_generator_seed_draws_what_the_call_drew",
)

# JAX and dask arrays are immutable values with no strides: a view, a broadcast, a transposed copy
# and a fresh array of the same numbers are the same thing to them, and no call can write into one.
# What these tests check (layouts and zero strides read right, nothing written in place) is the
# core's code, the same on every namespace; the numpy, torch and strict sessions, whose arrays have
# views, strides and in-place writes, run them in full.
VIEWS_AND_WRITES = (
    "test_non_contiguous_and_broadcast_inputs",
    "test_broadcast_weights",
    "test_no_operator_mutates_inputs_weights_or_aliases_them",
)

# On JAX (a kernel compiled per operation and shape on first use) and dask (a graph per call) every
# new shape or call is costly.  Their sessions keep what only they can check: every operator in every
# mode against finite differences and the autodiff references, jit/grad/vmap/sharding and laziness,
# weight gradients through every operator and estimator, dtypes, zero-size batches and the elementwise
# accuracy of the activations on their own kernels.  They leave out the tests below, which check
# xderiv's own argument handling, layouts and sampling statistics: code that reaches the namespace only
# through calls the kept tests make, and that the numpy, torch and strict sessions run in full.
GENERIC_ON_SLOW_BACKENDS = (
    # hypothesis over architectures and batch shapes (every mode against finite differences is kept)
    "test_every_mode_agrees_with_every_other_and_with_finite_differences",
    "test_batch_is_a_map_over_points",
    # batch layouts, d = 1, a shared direction, chunk boundaries of the Taylor sweep
    "test_batch_shapes",
    "test_one_input_dimension",
    "test_directional_with_shared_direction_and_linear_term",
    "test_no_state_is_kept_on_the_network",
    "test_chunks_give_the_same_derivatives",
    # Leibniz and weighted sums of directions (the composites' product rule against the Hessian is kept)
    "test_composites_by_leibniz_rule",
    "test_weighted_top_derivative_is_the_weighted_sum",
    "test_biharmonic_and_partials_agree_with_each_other_and_the_hessian",
    "test_jacobian_and_hessian_match_finite_differences",
    # the estimators' layouts and statistics (their known answers, convergence and weight gradients are kept)
    "test_a_composite_randomizes_only_its_networks",
    "test_stde_is_sdgd",
    "test_directions_follow_the_documented_layout",
    "test_shared_directions_are_those_of_a_single_point",
    "test_biharmonic_estimate_converges_within_the_stated_standard_error",
    "test_biharmonic_estimate_is_the_weighted_taylor_sweep",
)

SUBSET_DROP_BY_BACKEND = {
    # Every dask compute already runs on dask's own thread pool; six caller threads times every
    # operator and mode times dask's pool take minutes.  Threads still call xderiv concurrently in
    # test_concurrent_construction_and_evaluation and test_one_network_shared_by_threads_with_...
    "dask": {
        "test_concurrent_evaluation_matches_sequential",
        "test_one_network_shared_by_threads_with_different_input_dtypes",
        *CHECK_EXTRAS,
        *VIEWS_AND_WRITES,
        *GENERIC_ON_SLOW_BACKENDS,
    },
    # JAX compiles a kernel per operation and shape on first use, and its dispatch holds no
    # xderiv state: the numpy, torch and strict sessions run this test in full.
    # test_composition's shapes and test_threads' dtype mix are argument handling and locking, the same
    # code on every namespace (numpy, torch and strict run them in full); on JAX each new shape compiles.
    "jax": {
        "test_concurrent_evaluation_matches_sequential",
        "test_one_network_shared_by_threads_with_different_input_dtypes",
        "test_shapes_follow_the_parts",
        *CHECK_EXTRAS,
        *VIEWS_AND_WRITES,
        *GENERIC_ON_SLOW_BACKENDS,
    },
}

# Hypothesis examples per property under the subset (unless XDERIV_HYPOTHESIS_EXAMPLES is set).
SUBSET_HYPOTHESIS_EXAMPLES = 3


def _network_names() -> frozenset[str]:
    from .networks_zoo import NAMES

    return frozenset(NAMES)


def _kept(item: pytest.Item, nets: frozenset[str]) -> bool:
    name = getattr(item, "originalname", item.name)
    if name in SUBSET_DROP or name in SUBSET_DROP_BY_BACKEND.get(BACKEND, ()):
        return False
    if BACKEND != "torch" and "torch_device" in getattr(item, "fixturenames", ()):
        return False  # torch-only interop code, independent of this session: the torch session runs it
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return True
    rules = SUBSET_RULES.get(name, {})
    module = getattr(item, "module", None)
    uses_zoo = getattr(getattr(module, "zoo", None), "__module__", "").endswith("networks_zoo")
    for param, value in callspec.params.items():
        if param in rules:
            if value not in rules[param]:
                return False
        elif param in ("name", "net_name", "case") and isinstance(value, str) and value in nets and uses_zoo:
            if value not in (SLOW_SUBSET_NETS if BACKEND in SLOW_BACKENDS else SUBSET_NETS):
                return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not subset_enabled(config):
        return
    nets = _network_names()
    keep, drop = [], []
    for item in items:
        (keep if _kept(item, nets) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
