r"""torch's softplus with its ``threshold``, as the torch and hessQuik converters take it.

``nn.Softplus``, ``F.softplus`` and hessQuik's ``softplusActivation`` switch to the identity
where :math:`\beta z > t` (``threshold``, default 20).  xderiv evaluates the smooth
:math:`\log(1 + e^{\beta z}) / \beta` everywhere, which exceeds the identity there by at most
:math:`\log(1 + e^{-t}) / \beta` (:math:`2.1 \cdot 10^{-9} / \beta` at the default; the
first derivatives differ by at most :math:`e^{-t}`).  A smaller threshold would make the
converted network a different function from the module, so it is refused.
"""

from __future__ import annotations

import math

from ..activations import Activation, softplus

MIN_THRESHOLD = 20.0
"""The smallest ``threshold`` converted: torch's default, where the two functions differ by ~2e-9 / beta."""


def torch_softplus(beta: float, threshold: float, where: str = "") -> Activation:
    """xderiv's ``softplus(beta)`` for torch's ``softplus(beta, threshold)``; ``threshold < 20`` raises.

    Raises
    ------
    ValueError
        For ``threshold`` below :data:`MIN_THRESHOLD`, naming ``where`` (a prefix for the message,
        e.g. the layer's position) and the difference it would make.
    """
    beta, threshold = float(beta), float(threshold)
    if not threshold >= MIN_THRESHOLD:
        gap = math.log1p(math.exp(-threshold)) / beta if threshold > -700 else math.inf
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}Softplus(beta={beta}, threshold={threshold}) is the identity where beta * z > {threshold}, "
            f"and differs there from the smooth softplus xderiv evaluates by up to {gap:.3g} "
            f"(and in every derivative); thresholds of {MIN_THRESHOLD:g} or more (torch's default) are "
            "converted. To accept the difference, map it yourself, e.g. "
            "from_torch(model, activations={nn.Softplus: lambda m: xd.activations.softplus(m.beta)})"
        )
    return softplus(beta)
