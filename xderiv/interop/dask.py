"""Run xderiv on dask arrays: points chunked along the batch axis, on a laptop or a cluster.

``dask.array`` is an Array API namespace (through array-api-compat), so the
same recursions build a lazy task graph, one task chain per chunk of points.
The weights must be dask arrays too (xderiv never mixes namespaces); they are
small, so each becomes a single chunk that dask broadcasts to every task.

>>> import dask.array as da
>>> from xderiv.interop.dask import to_dask
>>> dnet = to_dask(net)                                  # weights as one-chunk dask arrays
>>> x = da.random.random((10_000_000, 8), chunks=(100_000, 8))
>>> lap = xd.laplacian(dnet, x)                           # lazy, chunked like x
>>> lap.compute()                                         # or client.compute(lap) on a cluster

Chunk ``x`` along the batch axis only (``chunks=(c, d)``): a chunk of ``c``
points needs the working memory of ``c`` points (see
:func:`xderiv.set_memory_budget`), and xderiv does not re-chunk lazy arrays.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import dask.array as da


def to_dask(net: Any) -> Any:
    """The same network with every weight as a single-chunk dask array (from NumPy or CuPy weights)."""
    arrays = []
    for a in net.arrays():
        if array_api_compat.is_dask_array(a):
            arrays.append(a)
        else:
            arrays.append(da.from_array(a, chunks=a.shape))
    return net.with_arrays(arrays)
