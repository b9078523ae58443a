import logging

import pytest
import torch

from spikeclip_deploy.nn import lif as lif_module
from spikeclip_deploy.nn import lif_kernel
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


def _spikes_and_grad(lif: MultiStepLIF, x: torch.Tensor, g: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    s = lif(x)
    (s * g).sum().backward()
    return s.detach(), x.grad


@pytest.mark.parametrize("use_compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("tau,v_th", [(2.0, 1.0), (3.0, 0.5)])
def test_fused_equals_per_step_reference(use_compile, tau, v_th):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 16) * 1.5 + 0.8
    x[:, 0, 0] = torch.tensor([2.0, 1.0, 0.5, 0.25]) * v_th * tau  # lands exactly on threshold
    g = torch.randn(4, 8, 16)
    s_ref, g_ref = _spikes_and_grad(MultiStepLIF(tau, v_th, fused=False), x, g)
    s, grad = _spikes_and_grad(MultiStepLIF(tau, v_th, use_compile=use_compile), x, g)
    assert torch.equal(s, s_ref) and s.sum() > 0
    if use_compile and lif_module._compile_failed:
        pytest.skip("torch.compile does not work here (the eager fallback ran and matched)")
    if use_compile:  # inductor's sigmoid may differ from ATen's in the last bits
        torch.testing.assert_close(grad, g_ref, rtol=1e-5, atol=1e-7)
    else:  # the same ATen ops in the same order
        assert torch.equal(grad, g_ref)


@pytest.mark.parametrize("use_compile", [False, True], ids=["eager", "compiled"])
def test_fused_keeps_channels_last_layout(use_compile):
    torch.manual_seed(1)
    x = (torch.randn(2 * 3, 5, 4, 4) + 1.0).contiguous(memory_format=torch.channels_last)
    x = x.unflatten(0, (2, 3))  # [T, B, C, H, W] laid out [T, B, H, W, C]
    g = torch.randn(2, 3, 5, 4, 4)
    s_ref, g_ref = _spikes_and_grad(MultiStepLIF(fused=False), x.contiguous(), g)
    s, grad = _spikes_and_grad(MultiStepLIF(use_compile=use_compile), x, g)
    assert s.stride() == x.stride() and grad.stride() == x.stride()
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(grad, g_ref, rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # inference path (no BPTT buffers)
        assert torch.equal(MultiStepLIF(use_compile=use_compile)(x), s_ref)


@pytest.fixture
def fresh_compile_state(monkeypatch):
    monkeypatch.setattr(lif_module, "_compiled", {})
    monkeypatch.setattr(lif_module, "_compiled_ok", set())
    monkeypatch.setattr(lif_module, "_compile_failed", False)


def test_compile_disabled_by_flag_or_env(monkeypatch, fresh_compile_state):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: calls.append(a))
    x = torch.randn(3, 10, requires_grad=True)
    MultiStepLIF(use_compile=False)(x).sum().backward()
    monkeypatch.setenv(lif_module.COMPILE_ENV, "0")
    MultiStepLIF()(x).sum().backward()
    assert calls == [] and lif_module._compiled == {} and not lif_module._compile_failed


def _compile_fails_late(fn, **kwargs):  # as without a C++ compiler: at the first call
    def run(*args):
        raise RuntimeError("no C++ compiler")
    return run


def _compile_fails_early(fn, **kwargs):  # as on a Python that dynamo does not support
    raise RuntimeError("no C++ compiler")


@pytest.mark.parametrize("broken_compile", [_compile_fails_late, _compile_fails_early])
def test_compile_failure_falls_back_to_eager(monkeypatch, fresh_compile_state, caplog,
                                            broken_compile):
    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(2)
    x, g = torch.randn(4, 6) + 1.0, torch.randn(4, 6)
    with caplog.at_level(logging.WARNING, logger=lif_module.__name__):
        s, grad = _spikes_and_grad(MultiStepLIF(use_compile=True), x, g)
    assert "no C++ compiler" in caplog.text and lif_module._compile_failed
    s_ref, g_ref = _spikes_and_grad(MultiStepLIF(fused=False), x, g)
    assert torch.equal(s, s_ref) and torch.equal(grad, g_ref)


def test_errors_after_a_successful_compiled_call_are_not_swallowed(monkeypatch, fresh_compile_state):
    calls = []

    def works_once(fn, **kwargs):
        def run(*args):
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("out of memory")
            return fn(*args)
        return run

    monkeypatch.setattr(torch, "compile", works_once)
    x = torch.randn(3, 5, requires_grad=True)
    lif = MultiStepLIF(use_compile=True)
    lif(x)  # forward compiled and ran
    with pytest.raises(RuntimeError, match="out of memory"):
        lif(x)
    assert not lif_module._compile_failed


def test_surrogate_is_finite_far_below_threshold():
    # snntorch's formula gives NaN here (exp(4 * 30)^2 overflows float32)
    x = torch.full((2, 3), -60.0, requires_grad=True)
    MultiStepLIF(fused=False)(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_compiled_loops_take_views_of_any_layout_in_float32_and_bfloat16(fresh_compile_state):
    """A model's LIFs read views of differently laid out tensors (a conv output folded back to
    ``[T, B, ...]``, a fan-in sum, ...), in float32 and, under bf16 autocast, in bfloat16 too;
    the compiled loops see plain ``[T, N]`` rows, so they are not recompiled for each layout
    (torch stops a function after 8 recompilations: training would fail). A compiled loop
    keeps its membrane in float32 between steps, so bfloat16 inputs give the float32 spikes."""
    torch.manual_seed(2)
    for dtype in (torch.float32, torch.bfloat16):
        for rank in range(2, 8):  # [T*B, 3, 2, 2, ...] bases, viewed as [T, B, 3, 2, 2, ...]
            leaf = (torch.randn(4 * 2, 3, *[2] * (rank - 2)) + 1).to(dtype).requires_grad_(True)
            x = (leaf * 1).unflatten(0, (4, 2))  # a view of a fresh (non-leaf) tensor
            s = MultiStepLIF(use_compile=True)(x)
            s.sum().backward()
            ref = leaf.detach().float().requires_grad_(True)
            s_ref = MultiStepLIF(fused=False)(ref.unflatten(0, (4, 2)))
            s_ref.sum().backward()
            assert s.dtype == leaf.grad.dtype == dtype and torch.equal(s.float(), s_ref)
            if dtype == torch.float32:  # (bfloat16 keeps H rounded for the backward pass)
                torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-5, atol=1e-7)
    if lif_module._compile_failed:
        pytest.skip("torch.compile does not work here (the eager fallback ran and matched)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau,v_th", [(2.0, 1.0), (3.0, 0.5), (1.7, 0.3)])
def test_compiled_inference_equals_the_eager_loop(dtype, tau, v_th):
    # more neurons than one block of the compiled pass, ties on the threshold, NaN, inf and -0
    torch.manual_seed(2)
    x = (torch.randn(5, 3 * lif_kernel.BLOCK + 7) * 1.5 + 0.8).to(dtype)
    x[:4, :3] = torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=dtype)[:, None] * v_th * tau
    x[1, 7], x[2, 9], x[0, 11] = float("nan"), float("inf"), -0.0
    # second-step currents near (V_th - H_1) tau + H_1: where H_2 lands exactly on V_th in the
    # eager arithmetic, any other order of its operations misses it now and then
    h1 = torch.rand(4096, dtype=dtype) * v_th
    x2 = (v_th - h1) * tau + h1
    near = torch.stack([x2 + k * torch.finfo(dtype).eps * x2.abs() for k in range(-8, 9)])
    tie = (near - h1) / tau + h1 == v_th
    ties = torch.stack([h1 * tau, near[tie.int().argmax(0), range(4096)]])[:, tie.any(0)]
    x = torch.cat([x, torch.cat([ties, ties[1:].expand(3, -1)])], dim=1)
    eager = lif_module._lif_forward_eager(x, tau, v_th, keep_h=False)[0]
    with torch.no_grad():
        compiled = MultiStepLIF(tau, v_th)(x)
    assert compiled.dtype == dtype and torch.equal(compiled, eager)
    assert 0 < compiled.sum() < compiled.numel() and ties.shape[1] > 1000
    with torch.no_grad():  # the spikes counted over the steps in the same pass
        spikes, counts = MultiStepLIF(tau, v_th).spikes_and_counts(x)
    assert torch.equal(spikes, eager) and counts.dtype == torch.uint8
    assert torch.equal(counts.long(), eager.sum(0).long())


def test_counts_come_back_in_the_shape_and_layout_of_a_step():
    # [T, B, C, H, W] with the channels innermost in memory (channels-last)
    x = (torch.randn(3, 2, 4, 6, 5) * 2).permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        spikes, counts = MultiStepLIF(2.0, 1.0).spikes_and_counts(x)
    assert counts.shape == (2, 5, 4, 6) and torch.equal(counts.long(), spikes.sum(0).long())
    assert 0 < int(counts.sum()) < 3 * counts.numel()
