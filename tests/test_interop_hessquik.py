"""xderiv.interop.hessquik: hessQuik networks against hessQuik's own derivatives and torch.func."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hessQuik")

import hessQuik.activations as act  # noqa: E402
import hessQuik.layers as lay  # noqa: E402
import hessQuik.networks as hnet  # noqa: E402

import xderiv as xd  # noqa: E402
from xderiv.interop.hessquik import from_hessquik  # noqa: E402

from .helpers import torch_on_cpu  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
F64 = torch.float64

# Every tensor is built on ``torch_device`` (tests/conftest.py): the session's device in the
# torch session, the CPU elsewhere.  Models are built on the CPU from a fixed seed, then moved.


def _models(device=None):
    """The hessQuik test models in float64, same weights on every device: built on the CPU, then moved."""
    with torch_on_cpu():
        torch.manual_seed(0)
        models = _cpu_models()
    return {k: m.to(device=device, dtype=F64) for k, m in models.items()}


def _cpu_models():
    d, w = 4, 10
    return {
        "fullyConnected-softplus": hnet.fullyConnectedNN([d, w, w, 2], act=act.softplusActivation()),
        "fullyConnected-sigmoid": hnet.fullyConnectedNN([d, w, 3], act=act.sigmoidActivation()),
        "NN-antiTanh-resnet-tanh": hnet.NN(
            hnet.fullyConnectedNN([d, w], act=act.antiTanhActivation()),
            hnet.resnetNN(w, 2, h=0.5, act=act.tanhActivation()),
            hnet.fullyConnectedNN([w, 1], act=act.identityActivation()),
        ),
        "NN-layers-quadratic-beta": hnet.NN(
            lay.singleLayer(d, w, act=act.quadraticActivation()),
            lay.resnetLayer(w, h=0.25, act=act.softplusActivation(beta=2.0)),
            lay.singleLayer(w, w, act=act.antiTanhActivation(), bias=False),
            hnet.NN(lay.resnetLayer(w, h=0.75, act=act.sigmoidActivation())),
            lay.singleLayer(w, 2),
        ),
        "singleLayer": lay.singleLayer(d, 3, act=act.tanhActivation()),
        "resnetLayer": lay.resnetLayer(d, h=0.3, act=act.antiTanhActivation()),
    }


@pytest.fixture(params=list(_models()))
def model(request, torch_device):
    return _models(torch_device)[request.param]


def _torch_func(f, x):
    from torch.func import hessian, jacrev, vmap

    one = lambda p: f(p[None])[0][0]  # noqa: E731  (hessQuik returns (f, dfdx, d2fd2x))
    return vmap(jacrev(one))(x), vmap(hessian(one))(x)


@pytest.mark.parametrize("hq_forward", [True, False])
@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_matches_hessquik_derivatives(model, mode, hq_forward, torch_device):
    x = 0.5 * torch.randn(7, 4, dtype=F64, device=torch_device)
    fx, dfdx, d2fd2x = model(x, do_gradient=True, do_Hessian=True, forward_mode=hq_forward)
    net = from_hessquik(model)
    r = xd.derivatives(net, x, hessian=True, mode=mode)
    torch.testing.assert_close(r.value, fx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.jacobian, dfdx.transpose(1, 2), rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(r.hessian, d2fd2x.permute(0, 3, 1, 2), rtol=1e-10, atol=1e-11)


def test_matches_torch_func_and_hessquik_laplacian(model, torch_device):
    x = 0.5 * torch.randn(5, 4, dtype=F64, device=torch_device)
    net = from_hessquik(model)
    J, H = _torch_func(model, x)
    torch.testing.assert_close(xd.jacobian(net, x), J, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(xd.hessian(net, x), H, rtol=1e-10, atol=1e-11)
    _, _, lap = model(x, do_gradient=True, do_Laplacian=True)
    lap_hq = lap.reshape(x.shape[0], -1)
    torch.testing.assert_close(xd.laplacian(net, x), lap_hq, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(xd.laplacian(net, x), torch.diagonal(H, dim1=-2, dim2=-1).sum(-1))


def test_shares_parameters_and_gradients(torch_device):
    model = _models(torch_device)["NN-antiTanh-resnet-tanh"]
    net = from_hessquik(model)
    K0 = model[0][0].K
    assert net.layers[0].weight is K0
    x = torch.randn(3, 4, dtype=F64, device=torch_device)
    xd.laplacian(net, x).sum().backward()
    assert K0.grad is not None and torch.count_nonzero(K0.grad) > 0
    with torch.no_grad():
        K0.mul_(0.5)
    torch.testing.assert_close(net(x), model(x)[0])


def test_unsupported_layers_are_refused():
    with pytest.raises(TypeError, match="ICNN"):
        from_hessquik(hnet.ICNN(3, [4, 5]))
    with pytest.raises(TypeError, match="quadratic"):
        from_hessquik(hnet.NN(lay.singleLayer(3, 4), lay.quadraticLayer(4, 2)))


def test_softplus_thresholds_below_the_default_are_refused():
    """hessQuik's softplus is the identity where beta * z > threshold, a different function from the
    smooth softplus when the threshold is small: refused, naming the layer; the default converts."""
    with pytest.raises(ValueError, match=r"\[0\].*Softplus\(beta=2.0, threshold=1.0\)"):
        from_hessquik(hnet.NN(lay.singleLayer(3, 4, act=act.softplusActivation(beta=2.0, threshold=1.0))))
    net = from_hessquik(hnet.NN(lay.singleLayer(3, 4, act=act.softplusActivation(beta=2.0))))
    assert net.layers[0].activation.name == "softplus(beta=2.0)"
