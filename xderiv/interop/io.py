"""Save a network (architecture and weights) to one ``.npz`` file; load it into any backend.

>>> import tempfile, os, numpy as np, xderiv as xd
>>> from xderiv.interop import io
>>> net = xd.resnet(in_features=3, width=8, depth=2, seed=0)
>>> path = os.path.join(tempfile.mkdtemp(), "net.npz")
>>> io.save(net, path)
>>> same = io.load(path)                       # NumPy; io.load(path, xp=torch, device="cuda") works too
>>> x = np.ones((4, 3))
>>> bool(np.allclose(xd.laplacian(same, x), xd.laplacian(net, x)))
True

File layout: one array per weight, named as in
:func:`xderiv.interop._structure.array_names` (``layers.0.weight``, ...,
``w``, ``b``, ``A``, ``c``), plus ``__xderiv__``, a JSON string holding the
format version, the xderiv version and the architecture (layer types,
activation names, residual steps).  Nothing is pickled: the file loads with
``numpy.load(path, allow_pickle=False)``.  Parametric activations are stored
by their canonical names (``"softplus(beta=2.0)"``, ``"sin(freq=30.0)"``, ...)
and load as the same objects.  A network using an activation registered with
:func:`xderiv.register_activation` loads only after the same name is
registered again.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ._structure import array_names, flatten, resolve_target, to_numpy, unflatten

FORMAT = 1
"""Version of the file layout written by :func:`save`."""

_META = "__xderiv__"


def save(net: Any, path: str | os.PathLike[str]) -> None:
    """Write ``net`` (a Sequential, Potential or layer) to ``path`` as an uncompressed ``.npz``.

    Parameters
    ----------
    net : Sequential or Potential or Dense
        The network; its arrays may live in any namespace or device (they are
        copied to host memory, detached from any autograd graph).
    path : str or path-like
        Destination; NumPy appends ``.npz`` when the name has no such suffix.
    """
    from .. import __version__

    spec, arrays = flatten(net)
    spec = {"format": FORMAT, "xderiv": __version__, **spec}
    names = array_names(spec)
    payload = {name: np.ascontiguousarray(to_numpy(a)) for name, a in zip(names, arrays)}
    payload[_META] = np.array(json.dumps(spec))
    np.savez(path, **payload)  # type: ignore[arg-type]


def load(path: str | os.PathLike[str], *, xp: Any = None, device: Any = None, dtype: Any = None) -> Any:
    """Read a network written by :func:`save`.

    Parameters
    ----------
    path : str or path-like
    xp : namespace, optional
        Target library (``numpy``, ``torch``, ``cupy``, ``array_api_strict``,
        ...), as the factories take it; NumPy when None.
    device : optional
        Target device (e.g. ``"cuda"``), passed to ``xp.asarray``.
    dtype : dtype or str, optional
        Target dtype; the stored dtype (``float64`` or ``float32``) when None.

    Returns
    -------
    Sequential or Potential
        A new network whose arrays are fresh arrays of ``xp`` on ``device``.
        For torch, call ``requires_grad_()`` on them (or use
        :func:`xderiv.interop.torch.as_module`) to train.
    """
    with np.load(path, allow_pickle=False) as data:
        if _META not in data.files:
            raise ValueError(f"{os.fspath(path)!r} is not an xderiv network file (no {_META!r} entry)")
        spec = json.loads(str(data[_META][()]))
        if spec.get("format", 0) > FORMAT:
            raise ValueError(
                f"{os.fspath(path)!r} has file format {spec.get('format')}, newer than this xderiv reads "
                f"({FORMAT}); upgrade xderiv"
            )
        names = array_names(spec)
        missing = [n for n in names if n not in data.files]
        if missing:
            raise ValueError(f"{os.fspath(path)!r} lacks arrays {missing}")
        host = [data[n] for n in names]
    stored = "float32" if all(a.dtype == np.float32 for a in host) else "float64"
    ns, dev, dt = resolve_target(xp, device, dtype, default_dtype=stored)
    arrays = [ns.asarray(a, dtype=dt, device=dev) for a in host]
    return unflatten(spec, arrays)


__all__ = ["FORMAT", "load", "save"]
