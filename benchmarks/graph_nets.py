"""The networks of the "graphs" benchmark family (``benchmarks/graphs.py``): networks that are not chains.

Each network is drawn once as NumPy float64 weights (``draw``) and written once per framework:

- ``forward(xp, P, x)``: against the Array API (``xp = array_namespace(x)``); with torch
  weights it is what ``xd.function`` differentiates, with jax weights it is the JAX function
  that folx and ``jax.jit`` of xderiv take;
- ``TorchNet``: an ``nn.Module`` with torch operations only, for ``torch.func``, torch autograd,
  jet-for-pytorch, and ``xderiv.interop.torch_graph.graph_function``.

Networks (width w = 64, tanh, one linear output):

- ``mMLP``: the modified MLP of Wang, Teng & Perdikaris (2021): U = tanh(xW_U + b_U),
  V = tanh(xW_V + b_V), H = tanh(xW_1 + b_1), then 3 times Z = tanh(HW + b), H = (1 − Z)⊙U + Z⊙V;
- ``PirateNet``: random Fourier features Φ(x) = [cos(xB), sin(xB)] (B: d × 32, N(0, 1)), U, V gates
  on Φ, then 2 residual blocks of three gated dense layers, x' = α·f(x) + (1 − α)·x (α fixed
  at 0.4 and 0.6, as if trained; the paper's α = 0 at initialisation would make the blocks identities);
- ``LN-MLP``: 4 hidden tanh layers, each followed by a LayerNorm (affine);
- ``MLP``: 4 hidden tanh layers, the plain chain (xderiv's specialised recursion exists for it).
"""

from __future__ import annotations

import numpy as np

WIDTH = 64
NETWORKS = ("mMLP", "PirateNet", "LN-MLP", "MLP")
EPS = 1e-5  # LayerNorm


def _dense(rng, a, b):
    return {"W": rng.standard_normal((a, b)) / np.sqrt(a), "b": 0.1 * rng.standard_normal(b)}


