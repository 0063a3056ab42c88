"""xderiv: exact input derivatives of neural networks on any Array API backend.

>>> import numpy as np, xderiv as xd
>>> net = xd.mlp([2, 20, 20, 20, 1], activation="sigmoid", output_activation="sigmoid", seed=0)
>>> xd.hessian(net, np.array([0.15, 0.1])).shape
(1, 2, 2)
"""

from .activations import Activation, available_activations, get_activation, register_activation
from .backends.compile import compile
from .backends.host_memory import tune_host_allocator
from .engine.call import get_memory_budget, memory_budget, set_memory_budget
from .engine.explain import Explanation, explain
from .interop import adapters as _adapters  # noqa: F401  (registers NumPy's generator, torch/JAX compile and checkpoint)
from .interop import autodiff as _autodiff  # noqa: F401  (registers xd.check's torch.func/JAX references)
from .jets import function
from .models.composition import Product, Scaled, Sum
from .models.layers import Dense, InputScale, Residual, fourier_features
from .models.networks import Potential, Sequential, mlp, potential, quadratic, resnet
from .operators.biharmonic import biharmonic
from .operators.directional import directional
from .operators.first_order import divergence, gradient, jacobian, value
from .operators.hessian import hessian
from .operators.hessian_diagonal import hessian_diagonal
from .operators.hvp import hvp
from .operators.laplacian import laplacian, trace_hessian
from .operators.one_pass import Derivatives, derivatives
from .operators.second_order import second_order
from .operators.taylor import partial, taylor
from .verification.check import CheckError, CheckReport, check

__version__ = "0.2.0"

# Converters, reachable as xd.from_torch etc. without importing torch (or hessquik, keras) with xderiv.
_CONVERTERS = {
    "from_torch": "xderiv.interop.torch",
    "as_module": "xderiv.interop.torch",
    "from_hessquik": "xderiv.interop.hessquik",
    "from_keras": "xderiv.interop.keras",
    "from_keras_model": "xderiv.interop.keras",
}


def __getattr__(name: str) -> object:
    """``xd.from_torch``, ``xd.as_module``, ...: the converter, imported on first use."""
    if name in _CONVERTERS:
        import importlib

        return getattr(importlib.import_module(_CONVERTERS[name]), name)
    raise AttributeError(f"module 'xderiv' has no attribute {name!r}")


__all__ = [
    "Activation",
    "CheckError",
    "CheckReport",
    "Dense",
    "Derivatives",
    "Explanation",
    "InputScale",
    "Product",
    "Scaled",
    "Sum",
    "Potential",
    "Residual",
    "Sequential",
    "available_activations",
    "biharmonic",
    "check",
    "compile",
    "derivatives",
    "directional",
    "divergence",
    "explain",
    "get_memory_budget",
    "hessian_diagonal",
    "hvp",
    "memory_budget",
    "set_memory_budget",
    "trace_hessian",
    "get_activation",
    "fourier_features",
    "function",
    "gradient",
    "hessian",
    "jacobian",
    "laplacian",
    "mlp",
    "partial",
    "potential",
    "quadratic",
    "register_activation",
    "resnet",
    "second_order",
    "taylor",
    "tune_host_allocator",
    "value",
    "__version__",
]
