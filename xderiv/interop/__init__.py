"""Bridges to concrete array libraries and to other projects' models.

The only part of xderiv allowed to import a concrete array library; the
derivative core never does.

- :mod:`xderiv.interop.torch`: ``from_torch(nn.Sequential)`` sharing the
  tensors, ``as_module(net)`` for torch optimizers (needs torch).
- :mod:`xderiv.interop.hessquik`: ``from_hessquik(model)`` for hessQuik networks.
- :mod:`xderiv.interop.otflow`: ``potential(K0, b0, K, b, w, A, c, c0)``,
  ``from_phi(phi)``, ``from_state_dict(sd)`` for OT-Flow potentials.
- :mod:`xderiv.interop.keras`: ``from_keras(model.get_weights(), ...)``.
- :mod:`xderiv.interop.io`: ``save(net, path)`` / ``load(path, xp=, device=, dtype=)``,
  one ``.npz`` with architecture and weights, loadable into any backend.

Submodules are imported on demand (``from xderiv.interop.torch import
from_torch``), so importing xderiv never imports torch.
"""
