"""Test sessions, one per backend: ``nox`` runs those that can run here.

torch is pinned by the ``XDERIV_TORCH`` environment variable (default
``torch==2.13.0``, the CPU build this project's machines carry on disk); the
library itself only asks for ``torch>=2.1``.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = [
    "tests-numpy",
    "tests-torch",
    "tests-strict",
    "tests-jax",
    "tests-dask",
    "tests-cupy",
    "tests-interop",
    "lint",
    "typecheck",
    "docs",
    "build",
]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("XDERIV_TORCH", "torch==2.13.0")
PYTEST = ["pytest", "-q", "-ra"]


def _run_tests(session: nox.Session, backend: str, examples: int = 100) -> None:
    """Run the suite with the ``backend`` fixture; ``examples`` hypothesis cases per property."""
    env = {"XDERIV_BACKEND": backend, "XDERIV_HYPOTHESIS_EXAMPLES": str(examples)}
    session.run(*PYTEST, *session.posargs, env=env)


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The suite on NumPy (and the NumPy-only demo)."""
    session.install("-e", ".[test]")
    _run_tests(session, "numpy")
    session.run("python", "-m", "xderiv", "--quiet")


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The suite on PyTorch (CPU), plus torch.func, weight-gradient checks and the PINN examples."""
    session.install(TORCH)
    session.install("-e", ".[test,examples]")
    _run_tests(session, "torch")


@nox.session(name="tests-strict")
def tests_strict(session: nox.Session) -> None:
    """The suite on array-api-strict, extensions disabled, arrays on its device1."""
    session.install("-e", ".[test]")
    _run_tests(session, "strict")


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    """The suite on jax.numpy (float64 enabled), plus jax.jit / jax.grad through every operator."""
    session.install("jax", "jaxlib")
    session.install("-e", ".[test]")
    _run_tests(session, "jax", examples=25)  # jax dispatches eagerly op by op: slow per case


@nox.session(name="tests-dask")
def tests_dask(session: nox.Session) -> None:
    """The suite on dask.array (lazy, chunked along the batch), plus the LocalCluster example."""
    session.install("-e", ".[test,dask]")
    _run_tests(session, "dask", examples=25)


@nox.session(name="tests-cupy")
def tests_cupy(session: nox.Session) -> None:
    """The suite on CuPy; skips when this machine has no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        session.skip("no NVIDIA GPU here (nvidia-smi not found): CuPy would import but cannot allocate")
    session.install("cupy-cuda13x")
    session.install("-e", ".[test]")
    _run_tests(session, "cupy")


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side timings against torch.func, hessQuik, jax and folx (peers installed here only)."""
    session.install(TORCH)
    session.install("-r", "benchmarks/requirements.txt", "-e", ".")
    session.run("python", "benchmarks/run.py", *(session.posargs or ["--threads", "1"]))
    session.run("python", "benchmarks/operators.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "xderiv")


# --------------------------------------------------------------------------- docs, types, packaging, interop


@nox.session
def docs(session: nox.Session) -> None:
    """Sphinx site from the numpydoc docstrings, warnings as errors (output in docs/_build/html)."""
    session.install(TORCH)  # autodoc imports xderiv.interop.torch
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the package (torch typed; stubs missing for cupy, hessQuik, array-api-strict)."""
    session.install(TORCH)
    session.install("mypy", "-e", ".")
    session.run("mypy", "--ignore-missing-imports", "xderiv")


@nox.session
def build(session: nox.Session) -> None:
    """Wheel and sdist with ``python -m build``; the wheel installed in a fresh venv passes a smoke test."""
    import glob
    import tempfile

    session.install("build")
    out = tempfile.mkdtemp(prefix="xderiv-dist-")
    session.run("python", "-m", "build", "--outdir", out)
    wheels = glob.glob(os.path.join(out, "*.whl"))
    sdists = glob.glob(os.path.join(out, "*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {out}, found {wheels + sdists}")
    venv = os.path.join(out, "venv")
    session.run("python", "-m", "venv", venv)
    py = os.path.join(venv, "bin", "python")
    session.run(py, "-m", "pip", "install", "-q", wheels[0], external=True)
    with session.chdir(out):  # not the source tree: import the installed wheel
        smoke = "import xderiv; print('xderiv', xderiv.__version__, 'from', xderiv.__file__)"
        session.run(py, "-c", smoke, external=True)
        session.run(py, "-m", "xderiv", "--quiet", external=True)


@nox.session(name="tests-interop")
def tests_interop(session: nox.Session) -> None:
    """Converters (torch, hessQuik, OT-Flow, Keras) and save/load, on the torch backend."""
    session.install(TORCH)
    session.install("-e", ".[test,interop]")
    session.run(*PYTEST, *session.posargs, *sorted(glob_tests("test_interop_*.py")), env={"XDERIV_BACKEND": "torch"})


def glob_tests(pattern: str) -> list[str]:
    """Test files under tests/ matching ``pattern``."""
    import glob

    return glob.glob(os.path.join("tests", pattern))