def draw(name: str, d: int, seed: int = 0, w: int = WIDTH) -> dict:
    """The network's weights as NumPy float64 arrays: {layer name: {"W", "b", ...}} and scalars."""
    rng = np.random.default_rng(seed)
    if name == "mMLP":
        P = {"U": _dense(rng, d, w), "V": _dense(rng, d, w), "L0": _dense(rng, d, w)}
        P.update({f"L{i}": _dense(rng, w, w) for i in range(1, 4)})
    elif name == "PirateNet":
        P = {"B": {"W": rng.standard_normal((d, w // 2))}, "U": _dense(rng, w, w), "V": _dense(rng, w, w)}
        for k in range(2):
            P.update({f"B{k}L{j}": _dense(rng, w, w) for j in range(3)})
        P["alpha"] = {"W": np.array([0.4, 0.6])}
    elif name == "LN-MLP":
        P = {f"L{i}": _dense(rng, d if i == 0 else w, w) for i in range(4)}
        for i in range(4):
            P[f"LN{i}"] = {"W": 1.0 + 0.1 * rng.standard_normal(w), "b": 0.1 * rng.standard_normal(w)}
    elif name == "MLP":
        P = {f"L{i}": _dense(rng, d if i == 0 else w, w) for i in range(4)}
    else:
        raise ValueError(name)
    P["out"] = _dense(rng, w, 1)
    return P


def flops(name: str, d: int, w: int = WIDTH) -> int:
    """Multiply-adds × 2 of one forward pass at one point (the matrix products only)."""
    mm = {
        "mMLP": 3 * d * w + 3 * w * w,
        "PirateNet": d * w // 2 + 2 * w * w + 6 * w * w,
        "LN-MLP": d * w + 3 * w * w,
        "MLP": d * w + 3 * w * w,
    }[name]
    return 2 * (mm + w)


# --------------------------------------------------------------------------- Array API (xderiv, folx)


def forward(xp, P, x):
    """The network on ``x`` of shape (..., d), through the namespace ``xp``; ``P`` holds xp's arrays."""
    name = P["name"]

    def lin(h, k):
        return h @ P[k]["W"] + P[k]["b"]

    if name == "mMLP":
        U, V = xp.tanh(lin(x, "U")), xp.tanh(lin(x, "V"))
        H = xp.tanh(lin(x, "L0"))
        for i in range(1, 4):
            Z = xp.tanh(lin(H, f"L{i}"))
            H = U + Z * (V - U)  # (1 - Z) U + Z V
    elif name == "PirateNet":
        xb = x @ P["B"]["W"]
        H = xp.concat([xp.cos(xb), xp.sin(xb)], axis=-1)
        U, V = xp.tanh(lin(H, "U")), xp.tanh(lin(H, "V"))
        for k in range(2):
            F = xp.tanh(lin(H, f"B{k}L0"))
            Z = V + F * (U - V)  # F U + (1 - F) V
            G = xp.tanh(lin(Z, f"B{k}L1"))
            Z = V + G * (U - V)
            Z = xp.tanh(lin(Z, f"B{k}L2"))
            a = P["alpha"]["W"][k]
            H = H + a * (Z - H)  # a Z + (1 - a) H
    elif name == "LN-MLP":
        H = x
        for i in range(4):
            H = xp.tanh(lin(H, f"L{i}"))
            mu = xp.mean(H, axis=-1, keepdims=True)
            C = H - mu
            var = xp.mean(C * C, axis=-1, keepdims=True)
            H = C / xp.sqrt(var + EPS) * P[f"LN{i}"]["W"] + P[f"LN{i}"]["b"]
    elif name == "MLP":
        H = x
        for i in range(4):
            H = xp.tanh(lin(H, f"L{i}"))
    else:
        raise ValueError(name)
    return lin(H, "out")


def convert(P: dict, name: str, asarray) -> dict:
    """The NumPy weights as another library's arrays (``asarray``), the network's name kept."""
    out = {k: {kk: asarray(vv) for kk, vv in v.items()} for k, v in P.items()}
    out["name"] = name
    return out


# --------------------------------------------------------------------------- torch (torch.func, autograd, jet)


def torch_module(P: dict, name: str):
    """The network as an ``nn.Module`` written with torch operations (float64 Parameters)."""
    import torch
    from torch import nn

    class TorchNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.name = name
            # pairs, not a dict: a ParameterDict built from a dict sorts its keys; the drawing order is kept
            pairs = [(f"{k}_{kk}", torch.tensor(vv, dtype=torch.float64)) for k, v in P.items() for kk, vv in v.items()]
            self.p = nn.ParameterDict([(k, nn.Parameter(t)) for k, t in pairs])

        def lin(self, h, k):
            return h @ self.p[f"{k}_W"] + self.p[f"{k}_b"]

        def forward(self, x):
            lin = self.lin
            if self.name == "mMLP":
                U, V = torch.tanh(lin(x, "U")), torch.tanh(lin(x, "V"))
                H = torch.tanh(lin(x, "L0"))
                for i in range(1, 4):
                    Z = torch.tanh(lin(H, f"L{i}"))
                    H = U + Z * (V - U)  # (1 - Z) U + Z V
            elif self.name == "PirateNet":
                xb = x @ self.p["B_W"]
                H = torch.cat([torch.cos(xb), torch.sin(xb)], dim=-1)
                U, V = torch.tanh(lin(H, "U")), torch.tanh(lin(H, "V"))
                for k in range(2):
                    F = torch.tanh(lin(H, f"B{k}L0"))
                    Z = V + F * (U - V)  # F U + (1 - F) V
                    G = torch.tanh(lin(Z, f"B{k}L1"))
                    Z = V + G * (U - V)
                    Z = torch.tanh(lin(Z, f"B{k}L2"))
                    a = self.p["alpha_W"][k]
                    H = H + a * (Z - H)  # a Z + (1 - a) H
            elif self.name == "LN-MLP":
                H = x
                for i in range(4):
                    H = torch.tanh(lin(H, f"L{i}"))
                    C = H - H.mean(-1, keepdim=True)
                    var = (C * C).mean(-1, keepdim=True)
                    H = C * (var + EPS) ** -0.5 * self.p[f"LN{i}_W"] + self.p[f"LN{i}_b"]
            else:
                H = x
                for i in range(4):
                    H = torch.tanh(lin(H, f"L{i}"))
            return lin(H, "out")

    return TorchNet()


def torch_params(module) -> dict:
    """The module's Parameters in ``forward``'s layout, for the Array API function (the same tensors)."""
    P = {"name": module.name}
    for key, prm in module.p.items():
        k, kk = key.rsplit("_", 1)
        P.setdefault(k, {})[kk] = prm
    return P
