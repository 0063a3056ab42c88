"""The jet engine: exact derivatives of any network, one rule per primitive, written once.

- :mod:`~xderiv.jets.kinds`: what a jet carries (Taylor coefficients along directions, a
  collapsed top coefficient, or a Hessian) and the one operation in which kinds differ;
- :mod:`~xderiv.jets.array`: the jet array, an Array API array that carries its terms;
- :mod:`~xderiv.jets.rules`: linear, bilinear (Leibniz) and one-variable (Faà di Bruno) rules,
  and every primitive built from them; :mod:`~xderiv.jets.linalg`: inverse and determinants;
- :mod:`~xderiv.jets.namespace`: the namespace ``array_namespace(x)`` returns on a jet;
- :mod:`~xderiv.jets.function`: :func:`function`, and any network evaluated on a jet;
- :mod:`~xderiv.jets.call`: one operator call on a graph (the seed, the chunks, the terms read back).
"""

from .array import JetArray
from .function import Function, function, is_graph

__all__ = ["Function", "JetArray", "function", "is_graph"]
