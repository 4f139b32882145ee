"""The executable modules for the NIR nodes that torch has no layer for, on folded time.

:func:`neuro_emu.from_nir` builds a network from torch layers and :class:`~neuro_emu.layers.LIF`
neurons where it can; these cover the rest (a neuron with an input gain or a leak, NIR's
current-based LIF, sum pooling, elementwise scaling). Like the neurons, they take ``[T * B, ...]``
and get T from the neuron they hold, which :class:`~neuro_emu.layers.SpikingNetwork` sets. The
exporter maps each back to the node it came from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuro_emu.layers import LIF


class GainLIF(nn.Module):
    """A neuron fed ``x * gain + bias``: NIR's LIF/IF when ``r`` is not the value that makes the
    input gain 1, or ``v_leak`` is not 0 (see :mod:`neuro_emu.nir.export` for the equations).

    ``x: [T * B, ...] -> spikes [T * B, ...]``. The multiply is skipped when ``gain == 1`` and the
    add when ``bias == 0``, so each costs a rounding only where NIR asks for it.
    """

    def __init__(self, neuron: LIF, gain: float, bias: float = 0.0) -> None:
        super().__init__()
        self.neuron = neuron
        self.gain = float(gain)
        self.bias = float(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gain != 1.0:
            x = x * self.gain
        if self.bias != 0.0:
            x = x + self.bias
        return self.neuron(x)

    def extra_repr(self) -> str:
        return f"gain={self.gain}, bias={self.bias}"


class CubaLIF(nn.Module):
    """NIR's current-based LIF: a synaptic current filtered over time, feeding an LIF neuron.

    Per step, with ``I`` starting at 0 (snnTorch's ``Synaptic`` order: the membrane sees the
    current of the same step)::

        I[t] = alpha * I[t-1] + syn_gain * x[t]
        h    = beta * v + (gain * I[t] + bias)      # then spike and reset as the neuron does

    ``x: [T * B, ...] -> spikes [T * B, ...]``. The current runs as a torch loop over T (it has no
    fused kernel); the membrane runs on the neuron's backend. ``neuron.timesteps`` gives T.
    """

    def __init__(
        self, neuron: LIF, alpha: float, syn_gain: float = 1.0, gain: float = 1.0,
        bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.neuron = neuron
        self.alpha = float(alpha)
        self.syn_gain = float(syn_gain)
        self.gain = float(gain)
        self.bias = float(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.neuron.timesteps
        if not isinstance(steps, int) or steps < 1 or x.dim() < 1 or x.shape[0] % steps:
            raise ValueError(
                f"CubaLIF takes folded input [T * B, ...] with T = neuron.timesteps; got T = "
                f"{steps!r} and x of shape {tuple(x.shape)}: wrap the network in SpikingNetwork"
            )
        drive = x.unflatten(0, (steps, -1))
        if self.syn_gain != 1.0:
            drive = drive * self.syn_gain
        currents = torch.empty_like(drive)
        current = torch.zeros_like(drive[0])
        for t in range(steps):
            current = current * self.alpha + drive[t]
            currents[t] = current
        currents = currents.flatten(0, 1)
        if self.gain != 1.0:
            currents = currents * self.gain
        if self.bias != 0.0:
            currents = currents + self.bias
        return self.neuron(currents)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, syn_gain={self.syn_gain}, gain={self.gain}, bias={self.bias}"


class SumPool2d(nn.Module):
    """NIR's SumPool2d: the sum over each window, ``x: [N, C, H, W] -> [N, C, OH, OW]`` (average
    pooling with divisor 1, which keeps the sign that ``LPPool2d(1)`` would drop)."""

    def __init__(self, kernel_size: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, divisor_override=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Scale(nn.Module):
    """NIR's Scale: ``x * scale`` elementwise, ``scale`` of the per-sample shape ``[...]``."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


NEURON_MODULES = (LIF, GainLIF, CubaLIF)
LEAF_MODULES = (LIF, GainLIF, CubaLIF, SumPool2d, Scale)
