"""The public operators, one module each: its function, cost row, chain kernel, Potential term,
composite rule, planner and graph read-out."""

from . import chain_path  # noqa: F401  (registers the chains' fast paths inside graphs)
from .biharmonic import biharmonic
from .directional import directional
from .first_order import divergence, gradient, jacobian, value
from .hessian import hessian
from .hessian_diagonal import hessian_diagonal
from .hvp import hvp
from .laplacian import laplacian, trace_hessian
from .one_pass import Derivatives, derivatives
from .second_order import second_order
from .taylor import partial, taylor

__all__ = [
    "Derivatives",
    "biharmonic",
    "derivatives",
    "directional",
    "divergence",
    "gradient",
    "hessian",
    "hessian_diagonal",
    "hvp",
    "jacobian",
    "laplacian",
    "partial",
    "second_order",
    "taylor",
    "trace_hessian",
    "value",
]
