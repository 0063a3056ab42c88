"""Reduced-size runs of the PINN examples: they still train (torch session)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["poisson", "heat"])
def test_example_trains_and_plots(backend, name, tmp_path, capsys):
    if backend.name != "torch":
        pytest.skip("the PINN examples train with the torch backend")
    if not backend.on_cpu:
        pytest.skip(f"the PINN examples draw their points with CPU torch.Generators: CPU only, not {backend.device}")
    pytest.importorskip("matplotlib")
    example = _load(name)
    with backend.default_device():  # the examples build their tensors on torch's default device
        _, untrained, err0 = example.solve(adam_steps=0, lbfgs_iters=0, points=64)
        assert untrained == [] and err0 > 0.3  # a random network is far from the solution
        out = tmp_path / f"{name}.png"
        err = example.main(["--adam", "40", "--lbfgs", "40", "--points", "64", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "relative L2 error" in printed
    assert out.stat().st_size > 10_000  # a real PNG with two panels
    assert err < 0.5 * err0


def test_dask_example_matches_numpy(backend):
    if backend.name != "dask":
        pytest.skip("the dask example runs in the dask session")
    pytest.importorskip("dask.distributed")
    example = _load("dask_laplacian")
    out = example.main(["--points", "20000", "--chunk", "5000", "--workers", "1"])
    assert out["max_rel_diff"] < 1e-14 and out["dask_points_per_s"] > 0
