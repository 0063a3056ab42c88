"""Reduced-size runs of the examples: they still train and report progress; ``--help`` shows the defaults."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import xderiv as xd

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _torch_cpu_session(backend):
    """The PINN examples train with the torch backend, drawing points with CPU torch.Generators."""
    if backend.name != "torch":
        pytest.skip("the PINN examples train with the torch backend")
    if not backend.on_cpu:
        pytest.skip(f"the PINN examples draw their points with CPU torch.Generators: CPU only, not {backend.device}")


@pytest.mark.parametrize("name", ["poisson", "heat", "wave", "black_scholes"])
def test_example_trains_and_plots(backend, name, tmp_path, capsys):
    _torch_cpu_session(backend)
    pytest.importorskip("matplotlib")
    example = _load(name)
    with backend.default_device():  # the examples build their tensors on torch's default device
        _, untrained, err0 = example.solve(adam_steps=0, lbfgs_iters=0, points=64)
        assert untrained == [] and err0 > 0.3  # a random network is far from the solution
        out = tmp_path / f"{name}.png"
        args = ["--adam", "40", "--lbfgs", "40", "--points", "64", "--log-every", "20", "--out", str(out)]
        err = example.main(args)
    printed = capsys.readouterr().out
    assert "relative L2 error" in printed
    # progress while it trains: step, loss and elapsed time every 20 steps of each phase
    assert re.search(r"^adam +20/40 +loss \d\.\d{3}e[+-]\d\d +\d+\.\d s$", printed, re.M), printed
    assert re.search(r"^adam +40/40 ", printed, re.M), printed
    assert re.search(r"^l-bfgs +20/40 \(\d+ evaluations\) +loss ", printed, re.M), printed
    assert "l-bfgs stopped after" in printed
    assert out.stat().st_size > 10_000  # a real PNG with two panels
    assert err < 0.5 * err0


def test_second_order_examples_solve_their_equations(backend):
    """``wave.py``, ``black_scholes.py``: the exact solutions make ``xd.second_order`` vanish; the operators match
    torch.func Hessians contracted with A (indefinite for the wave, σ(x)σ(x)ᵀ/2 per point for Black–Scholes)."""
    _torch_cpu_session(backend)
    import torch
    from torch.func import hessian, jacrev, vmap

    wave, bs = _load("wave"), _load("black_scholes")
    with backend.default_device():
        gen = torch.Generator().manual_seed(0)
        xt, _, _ = wave.sample(16, gen)
        for c in (1.0, 2.0):
            residual = xd.second_order(xd.function(lambda p, c=c: wave.exact(p, c)), xt, A=wave.wave_operator(c))
            assert residual.abs().max() < 1e-12 * c**2 * np.pi**2
        net = xd.mlp([2, 8, 8, 1], activation="tanh", xp=torch, seed=1)
        h = vmap(hessian(lambda p: net(p[None])[0, 0]))(xt)
        want = h[:, 1, 1] - 4.0 * h[:, 0, 0]  # u_tt - 4 u_xx
        got = xd.second_order(net, xt, A=wave.wave_operator(2.0))[:, 0]
        assert (got - want).abs().max() < 1e-12 * want.abs().max()

        xt, final, boundary = bs.sample(16, gen)
        on_face = (boundary[:, :-1] == bs.LOW) | (boundary[:, :-1] == bs.HIGH)
        assert (final[:, -1] == bs.T).all() and on_face.any(dim=1).all()
        assert bs.operator(xd.function(bs.exact), xt).abs().max() < 1e-13 * bs.exact(xt).abs().max()
        net = xd.mlp([bs.D + 1, 8, 8, 1], activation="tanh", xp=torch, seed=1)

        def lhs(p):  # V_t + tr(A H) + r x . grad V - r V, A = sigma sigma^T / 2
            f = lambda q: net(q[None])[0, 0]  # noqa: E731
            s = bs.sigma(p)
            return (0.5 * (s @ s.T) * hessian(f)(p)).sum() + jacrev(f)(p) @ bs.drift(p) - bs.R * f(p)

        want = vmap(lhs)(xt)
        got = bs.operator(net, xt)[:, 0]
        assert (got - want).abs().max() < 1e-12 * want.abs().max()


def test_hard_constraint_poisson_keeps_the_boundary_exact_and_trains(backend, tmp_path, capsys):
    """``poisson.py --hard-bc``: u = g + (1 - |x|^2) N equals g on the sphere whatever N, and training helps."""
    _torch_cpu_session(backend)
    pytest.importorskip("matplotlib")
    import torch

    example = _load("poisson")
    with backend.default_device():
        u, _, err0 = example.solve_hard_bc(d=4, adam_steps=0, lbfgs_iters=0, points=64)
        sphere = torch.nn.functional.normalize(torch.randn(32, 4, dtype=torch.float64, device=backend.device), dim=1)
        g = u.parts[0]
        assert (u(sphere) - g(sphere)).abs().max().item() < 1e-14
        _, history, err = example.solve_hard_bc(d=4, adam_steps=60, lbfgs_iters=60, points=64)
        out = tmp_path / "hard.png"
        example.main(
            ["--hard-bc", "--adam", "5", "--lbfgs", "0", "--points", "32", "--log-every", "0", "--out", str(out)]
        )
    assert err < 0.2 * err0 and history[-1] < history[0]
    assert "hard BC, unit ball" in capsys.readouterr().out and out.stat().st_size > 10_000


def test_biharmonic_plate_is_clamped_exactly_and_trains(backend, tmp_path, capsys):
    """``biharmonic.py``: u = B (s N) and its gradient vanish on the edges whatever N; f = Δ²u*; training helps."""
    _torch_cpu_session(backend)
    pytest.importorskip("matplotlib")
    import torch

    example = _load("biharmonic")
    with backend.default_device():
        u, _, err0 = example.solve(adam_steps=0, lbfgs_iters=0)
        assert err0 > 0.3
        rng = np.random.default_rng(3)
        t, zero, one = rng.uniform(size=16), np.zeros(16), np.ones(16)
        edges = backend.asarray(
            np.concatenate([np.stack(p, axis=1) for p in ((t, zero), (t, one), (zero, t), (one, t))])
        )
        assert float(torch.max(torch.abs(u(edges)))) < 1e-15
        assert float(torch.max(torch.abs(xd.jacobian(u, edges)))) < 1e-14  # clamped: u = du/dn = 0
        # the right-hand side is the exact solution's biharmonic (checked against nested torch.func Hessians)
        x = backend.asarray(rng.uniform(size=(5, 2)))

        def bilaplacian(p):
            lap = lambda f: lambda q: torch.trace(torch.func.hessian(f)(q))  # noqa: E731
            return lap(lap(lambda q: example.exact(q[None])[0]))(p)

        want = torch.func.vmap(bilaplacian)(x)
        assert float(torch.max(torch.abs(example.source(x) - want))) < 1e-11 * float(torch.max(torch.abs(want)))
        out = tmp_path / "biharmonic.png"
        err = example.main(["--adam", "60", "--lbfgs", "20", "--points", "64", "--log-every", "20", "--out", str(out)])
    printed = capsys.readouterr().out
    assert re.search(r"^adam +60/60 +loss ", printed, re.M), printed
    assert "relative L2 error" in printed and out.stat().st_size > 10_000
    assert err < 0.5 * err0


def test_high_dim_exact_solution_and_baselines(backend):
    """The closed-form Δu* against torch.func; the torch.func baselines against xderiv at small d."""
    _torch_cpu_session(backend)
    import torch
    from torch.func import hessian, vmap

    example = _load("high_dim")
    d = 7
    with backend.default_device():
        c = example.coefficients(d, 3, torch.float64)
        x = example.ball(6, d, torch.Generator().manual_seed(0), torch.float64)
        h = vmap(hessian(lambda p: example.exact_solution(p, c)))(x)
        lap = example.exact_laplacian(x, c)
        assert (lap - h.diagonal(dim1=-2, dim2=-1).sum(-1)).abs().max() <= 1e-13 * lap.abs().max()
        on_sphere = x / x.norm(dim=-1, keepdim=True)
        assert example.exact_solution(on_sphere, c).abs().max() < 1e-14
        u, params = example.build(d, (8, 8), 0, torch.float64)
        want = xd.laplacian(u, x)[:, 0]
        assert (example.torch_func_laplacian(params, "exact", d)(x, 0) - want).abs().max() < 1e-12 * want.abs().max()
        for estimator in ("sdgd", "stde"):  # all d coordinates: exact
            got = example.torch_func_laplacian(params, estimator, d)(x, 0)
            assert (got - want).abs().max() < 1e-12 * want.abs().max()
            assert (example.xderiv_laplacian(u, estimator, d)(x, 0) - want).abs().max() < 1e-12 * want.abs().max()


def test_high_dim_example_trains_and_compares(backend, tmp_path, capsys):
    _torch_cpu_session(backend)
    pytest.importorskip("matplotlib")
    example = _load("high_dim")
    args = ["--d", "40", "--steps", "60", "--points", "32", "--samples", "4", "--hidden", "16,16", "--lr", "1e-2"]
    with backend.default_device():
        results = example.main(
            [*args, "--equation", "all", "--log-every", "20", "--eval-every", "20", "--out", str(tmp_path)]
        )
    printed = capsys.readouterr().out
    assert [r["equation"] for r in results] == ["poisson", "allen-cahn", "sine-gordon"]
    for r in results:
        first, last = r["errors"][0][1], r["errors"][-1][1]
        assert last < 0.5 * first, r["errors"]  # it trains: the held-out error falls
        assert r["peak_mb"] > 0 and r["seconds"] > 0
        assert (tmp_path / f"high_dim_{r['equation']}_d40.png").stat().st_size > 10_000
    assert re.search(r"^adam +20/60  rel-L2 \d\.\d\de[+-]\d\d  loss \d\.\d{3}e[+-]\d\d +\d+\.\d s$", printed, re.M), (
        printed
    )
    assert "relative L2 error" in printed and "peak memory" in printed and "error curve" in printed
    with backend.default_device():
        rows = example.main([*args, "--compare", "--repeats", "1"])
    printed = capsys.readouterr().out
    methods = {r["method"] for r in rows}
    assert {"xderiv:sdgd", "xderiv:exact", "torch.func:stde", "torch.func:hutchinson"} <= methods
    assert all(r["ms"] > 0 for r in rows) and "time per training step" in printed


def _full_pass_only(request):
    """Training runs once per session: the representative subset (meta device, floors) leaves it out."""
    if request.config.getoption("--subset"):
        pytest.skip("trains a network: the full torch pass runs it")


def test_modified_mlp_and_piratenet_solve_helmholtz(backend, tmp_path, capsys, request):
    """``modified_mlp.py``: torch modules through ``xd.function(graph_function(...))``; exact Laplacians; both train."""
    _torch_cpu_session(backend)
    _full_pass_only(request)
    pytest.importorskip("matplotlib")
    import torch
    from torch.func import hessian, vmap

    example = _load("modified_mlp")
    with backend.default_device():
        gen = torch.Generator().manual_seed(0)
        x = 2.0 * torch.rand(6, 2, dtype=torch.float64, generator=gen, device=backend.device) - 1.0
        for kind in ("modified", "pirate"):
            u, params = example.build(kind, width=8, depth=2)
            with torch.no_grad():  # the PirateNet's alphas start at 0: open its residual blocks
                for p in params:
                    if p.ndim == 0:
                        p.fill_(0.7)
            want = vmap(hessian(lambda q, u=u: u(q[None])[0, 0]))(x).diagonal(dim1=-2, dim2=-1).sum(-1)
            got = xd.laplacian(u, x)[:, 0]
            assert (got - want).abs().max() < 1e-12 * want.abs().max(), kind
            assert all(p.grad is None for p in params)
            xd.laplacian(u, x).sum().backward()  # gradients reach the module's Parameters
            assert all(p.grad is not None for p in params), kind
        # the exact solution satisfies the equation (closed-form q against torch.func)
        lap = vmap(hessian(lambda q: example.exact(q)))(x).diagonal(dim1=-2, dim2=-1).sum(-1)
        assert (lap + example.exact(x) - example.source(x)).abs().max() < 1e-12
        edges = backend.asarray(np.array([[1.0, 0.3], [-1.0, -0.2], [0.4, 1.0], [-0.8, -1.0]]))
        assert u(edges).abs().max() == 0  # u = phi N vanishes on the boundary whatever N
        out = tmp_path / "modified_mlp.png"
        results = example.main(["--quick", "--nets", "modified,pirate", "--log-every", "50", "--out", str(out)])
    printed = capsys.readouterr().out
    assert re.search(r"^adam +50/150  rel-L2 \d\.\d\de[+-]\d\d  loss ", printed, re.M), printed
    assert printed.count("relative L2 error") == 2 and out.stat().st_size > 10_000
    for r in results:
        assert r["error"] < 0.5 * r["errors"][0][1], (r["kind"], r["errors"])  # it trains


def test_wavefunction_local_energy_is_exact_and_vmc_trains(backend, tmp_path, capsys, request):
    """``wavefunction.py``: E_L from slogdet through ``xd.derivatives`` is E0 at every point of the exact state."""
    _torch_cpu_session(backend)
    _full_pass_only(request)
    pytest.importorskip("matplotlib")
    import torch

    example = _load("wavefunction")
    with backend.default_device():
        gen = torch.Generator().manual_seed(0)
        for n in (2, 3):
            x = torch.randn(64, n, dtype=torch.float64, generator=gen, device=backend.device)
            e_local = example.local_energy(example.exact_log_abs_psi, x)
            d = xd.derivatives(xd.function(example.exact_log_abs_psi), x, laplacian=True)
            # near a node both terms of E_L grow like 1/(x_i - x_j)^2 and cancel: compare at their scale
            size = d.laplacian.abs() + (d.jacobian.reshape(x.shape) ** 2).sum(-1) + (x * x).sum(-1)
            assert ((e_local - example.exact_energy(n)).abs() / size).max() < 1e-12, (n, e_local)
        # the trained ansatz's local energy against torch.autograd Hessians of log|psi|
        ansatz = example.Ansatz(particles=3, width=8, seed=1)
        x = torch.randn(4, 3, dtype=torch.float64, generator=gen, device=backend.device)
        want = []
        for p in x:
            g = torch.autograd.functional.jacobian(lambda q: ansatz.log_abs_psi(q[None])[0], p)
            h = torch.autograd.functional.hessian(lambda q: ansatz.log_abs_psi(q[None])[0], p)
            want.append(-0.5 * (torch.trace(h) + g @ g) + 0.5 * p @ p)
        got = example.local_energy(ansatz.log_abs_psi, x)
        assert (got - torch.stack(want)).abs().max() < 1e-10 * torch.stack(want).abs().max()
        out = tmp_path / "wavefunction.png"
        r = example.main(["--quick", "--log-every", "20", "--out", str(out)])
    printed = capsys.readouterr().out
    assert re.search(r"^vmc 20/60  E \d\.\d{4} \(exact 2\)  var\(E_L\) ", printed, re.M), printed
    assert "infidelity" in printed and out.stat().st_size > 10_000
    assert abs(r["final_energy"] - 2.0) < 0.05 and r["final_energy"] < r["energy"][0]
    assert r["final_variance"] < 0.3 * r["variance"][0] and r["infidelity"] < 1e-2  # zero-variance: it trains


def test_dask_example_matches_numpy(backend, capsys):
    if backend.name != "dask":
        pytest.skip("the dask example runs in the dask session")
    pytest.importorskip("dask.distributed")
    example = _load("dask_laplacian")
    out = example.main(["--points", "20000", "--chunk", "5000", "--workers", "1", "--log-every", "2"])
    assert out["max_rel_diff"] < 1e-14 and out["dask_points_per_s"] > 0
    printed = capsys.readouterr().out
    assert re.search(r"^dask +2/4 chunks +\d+\.\d s$", printed, re.M), printed
    assert re.search(r"^dask +4/4 chunks ", printed, re.M), printed


@pytest.mark.parametrize(
    "name, needs",
    [
        ("poisson", "torch"),
        ("heat", "torch"),
        ("wave", "torch"),
        ("black_scholes", "torch"),
        ("biharmonic", "torch"),
        ("high_dim", "torch"),
        ("modified_mlp", "torch"),
        ("wavefunction", "torch"),
        ("ddp_poisson", "torch"),
        ("dask_laplacian", "dask.distributed"),
    ],
)
def test_help_shows_every_default(name, needs, capsys):
    """``python examples/<name>.py --help`` names the default of every option."""
    pytest.importorskip(needs)
    example = _load(name)
    with pytest.raises(SystemExit) as exit_:
        example.main(["--help"])
    assert exit_.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    options = [a for a in example.parser()._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        assert f"(default: {action.default})" in printed, f"{name} --help does not show the default of {action.dest}"
