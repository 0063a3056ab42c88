"""Training on several processes or devices: the sharded loss has the weight gradient of one process on all points.

xderiv's operators are ordinary differentiable torch and JAX computations, so the
engines that split a batch across processes or devices take them as they are:

- torch: ``examples/ddp_poisson.py`` run by torchrun on 2 processes (gloo, localhost,
  a free port picked by ``--standalone``); DistributedDataParallel averages the two
  slices' gradients, which must equal one process's gradient on the union of the
  slices.  The run also trains briefly and reports, so the example is exercised here
  (once per torch session: the full pass runs it, the ``--subset`` passes leave it out).
- JAX: two host devices (``--xla_force_host_platform_device_count=2``, which must be
  set before jax is imported: a subprocess), the points split across them by a
  ``NamedSharding`` under ``jax.jit`` and by ``shard_map``; each gradient must equal
  the unsharded one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xderiv as xd

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ddp_poisson.py"
TOLERANCE = 1e-12  # float64: the sharded and the single-process sums differ by round-off only
TIMEOUT = 180  # seconds, a hung collective fails the test instead of the session


def _env(**extra: str) -> dict[str, str]:
    """This environment, with the xderiv under test (not another installed copy) first on the path."""
    source = str(Path(xd.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _run(args: list[str], cwd: Path, **env: str) -> str:
    """Run ``args``; return its stdout, failing with the tail of its output if it exits non-zero."""
    done = subprocess.run(args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{args[:4]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _max_rel_diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """max |got - want| / max |want| over every weight of the network together."""
    a = np.concatenate([np.ravel(g) for g in got])
    b = np.concatenate([np.ravel(w) for w in want])
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _load_example():
    spec = importlib.util.spec_from_file_location("example_ddp_poisson", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_ddp_on_two_processes_gives_the_one_process_gradient(backend, tmp_path, request):
    if backend.name != "torch":
        pytest.skip("torch DistributedDataParallel: the torch session runs it")
    if request.config.getoption("--subset"):
        pytest.skip("launches the DDP example: the full torch pass runs it")
    if not backend.on_cpu:
        pytest.skip(f"2 processes on gloo with CPU tensors; the session is on {backend.device}")
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    d, width, depth, points, steps = 3, 16, 2, 128, 40
    grads = tmp_path / "grads.pt"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    options = ["--dim", str(d), "--width", str(width), "--depth", str(depth), "--points", str(points)]
    options += ["--steps", str(steps), "--log-every", "20", "--backend", "gloo", "--grad-out", str(grads)]
    printed = _run([*launch, str(EXAMPLE), *options], tmp_path, OMP_NUM_THREADS="1")

    assert "2 processes (gloo, cpu), 64 interior and boundary points each per step" in printed, printed
    assert re.search(rf"^adam {steps}/{steps}  loss \d\.\d{{3}}e[+-]\d\d ", printed, re.M), printed
    error = re.search(r"on 2 processes: .* relative L2 error (\S+) on 4096 held-out points", printed)
    assert error, printed

    example = _load_example()
    saved = torch.load(grads, map_location=backend.device)
    x, xb = example.batch(points, d, 0, 0, backend.device)  # the first global batch, in one process
    for part, whole in ((saved["x"], x), (saved["xb"], xb)):
        assert [len(s) for s in part] == [points // 2] * 2  # each rank its own slice ...
        assert torch.equal(torch.unique(torch.cat(part), dim=0), torch.unique(whole, dim=0))  # ... together the batch
    model = example.build(d, width, depth, seed=0, device=backend.device)
    model(x, xb).backward()
    want = [backend.to_numpy(p.grad) for p in model.parameters()]
    diff = _max_rel_diff([backend.to_numpy(g) for g in saved["grads"]], want)
    print(f"torch DDP, 2 processes: max relative gradient difference {diff:.1e}")
    assert diff < TOLERANCE

    with torch.no_grad():  # the untrained network's error: the short run trained
        test = torch.rand(
            4096, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64, device=backend.device
        )
        want_u = example.exact(test)
        untrained = float(torch.linalg.norm(model.u(test)[:, 0] - want_u) / torch.linalg.norm(want_u))
    assert float(error[1]) < 0.8 * untrained, (error[1], untrained)


JAX_CHECK = r"""
import json
import math

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import xderiv as xd

try:
    from jax import shard_map
except ImportError:  # older JAX
    from jax.experimental.shard_map import shard_map

assert len(jax.devices()) == 2, jax.devices()
mesh = jax.make_mesh((2,), ("points",))
d, n = 3, 64
net = xd.mlp([d, 16, 16, 1], activation="tanh", xp=jnp, seed=0)
rng = np.random.default_rng(0)
x = jnp.asarray(rng.uniform(size=(n, d)))
xb = rng.uniform(size=(n, d))
xb[np.arange(n), rng.integers(0, d, n)] = rng.integers(0, 2, n)  # one coordinate on a face
xb = jnp.asarray(xb)


def exact(x):
    return jnp.mean(jnp.sin(math.pi * x), axis=-1)


def loss(ws, x, xb):  # -Δu = π² u* in the cube, u = u* on its faces
    u = net.with_arrays(ws)
    residual = xd.laplacian(u, x)[:, 0] + math.pi**2 * exact(x)
    return jnp.mean(residual**2) + 10.0 * jnp.mean((u(xb)[:, 0] - exact(xb)) ** 2)


ws = net.arrays()
grad = jax.jit(jax.grad(loss))
want = grad(ws, x, xb)  # one device, every point

rows = NamedSharding(mesh, P("points", None))
ws2 = jax.device_put(ws, NamedSharding(mesh, P()))
x2, xb2 = jax.device_put(x, rows), jax.device_put(xb, rows)
lap = jax.jit(lambda ws, x: xd.laplacian(net.with_arrays(ws), x))(ws2, x2)
shards = sorted(tuple(s.data.shape) for s in lap.addressable_shards)
by_jit = grad(ws2, x2, xb2)  # the compiler splits the work by the inputs' sharding

per_device = shard_map(
    lambda ws, x, xb: jax.lax.pmean(loss(ws, x, xb), "points"),
    mesh=mesh,
    in_specs=(P(), P("points", None), P("points", None)),
    out_specs=P(),
)
by_shard_map = jax.jit(jax.grad(per_device))(ws2, x2, xb2)  # each device its slice, the loss averaged


def rel(got):
    a = np.concatenate([np.ravel(np.asarray(g)) for g in got])
    b = np.concatenate([np.ravel(np.asarray(w)) for w in want])
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


print(json.dumps({"shards": shards, "jit": rel(by_jit), "shard_map": rel(by_shard_map)}))
"""


def test_jax_sharding_over_two_devices_gives_the_one_device_gradient(backend, tmp_path):
    if backend.name != "jax":
        pytest.skip("JAX sharding: the jax session runs it")
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    printed = _run([sys.executable, "-c", JAX_CHECK], tmp_path, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    result = json.loads(printed.strip().splitlines()[-1])
    print(
        f"JAX on 2 host devices: max relative gradient difference {result['jit']:.1e} (NamedSharding + jit), "
        f"{result['shard_map']:.1e} (shard_map)"
    )
    assert result["shards"] == [[32, 1], [32, 1]]  # the Laplacian was computed half on each device
    assert result["jit"] < TOLERANCE and result["shard_map"] < TOLERANCE
