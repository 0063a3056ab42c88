"""Sessions: the suite once per backend, the dependency floors, lint, types, docs, packaging, benchmarks.

``nox`` runs the ``ci`` session (what CI runs; its time: README.md): every other session but the
benchmarks, two at a time side by side, each on its share of the cores.  ``nox -s tests-numpy
tests-torch`` is the fast subset (timings: CONTRIBUTING.md).  Every test session runs the same
``tests/`` through one ``backend`` fixture chosen by ``XDERIV_BACKEND``, in parallel on its cores
(pytest-xdist).

- Hypothesis: profile ``XDERIV_HYPOTHESIS_PROFILE`` (default ``ci``: 25
  derandomized examples per property; ``dev`` 100, ``thorough`` 1000).
- JAX and dask run a representative subset (every operator and mode on two zoo
  networks; tests/conftest.py); ``nox -s tests-jax -- --full`` runs everything.
- torch is pinned by ``XDERIV_TORCH`` (default ``torch==2.13.0``, the CPU
  build this project's machines carry on disk); the library itself only asks
  for ``torch>=2.1``.
- With ``uv`` installed (``pip install nox uv``) nox builds the environments
  with it, several times faster than pip.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import nox

nox.options.sessions = ["ci"]  # every session below but the benchmarks, side by side
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"  # uv when installed, else pip

# uv reads no pip configuration: hand it pip's local wheel folders (comma-separated for uv) so that
# torch==2.13.0 resolves to the local CPU wheel instead of the index's CUDA build.
if os.environ.get("PIP_FIND_LINKS") and "UV_FIND_LINKS" not in os.environ:
    os.environ["UV_FIND_LINKS"] = ",".join(os.environ["PIP_FIND_LINKS"].split())

TORCH = os.environ.get("XDERIV_TORCH", "torch==2.13.0")
PROFILE = os.environ.get("XDERIV_HYPOTHESIS_PROFILE", "ci")
PARALLEL = ["pytest-xdist"]


def _run_tests(session: nox.Session, backend: str, *args: str, **env: str) -> None:
    """The suite on ``backend`` (``XDERIV_BACKEND``) with the session's hypothesis profile.

    On ``XDERIV_TEST_WORKERS`` processes (pytest-xdist; default ``auto``, one per core; ``1`` runs in
    pytest's own process): the ``ci`` session gives each of its lanes its share of the cores.
    """
    env = {"XDERIV_BACKEND": backend, "XDERIV_HYPOTHESIS_PROFILE": PROFILE, **env}
    n = os.environ.get("XDERIV_TEST_WORKERS", "auto")
    workers = [] if n in ("0", "1") else ["-n", n]
    session.run("pytest", "-q", "-ra", *workers, *args, *session.posargs, env=env)


@contextlib.contextmanager
def _source_tree_lock() -> Iterator[None]:
    """Held while a session builds from the checkout (``-e .``, ``python -m build``).

    setuptools writes ``xderiv.egg-info`` into the checkout; two sessions run side by side by ``ci``
    take turns there.
    """
    os.makedirs(".nox", exist_ok=True)
    with open(os.path.join(".nox", "source-tree.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install(session: nox.Session, *args: str) -> None:
    """``session.install(*args)``, holding :func:`_source_tree_lock` (``args`` install the checkout)."""
    with _source_tree_lock():
        session.install(*args)


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The suite on NumPy, then the demo."""
    _install(session, "-e", ".[test]", *PARALLEL)
    _run_tests(session, "numpy")
    session.run("python", "-m", "xderiv", "--quiet")


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The suite on PyTorch (CPU): torch.func agreement, weight gradients, converters, PINN examples.

    The pass with every tensor built without ``device=`` on torch's ``meta`` device (a test that
    would build its arrays off the session's device, and fail on a GPU, fails there) runs in
    ``tests-oldest``, which runs the torch subset anyway.
    """
    session.install(TORCH)
    _install(session, "-e", ".[test,examples,interop]", *PARALLEL)
    _run_tests(session, "torch")


@nox.session(name="tests-strict")
def tests_strict(session: nox.Session) -> None:
    """The suite on array-api-strict, extensions disabled, arrays on its device1: the core uses only the standard."""
    _install(session, "-e", ".[test]", *PARALLEL)
    _run_tests(session, "strict")


# XLA's CPU compiler set for compile time: JAX compiles every primitive for every new shape, even
# eagerly, and the suite's arrays are tiny, so compiling is most of the session. LLVM's optimisation
# passes and XLA's newer MLIR fusion emitters cost more than they save here (against level 0 alone:
# the session 0.8x, its compile-bound tests 0.6x). Results agree with XLA's defaults to round-off
# (tanh's approximation can differ in the last bit: below 1e-15 relative on the benchmark networks).
XLA_COMPILE_FAST = [
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false",
]


def _xla_flags(session: nox.Session) -> str:
    """The caller's own ``XLA_FLAGS``, else :data:`XLA_COMPILE_FAST` less any flag this jaxlib does not know.

    XLA aborts on an unknown flag, and flags come and go between releases: the flags are tried in a
    subprocess first (about a second), and on failure one by one, dropping (and naming) those refused.
    """
    if "XLA_FLAGS" in os.environ:
        return os.environ["XLA_FLAGS"]
    python = os.path.join(session.bin, "python")
    probe = "import jax.numpy as jnp; jnp.ones(2).block_until_ready()"

    def taken(flags: list[str]) -> bool:
        env = {**os.environ, "XLA_FLAGS": " ".join(flags)}
        return subprocess.run([python, "-c", probe], env=env, capture_output=True).returncode == 0

    if taken(XLA_COMPILE_FAST):
        return " ".join(XLA_COMPILE_FAST)
    flags = [flag for flag in XLA_COMPILE_FAST if taken([flag])]
    session.log(f"this jaxlib refuses {sorted(set(XLA_COMPILE_FAST) - set(flags))}: left out")
    return " ".join(flags)


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    """jax.numpy (float64), jax.jit / jax.grad through every operator; a representative subset (``-- --full``)."""
    session.install("jax", "jaxlib")
    _install(session, "-e", ".[test]", *PARALLEL)
    flags = _xla_flags(session)
    session.log(f"XLA_FLAGS={flags}")
    _run_tests(session, "jax", XLA_FLAGS=flags)


@nox.session(name="tests-dask")
def tests_dask(session: nox.Session) -> None:
    """dask.array (lazy, chunked along the batch) and the LocalCluster example; a representative subset."""
    _install(session, "-e", ".[test,dask]", *PARALLEL)
    _run_tests(session, "dask")


def _gpu_missing() -> str | None:
    """Why this machine cannot run GPU sessions, or None if it has an NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU here (nvidia-smi not found): CuPy would import but cannot allocate"
    return None


@nox.session(name="tests-cupy")
def tests_cupy(session: nox.Session) -> None:
    """The suite on CuPy; skips, saying why, without an NVIDIA GPU."""
    if (why := _gpu_missing()) is not None:
        session.skip(why)
    session.install("cupy-cuda13x")
    _install(session, "-e", ".[test]", *PARALLEL)
    _run_tests(session, "cupy")


@nox.session(name="tests-gpu", venv_backend="none")
def tests_gpu(session: nox.Session) -> None:
    """The suite on the GPU, torch CUDA then CuPy, in the machine's own Python (whose CUDA builds match its driver).

    Needs torch (CUDA), CuPy, pytest, hypothesis, mpmath, array-api-compat and
    array-api-strict installed there; skips, saying why, without an NVIDIA GPU.
    """
    if (why := _gpu_missing()) is not None:
        session.skip(why)
    env = {"PYTHONPATH": os.getcwd(), "XDERIV_HYPOTHESIS_PROFILE": PROFILE}
    pytest = ["python", "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", *session.posargs]
    session.run(*pytest, env={**env, "XDERIV_BACKEND": "torch", "XDERIV_DEVICE": "cuda"}, external=True)
    session.run(*pytest, env={**env, "XDERIV_BACKEND": "cupy"}, external=True)


# --------------------------------------------------------------------------- the dependency floors


def _floors(*extras: str, skip: tuple[str, ...] = ("torch",)) -> list[str]:
    """``name==X`` for every ``name>=X`` in pyproject's dependencies and ``extras``: the floors, declared once.

    Requirements without a ``>=`` are left out, and so are the names in
    ``skip`` (torch: pinned by ``XDERIV_TORCH`` instead).
    """
    from packaging.requirements import Requirement

    project = nox.project.load_toml("pyproject.toml")["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    pins = []
    for req in map(Requirement, reqs):
        lows = [spec.version for spec in req.specifier if spec.operator == ">="]
        if lows and req.name not in skip:
            pins.append(f"{req.name}=={lows[0]}")
    return pins


_AT_FLOORS = """
import sys
from importlib.metadata import version
from packaging.version import Version
pins = [arg.split("==") for arg in sys.argv[1:]]
bad = [f"{name} {version(name)} (want {want})" for name, want in pins if Version(version(name)) != Version(want)]
print("at the floors:", *(f"{name}=={version(name)}" for name, _ in pins))
sys.exit("not at the floor: " + ", ".join(bad) if bad else 0)
"""


@nox.session(name="tests-oldest")
def tests_oldest(session: nox.Session) -> None:
    """numpy and torch with every declared ``>=`` floor installed exactly (pyproject is the one source).

    array-api-compat, numpy and the test tools sit at their floors; torch at
    ``XDERIV_TORCH`` (the only CPU build this project's machines carry; set
    e.g. ``XDERIV_TORCH=torch==2.1.0`` where that wheel exists to test the
    ``torch>=2.1`` floor).  The floors users meet (array-api-compat, NumPy,
    torch) are under test here, not the properties: the representative subset
    runs.  array-api-strict, a test tool that needs NumPy 2, runs at its newest
    in ``tests-strict``.

    The torch subset runs with every tensor built without ``device=`` on torch's ``meta``
    device (the device-cleanliness pass, once for both sessions: what it checks, where
    tensors are built, is the same code at the floors), then the ``torch.compile`` test that
    traces every activation's network whole, which that pass skips.
    """
    floors = _floors("test", "examples")
    constraints = os.path.join(session.create_tmp(), "floors.txt")
    with open(constraints, "w") as f:
        f.write("\n".join(floors) + "\n")
    _install(session, "-c", constraints, TORCH, "-e", ".[test,examples]", *PARALLEL)
    session.run("python", "-c", _AT_FLOORS, *floors)  # no resolver or constraint moved one
    _run_tests(session, "numpy", "--subset")
    # The examples' training runs are left out of the device-cleanliness pass: the torch session trains
    # each of them, and the GPU session runs them on a CUDA device.
    _run_tests(session, "torch", "--subset", "--ignore=tests/test_examples.py", XDERIV_TORCH_DEFAULT_DEVICE="meta")
    # torch.compile's tracing goes through array-api-compat's namespace, at its floor here: the Hessian and a
    # Taylor row of a network of every activation traced whole (every namespace function the chain engine
    # and the activations call); the other compile tests are the torch session's.
    _run_tests(session, "torch", "--subset", "-k", "traces_every_activation")


# --------------------------------------------------------------------------- lint, types, docs, packaging


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the whole tree; import-linter: the core's layers (no cycle) and no array library in the core."""
    _install(session, "ruff", "import-linter", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "xderiv", "tests", "benchmarks")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the package (torch typed; stubs missing for cupy, hessQuik, array-api-strict).

    Then mypy from outside the checkout, as in a user's project: the editable install must be
    visible to it (a path in a .pth file, not an import hook, which type checkers do not run).
    Finding the package is what is checked there (``--follow-imports=skip``: its types were
    checked just before).
    """
    session.install(TORCH)
    _install(session, "mypy", "-e", ".")
    session.run("mypy", "--ignore-missing-imports", "xderiv")
    with session.chdir(tempfile.mkdtemp(prefix="xderiv-user-")):
        session.run("mypy", "--follow-imports=skip", "-c", "import xderiv; xderiv.laplacian")


@nox.session
def docs(session: nox.Session) -> None:
    """The manual (Markdown pages through MyST) and the API reference, warnings as errors (docs/_build/html).

    Sphinx, furo and myst-parser come from the ``docs`` extra; ``docs/performance.md`` is generated
    by ``benchmarks/make_performance_page.py`` and committed, so this session needs no benchmark tools.
    """
    session.install(TORCH)  # autodoc imports xderiv.interop.torch
    _install(session, "-e", ".[docs]")
    session.run("python", "benchmarks/make_performance_page.py", "--check")  # the speed page is generated
    session.run("sphinx-build", "-q", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def build(session: nox.Session) -> None:
    """Wheel and sdist with ``python -m build``; the wheel installed in a fresh venv passes a smoke test.

    With ``uv`` on the PATH both the build's isolated environment and the fresh venv are made by it
    (the session 4–5 s instead of 22 s); without it, by ``venv`` and pip.
    """
    session.install("build")
    uv = shutil.which("uv")
    out = tempfile.mkdtemp(prefix="xderiv-dist-")
    installer = ["--installer=uv"] if uv else []
    with _source_tree_lock():
        session.run("python", "-m", "build", *installer, "--outdir", out, silent=True)
    wheels = glob.glob(os.path.join(out, "*.whl"))
    sdists = glob.glob(os.path.join(out, "*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {out}, found {wheels + sdists}")
    venv = os.path.join(out, "venv")
    py = os.path.join(venv, "bin", "python")
    if uv:
        session.run(uv, "venv", "-q", "--python", os.path.join(session.bin, "python"), venv, external=True)
        session.run(uv, "pip", "install", "-q", "--python", py, wheels[0], external=True)
    else:
        session.run("python", "-m", "venv", venv)
        session.run(py, "-m", "pip", "install", "-q", wheels[0], external=True)
    with session.chdir(out):  # not the source tree: import the installed wheel
        smoke = "import xderiv; print('xderiv', xderiv.__version__, 'from', xderiv.__file__)"
        session.run(py, "-c", smoke, external=True)
        session.run(py, "-m", "xderiv", "--quiet", external=True)


# --------------------------------------------------------------------------- benchmarks (not in the default list)


BENCH = ["pytest", "benchmarks/test_bench.py", "-q", "-p", "no:cacheprovider", "--benchmark-disable-gc"]


def _bench(session: nox.Session, families: list[str], *options: str) -> None:
    """Each family into benchmarks/results/<family>_float64.json, then the page; with arguments, one run to /tmp."""
    if session.posargs:
        js = os.path.join(session.create_tmp(), "bench.json")
        session.run(*BENCH, *options, f"--family={families[0]}", f"--benchmark-json={js}", *session.posargs)
        return
    for family in families:  # a failed check is listed on the page ("Not timed"): go on
        js = f"--benchmark-json=benchmarks/results/{family}_float64.json"
        session.run(*BENCH, *options, f"--family={family}", js, success_codes=[0, 1])
    session.run("python", "benchmarks/make_performance_page.py")


@nox.session
def bench(session: nox.Session) -> None:
    """xderiv against torch.func, autograd, hessQuik, jax and folx (pytest-benchmark; peers installed here only).

    ``nox -s bench`` reruns the families chain, second_order, training and overhead into benchmarks/results/ and
    regenerates the speed page; with arguments (``-- --quick``, ``-- --family second_order -k "d5"``) they go to
    pytest and the JSON to a temporary folder.
    """
    session.install(TORCH)
    session.install("-r", "benchmarks/requirements.txt", "-e", ".")
    _bench(session, ["chain", "second_order", "training", "overhead"])


GRAPH_PEERS = ["jet-for-pytorch", "folx", "jax", "jaxlib", "array-api-compat", "matplotlib", "pytest-benchmark"]


@nox.session(name="bench-graphs", python="3.12")
def bench_graphs(session: nox.Session) -> None:
    """The graphs family (networks that are not chains) against torch.func, autograd, jet-for-pytorch and folx.

    Python 3.12: jet-for-pytorch needs it (a ``python3.12`` on the PATH: with pyenv,
    ``PATH=~/.pyenv/versions/3.12.1/bin:$PATH``).  ``nox -s bench-graphs`` rewrites
    benchmarks/results/graphs_float64.json, each method's flops counted too, and the speed page; with arguments
    (``-- --quick``, ``-- -k "mMLP and d10"``) they go to pytest and the JSON to a temporary folder.
    """
    session.install(TORCH)
    session.install(*GRAPH_PEERS, "-e", ".")
    _bench(session, ["graphs"], "--flops")


# --------------------------------------------------------------------------- every session, side by side

# Sessions in the order the ``ci`` session starts them: longest first (their wall time on the project's
# 2-core CI machine, a few minutes each for the four slow backends), so that the lanes end together.
CI_SESSIONS = [
    "tests-jax",
    "tests-torch",
    "tests-oldest",
    "tests-dask",
    "tests-strict",
    "typecheck",
    "tests-numpy",
    "docs",
    "lint",
    "build",
    "tests-cupy",
    "tests-gpu",
]


@nox.session(venv_backend="none")
def ci(session: nox.Session) -> None:
    """Every other session, in lanes run side by side: what ``nox`` runs, and CI.

    One session alone leaves cores idle (installs, single-threaded tools, the tail of a test run), so
    ``ci`` runs ``XDERIV_CI_LANES`` sessions at a time (default 2), each a ``nox -s`` of its own
    taking the next session of :data:`CI_SESSIONS` when it is free, each test run on its share of the
    cores (``XDERIV_TEST_WORKERS``).  Every line a session prints comes through prefixed by its name;
    the end lists each session's result and wall time.  Fails if any session fails.
    """
    lanes = max(1, int(os.environ.get("XDERIV_CI_LANES", "2")))
    workers = max(1, (os.cpu_count() or 1) // lanes)
    env = {**os.environ, "XDERIV_TEST_WORKERS": os.environ.get("XDERIV_TEST_WORKERS", str(workers))}
    queue = list(CI_SESSIONS)
    results: dict[str, tuple[str, float]] = {}
    lock = threading.Lock()

    def lane() -> None:
        while True:
            with lock:
                if not queue:
                    return
                name = queue.pop(0)
            start = time.monotonic()
            cmd = [sys.executable, "-m", "nox", "--no-color", "-s", name]
            cmd += ["--", *session.posargs] if session.posargs else []
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            skipped = False
            for line in proc.stdout:
                skipped = skipped or line.startswith(f"nox > Session {name} skipped")
                with lock:
                    sys.stdout.write(f"{name:12.12s} | {line}")
                    sys.stdout.flush()
            code = proc.wait()
            results[name] = ("FAILED" if code else "skipped" if skipped else "passed", time.monotonic() - start)

    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"\n== sessions ({lanes} side by side, {workers} test worker(s) each; wall time, environment included) ==")
    for name in CI_SESSIONS:
        result, seconds = results[name]
        print(f"{name:16s} {result:8s} {seconds:6.0f} s")
    failed = [name for name in CI_SESSIONS if results[name][0] == "FAILED"]
    if failed:
        session.error(f"failed: {', '.join(failed)}")
