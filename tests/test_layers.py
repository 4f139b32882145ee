"""IF/LIF modules: parameters, multi-step vs single-step, state handling, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuro_emu.layers import IF, LIF
from neuro_emu.ops import multistep_lif
from tests.cases import BACKENDS, assert_identical, device_for


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_tau_is_the_op_with_beta(backend):
    x = torch.rand(6, 4, 3, 5, device=device_for(backend)) * 1.5
    layer = LIF(tau=2.0, backend=backend)
    assert_identical("spikes", layer(x).cpu(), multistep_lif(x.cpu(), beta=0.5, backend="torch"))
    assert layer.v.shape == (4, 3, 5) and not layer.v.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_if_is_beta_one_with_v_init(backend):
    x = torch.rand(5, 2, 7)
    layer = IF(v_th=0.8, v_init=0.4, backend=backend)
    v0 = torch.full((2, 7), 0.4)
    expected = multistep_lif(x, v0, beta=1.0, v_th=0.8, backend="torch")
    assert_identical("spikes", layer(x.to(device_for(backend))).cpu(), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_step_loop_equals_multi_step(backend):
    x = (torch.rand(7, 3, 11, device=device_for(backend)) * 1.5).requires_grad_()
    multi = LIF(beta=0.75, reset="zero", v_init=0.2, backend=backend)
    single = LIF(beta=0.75, reset="zero", v_init=0.2, backend=backend, step_mode="single")
    out_multi = multi(x)
    out_single = torch.stack([single(x_t) for x_t in x])
    assert_identical("spikes", out_multi, out_single)
    assert_identical("v_final", multi.v, single.v.detach())
    grad = torch.randn_like(out_multi)
    (g_multi,) = torch.autograd.grad(out_multi, x, grad)
    (g_single,) = torch.autograd.grad(out_single, x, grad)
    assert_identical("grad_x", g_multi, g_single)


def test_a_single_step_layer_copies_mid_sequence():
    """After a step under autograd the carried membrane is part of the graph; a deepcopy (or a
    pickle) carries it detached instead of failing, and continues the sequence alike."""
    import copy

    layer = LIF(tau=2.0, step_mode="single")
    x = torch.rand(2, 3, requires_grad=True)
    layer(x)
    twin = copy.deepcopy(layer)
    assert not twin.v.requires_grad and torch.equal(twin.v, layer.v.detach())
    assert_identical("next step", twin(x.detach()), layer(x.detach()))


def test_multi_step_calls_are_independent():
    layer = LIF(tau=2.0)
    x = torch.rand(4, 2, 9) * 1.5
    assert_identical("spikes", layer(x), layer(x))


def test_single_step_state_and_reset():
    layer = LIF(tau=2.0, step_mode="single")
    x = torch.full((2, 3), 0.75)
    assert layer(x).sum() == 0  # h = 0.75
    assert layer(x).sum() == 6  # h = 0.375 + 0.75 >= 1
    with pytest.raises(ValueError, match="reset_state"):
        layer(torch.rand(4, 3))
    layer.reset_state()
    assert layer(torch.full((4, 3), 0.75)).sum() == 0


def test_in_a_network_trains():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), LIF(tau=2.0), nn.Linear(16, 2))
    x = torch.rand(4, 8, 10)
    loss = net(x).mean(0).pow(2).sum()
    loss.backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(), "exactly one of tau or beta"),
        (dict(tau=2.0, beta=0.5), "exactly one of tau or beta"),
        (dict(tau=0.5), "tau must be a number >= 1"),
        (dict(beta=1.5), "beta must be a number in"),
        (dict(tau=2.0, v_th=0.0), "v_th must be"),
        (dict(tau=2.0, reset="soft-ish"), "reset must be one of"),
        (dict(tau=2.0, surrogate="erf"), "surrogate must be one of"),
        (dict(tau=2.0, step_mode="both"), "step_mode"),
        (dict(tau=2.0, v_init=float("nan")), "v_init must be a finite float32"),
        (dict(tau=2.0, v_init=1e39), "v_init must be a finite float32"),
        (dict(tau=2.0, backend="cuda"), "backend must be one of"),
        (dict(tau=2.0, step_mode="folded", timesteps=True), "timesteps must be None or an int"),
        (dict(tau=2.0, step_mode="folded", timesteps=-3), "timesteps must be None or an int"),
    ],
)
def test_construction_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LIF(**kwargs)


def test_if_rejects_a_leak():
    with pytest.raises(ValueError, match="IF has no leak"):
        IF(tau=2.0)


def test_multi_step_needs_time_axis():
    with pytest.raises(ValueError, match=r"x: \[T, B, \.\.\.\]"):
        LIF(tau=2.0)(torch.rand(5))


def test_input_errors_are_clear_in_every_mode():
    with pytest.raises(ValueError, match="T = 0 time steps"):
        LIF(tau=2.0, v_init=0.5)(torch.rand(0, 2, 3))
    for mode in ("multi", "single", "folded"):
        with pytest.raises(TypeError, match="takes a torch.Tensor, got list"):
            LIF(tau=2.0, step_mode=mode, timesteps=2)([1.0, 2.0])


def test_a_spiking_network_gives_its_neurons_its_timesteps_at_every_call():
    """Two networks sharing one body at different T, and a neuron added after wrapping: each
    call runs the neurons at the calling network's T (the neurons used to keep the last T set,
    silently folding batch into time)."""
    from neuro_emu.layers import SpikingNetwork

    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(5, 6), LIF(tau=2.0, step_mode="folded"), nn.Linear(6, 3))
    x = torch.randn(8, 5)
    at_four = SpikingNetwork(body, 4)
    before = at_four(x)
    at_eight = SpikingNetwork(body, 8)
    assert_identical("T = 4 after a T = 8 wrapper", at_four(x), before)
    assert at_eight(x).shape == (8, 3)
    body.append(IF(step_mode="folded"))
    assert at_four(x).shape == (8, 3)
    body[1].step_mode = "multi"
    with pytest.raises(ValueError, match="step_mode='folded'"):
        at_four(x)
