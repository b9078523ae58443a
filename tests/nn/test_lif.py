import torch

from spikeclip_deploy.nn.encoders import TimeDependentWeights
from spikeclip_deploy.nn.lif import MultiStepLIF


def test_lif_trace_by_hand():
    # X = 1.5, tau = 2: H1 = 0.75 (no spike), H2 = 0.75 + (1.5 - 0.75)/2 = 1.125 > 1 (spike, reset),
    # H3 = 0.75, H4 = 1.125 -> spikes 0 1 0 1
    lif = MultiStepLIF(tau=2.0, v_threshold=1.0)
    out = lif(torch.full((4, 1), 1.5))
    assert out.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]


def test_lif_threshold_is_strict():
    # X = 2 -> H1 = 1.0 exactly: Loihi spikes only when v > threshold
    assert MultiStepLIF()(torch.full((1, 1), 2.0)).item() == 0.0


def test_surrogate_gradient_flows():
    x = torch.full((2, 3), 1.0, requires_grad=True)
    MultiStepLIF()(x).sum().backward()
    assert x.grad is not None and torch.all(x.grad > 0)


def test_tdw_init_and_sum():
    tdw = TimeDependentWeights(4)
    assert torch.allclose(tdw.weight, torch.log(torch.tensor([0.1, 0.2, 0.4, 0.8])))
    x = torch.ones(4, 2)
    assert torch.allclose(tdw(x), torch.full((2,), float(tdw.weight.detach().sum())))


def test_fused_equals_per_step_reference():
    torch.manual_seed(0)
    x = (torch.randn(4, 8, 16) * 1.5 + 0.8).requires_grad_(True)
    g = torch.randn(4, 8, 16)
    outs, grads = [], []
    for fused in (True, False):
        xi = x.detach().clone().requires_grad_(True)
        s = MultiStepLIF(fused=fused)(xi)
        (s * g).sum().backward()
        outs.append(s)
        grads.append(xi.grad)
    assert torch.equal(outs[0], outs[1]) and outs[0].sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_surrogate_is_finite_far_below_threshold():
    # snntorch's formula gives NaN here (exp(4 * 30)^2 overflows float32)
    x = torch.full((2, 3), -60.0, requires_grad=True)
    MultiStepLIF(fused=False)(x).sum().backward()
    assert torch.isfinite(x.grad).all()
