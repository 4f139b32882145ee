"""Adapters that run the multi-step LIF / IF neurons of peer SNN libraries (CPU or CUDA).

Each adapter maps an input current ``x: [T, N]`` (float32, CPU, may require grad) to spikes
``[T, N]``, starting from a zero membrane on every call, so peers can be timed and their spike
trains compared against our semantics (per element, per step, ``v`` starting at 0)::

    h = v * beta + x[t]
    s[t] = 1.0 if h >= v_th else 0.0
    v = h - s[t] * v_th        # soft reset; IF is beta = 1

Each peer is configured as close to this as its API allows (soft reset, input not scaled by the
leak, ATan surrogate with alpha = 2 where the peer has one); the differences that remain are in
``SEMANTICS_NOTES``. Peers are imported only when used, so a missing peer is merely absent from
``available_peers()``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable

import torch

SpikeFn = Callable[[torch.Tensor], torch.Tensor]

# Peer name (also its distribution name) -> module that must import for the adapter to work.
_PEER_MODULES: dict[str, str] = {
    "spikingjelly": "spikingjelly.activation_based.neuron",
    "snntorch": "snntorch",
    "norse": "norse.torch",
}

SEMANTICS_NOTES: dict[str, str] = {
    "spikingjelly": (
        "LIFNode(tau=1/(1-beta), decay_input=False, v_reset=None, ATan(alpha=2), step_mode='m'), "
        "or IFNode(v_reset=None) for beta=1: charges h = v - v/tau + x (beta*v + x up to float "
        "rounding, bit-identical for beta=0.5), fires on h >= v_th and soft-resets "
        "v = h - s*v_th with the gradient flowing through the reset, as ours does."
    ),
    "snntorch": (
        "Leaky(beta, threshold=v_th, reset_mechanism='subtract', atan(alpha=2)) stepped over T; "
        "spikes fire on h > v_th (strict, ours is >=). For beta < 1 it runs with "
        "reset_delay=False, which updates v like ours except that a neuron whose post-reset v "
        "still exceeds v_th gets v_th subtracted once more before the next threshold test (it "
        "then fires only if h > 2*v_th); for beta = 1 it keeps the default reset_delay=True, "
        "whose forward equals ours but whose reset is detached from the gradient."
    ),
    "norse": (
        "LIFBox Euler step (dt=1, tau_mem_inv=1-beta, reset_subtract, looped over T by norse's "
        "SNN module) fed x/(1-beta), i.e. h = v + (1-beta)*(x/(1-beta) - v), equal to "
        "beta*v + x up to float rounding; for beta = 1 it uses IAF, which resets v to 0 (hard "
        "reset) instead of subtracting v_th. Spikes fire on h > v_th (strict, ours is >=), and "
        "norse has no ATan surrogate, so its 'tanh' one with alpha=2 is used: gradient "
        "1 - tanh(2*(h - v_th))^2, same peak and area as ATan alpha=2 but lighter tails."
    ),
}


def available_peers() -> dict[str, str]:
    """Return ``{name: version}`` for the peers that import in this environment."""
    found: dict[str, str] = {}
    for name, module in _PEER_MODULES.items():
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a broken install (not only a missing one) is absent
            continue
        found[name] = importlib.metadata.version(name)
    return found


def make_peer_lif(name: str, beta: float, v_th: float) -> SpikeFn:
    """Return a function running peer ``name``'s neuron (decay ``beta``, threshold ``v_th``).

    ``beta = 1`` selects the peer's IF neuron. The returned function keeps the peer module
    between calls but resets its state on each call, and stays differentiable through the peer's
    own surrogate gradient.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    builders = {"spikingjelly": _spikingjelly, "snntorch": _snntorch, "norse": _norse}
    if name not in builders:
        raise ValueError(f"unknown peer {name!r}; expected one of {sorted(builders)}")
    return builders[name](float(beta), float(v_th))


def _spikingjelly(beta: float, v_th: float) -> SpikeFn:
    from spikingjelly.activation_based import neuron, surrogate

    surrogate_fn = surrogate.ATan(alpha=2.0)
    node: neuron.BaseNode
    if beta == 1.0:
        node = neuron.IFNode(
            v_threshold=v_th, v_reset=None, surrogate_function=surrogate_fn, step_mode="m"
        )
    else:
        # decay_input=False charges v - v / tau + x, i.e. beta * v + x for tau = 1 / (1 - beta);
        # v_reset=None selects the soft (subtract v_th) reset.
        node = neuron.LIFNode(
            tau=1.0 / (1.0 - beta),
            decay_input=False,
            v_threshold=v_th,
            v_reset=None,
            surrogate_function=surrogate_fn,
            step_mode="m",
        )

    def run(x: torch.Tensor) -> torch.Tensor:
        node.reset()
        return node(x)

    return run


def _snntorch(beta: float, v_th: float) -> SpikeFn:
    import snntorch
    from snntorch import surrogate

    # The default reset_delay=True subtracts v_th one step late, after the decay, i.e. v_th
    # instead of our beta * v_th; that only coincides with ours for IF (beta = 1). For LIF,
    # reset_delay=False subtracts within the spiking step, as ours does.
    leaky = snntorch.Leaky(
        beta=beta,
        threshold=v_th,
        spike_grad=surrogate.atan(alpha=2.0),
        reset_mechanism="subtract",
        reset_delay=beta == 1.0,
    )

    def run(x: torch.Tensor) -> torch.Tensor:
        leaky.to(x.device)  # beta and threshold are buffers; a no-op once they are there
        leaky.reset_mem()
        return torch.stack([leaky(x_t)[0] for x_t in x])

    return run


def _norse(beta: float, v_th: float) -> SpikeFn:
    from norse.torch import (
        IAF,
        IAFParameters,
        LIFBoxFeedForwardState,
        LIFBoxParameters,
        lif_box_feed_forward_step,
        reset_subtract,
    )
    from norse.torch.module.snn import SNN

    if beta == 1.0:
        # LIFBox cannot express beta = 1 (its input enters scaled by the leak), so IAF it is.
        iaf = IAF(
            IAFParameters(
                v_th=torch.as_tensor(v_th),
                v_reset=torch.as_tensor(0.0),
                method="tanh",
                alpha=2.0,
            )
        )
        return lambda x: iaf(x)[0]

    leak = 1.0 - beta
    lif_box = SNN(
        lif_box_feed_forward_step,
        lambda x: LIFBoxFeedForwardState(v=x.new_zeros(x.shape[1:])),
        LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(leak),
            v_th=torch.as_tensor(v_th),
            v_reset=torch.as_tensor(0.0),
            method="tanh",
            alpha=2.0,
            reset_method=reset_subtract,
        ),
        dt=1.0,
    )
    # LIFBox integrates leak * (x - v); dividing x by the leak makes the input term x itself.
    return lambda x: lif_box(x / leak)[0]
