"""Test sessions, one per backend: ``nox`` runs those that can run here.

torch is pinned by the ``XDERIV_TORCH`` environment variable (default
``torch==2.13.0``, the CPU build this project's machines carry on disk); the
library itself only asks for ``torch>=2.1``.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests-numpy", "tests-torch", "tests-strict", "tests-cupy", "lint"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("XDERIV_TORCH", "torch==2.13.0")
PYTEST = ["pytest", "-q", "-ra"]


def _run_tests(session: nox.Session, backend: str) -> None:
    session.run(*PYTEST, *session.posargs, env={"XDERIV_BACKEND": backend})


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The suite on NumPy (and the NumPy-only demo)."""
    session.install("-e", ".[test]")
    _run_tests(session, "numpy")
    session.run("python", "-m", "xderiv", "--quiet")


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The suite on PyTorch (CPU), plus torch.func and weight-gradient checks."""
    session.install(TORCH)
    session.install("-e", ".[test]")
    _run_tests(session, "torch")


@nox.session(name="tests-strict")
def tests_strict(session: nox.Session) -> None:
    """The suite on array-api-strict, extensions disabled, arrays on its device1."""
    session.install("-e", ".[test]")
    _run_tests(session, "strict")


@nox.session(name="tests-cupy")
def tests_cupy(session: nox.Session) -> None:
    """The suite on CuPy; skips when this machine has no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        session.skip("no NVIDIA GPU here (nvidia-smi not found): CuPy would import but cannot allocate")
    session.install("cupy-cuda13x")
    session.install("-e", ".[test]")
    _run_tests(session, "cupy")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "xderiv")
