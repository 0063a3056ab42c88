"""Sessions: the suite once per backend, the dependency floors, lint, types, docs, packaging, benchmarks.

``nox`` runs the default list below (what CI runs: 18 min 44 s on a fresh clone on 2 cores,
load 2-3: README.md); ``nox -s tests-numpy
tests-torch`` is the fast subset (timings: CONTRIBUTING.md).  Every
test session runs the same ``tests/`` through one ``backend`` fixture chosen by
``XDERIV_BACKEND``, in parallel on every core (pytest-xdist).

- Hypothesis: profile ``XDERIV_HYPOTHESIS_PROFILE`` (default ``ci``: 25
  derandomized examples per property; ``dev`` 100, ``thorough`` 1000).
- JAX and dask run a representative subset (every test, operator and mode on
  two zoo networks); ``nox -s tests-jax -- --full`` runs everything.
- torch is pinned by ``XDERIV_TORCH`` (default ``torch==2.13.0``, the CPU
  build this project's machines carry on disk); the library itself only asks
  for ``torch>=2.1``.
- With ``uv`` installed (``pip install nox uv``) nox builds the environments
  with it, several times faster than pip.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import nox

nox.options.sessions = [
    "lint",
    "tests-numpy",
    "tests-torch",
    "tests-strict",
    "tests-jax",
    "tests-dask",
    "tests-oldest",
    "tests-cupy",
    "tests-gpu",
    "typecheck",
    "docs",
    "build",
]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"  # uv when installed, else pip

# uv reads no pip configuration: hand it pip's local wheel folders (comma-separated for uv) so that
# torch==2.13.0 resolves to the local CPU wheel instead of the index's CUDA build.
if os.environ.get("PIP_FIND_LINKS") and "UV_FIND_LINKS" not in os.environ:
    os.environ["UV_FIND_LINKS"] = ",".join(os.environ["PIP_FIND_LINKS"].split())

TORCH = os.environ.get("XDERIV_TORCH", "torch==2.13.0")
PROFILE = os.environ.get("XDERIV_HYPOTHESIS_PROFILE", "ci")
PARALLEL = ["pytest-xdist"]


def _run_tests(session: nox.Session, backend: str, *args: str, parallel: bool = True, **env: str) -> None:
    """The suite on ``backend`` (``XDERIV_BACKEND``), on every core, with the session's hypothesis profile."""
    env = {"XDERIV_BACKEND": backend, "XDERIV_HYPOTHESIS_PROFILE": PROFILE, **env}
    workers = ["-n", "auto"] if parallel else []
    session.run("pytest", "-q", "-ra", *workers, *args, *session.posargs, env=env)


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The suite on NumPy, then the demo."""
    session.install("-e", ".[test]", *PARALLEL)
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
    session.install("-e", ".[test,examples,interop]", *PARALLEL)
    _run_tests(session, "torch")


@nox.session(name="tests-strict")
def tests_strict(session: nox.Session) -> None:
    """The suite on array-api-strict, extensions disabled, arrays on its device1: the core uses only the standard."""
    session.install("-e", ".[test]", *PARALLEL)
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
    session.install("-e", ".[test]", *PARALLEL)
    flags = _xla_flags(session)
    session.log(f"XLA_FLAGS={flags}")
    _run_tests(session, "jax", XLA_FLAGS=flags)


@nox.session(name="tests-dask")
def tests_dask(session: nox.Session) -> None:
    """dask.array (lazy, chunked along the batch) and the LocalCluster example; a representative subset."""
    session.install("-e", ".[test,dask]", *PARALLEL)
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
    session.install("-e", ".[test]", *PARALLEL)
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

# Lowest NumPy that array-api-strict runs on: every array-api-strict release calls
# np.asarray(..., copy=True), a NumPy 2 keyword (its to_device fails on NumPy 1.26).
STRICT_NUMPY = "numpy==2.0.0"


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
    """numpy, torch and strict with every declared ``>=`` floor installed exactly (pyproject is the one source).

    array-api-compat, numpy and the test tools sit at their floors; torch at
    ``XDERIV_TORCH`` (the only CPU build this project's machines carry; set
    e.g. ``XDERIV_TORCH=torch==2.1.0`` where that wheel exists to test the
    ``torch>=2.1`` floor).  The strict suite then runs at the array-api-strict
    floor on the lowest NumPy it supports (``STRICT_NUMPY``).  The floors are
    under test here, not the properties: the representative subset runs.

    The torch subset runs with every tensor built without ``device=`` on torch's ``meta``
    device (the device-cleanliness pass, once for both sessions: what it checks, where
    tensors are built, is the same code at the floors), then its ``torch.compile`` tests,
    which that pass skips, on their own.
    """
    floors = _floors("test", "examples")
    constraints = os.path.join(session.create_tmp(), "floors.txt")
    with open(constraints, "w") as f:
        f.write("\n".join(floors) + "\n")
    session.install("-c", constraints, TORCH, "-e", ".[test,examples]", *PARALLEL)
    session.run("python", "-c", _AT_FLOORS, *floors)  # no resolver or constraint moved one
    _run_tests(session, "numpy", "--subset")
    # torch.compile's tracing goes through array-api-compat's namespace, at its floor here; the tests
    # hand the traced graphs to aot_eager: inductor's code generation is the same torch as the torch
    # session's, which compiles every case (about 80 s saved, cold).
    _run_tests(session, "torch", "--subset", XDERIV_TORCH_DEFAULT_DEVICE="meta")
    _run_tests(session, "torch", "--subset", "-k", "compile", XDERIV_TEST_COMPILE_BACKEND="aot_eager")
    session.install(STRICT_NUMPY)  # nothing else moves: every other floor already allows NumPy 2.0 (checked next)
    session.run("python", "-c", _AT_FLOORS, *[p for p in floors if not p.startswith("numpy==")], STRICT_NUMPY)
    _run_tests(session, "strict", "--subset")


# --------------------------------------------------------------------------- lint, types, docs, packaging


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the whole tree; import-linter: the core's layers (no cycle) and no array library in the core."""
    session.install("ruff", "import-linter", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "xderiv", "tests", "benchmarks")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the package (torch typed; stubs missing for cupy, hessQuik, array-api-strict).

    Then mypy from outside the checkout, as in a user's project: the editable install must be
    visible to it (a path in a .pth file, not an import hook, which type checkers do not run).
    """
    session.install(TORCH)
    session.install("mypy", "-e", ".")
    session.run("mypy", "--ignore-missing-imports", "xderiv")
    with session.chdir(tempfile.mkdtemp(prefix="xderiv-user-")):
        session.run("mypy", "-c", "import xderiv; xderiv.laplacian")


@nox.session
def docs(session: nox.Session) -> None:
    """The manual (Markdown pages through MyST) and the API reference, warnings as errors (docs/_build/html).

    Sphinx, furo and myst-parser come from the ``docs`` extra; ``docs/performance.md`` is generated
    by ``benchmarks/make_performance_page.py`` and committed, so this session needs no benchmark tools.
    """
    session.install(TORCH)  # autodoc imports xderiv.interop.torch
    session.install("-e", ".[docs]")
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
