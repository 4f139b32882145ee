"""A whole spiking network on folded time: the image repeated over T steps, the output averaged.

Inside a :class:`SpikingNetwork` every tensor is ``[T * B, ...]``: convolutions, BatchNorm,
pooling, residual additions and the classifier are the plain torch modules of the ANN, run once on
all T steps at a time, and only the neurons (``LIF`` / ``IF`` in ``step_mode="folded"``) unfold
time to integrate it. A trained ANN, a converted one and a directly trained SNN therefore share one
module structure (and one torch.fx graph), which conversion, NIR export and conformance rely on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from neuro_emu.layers.neurons import LIF
from neuro_emu.ops.multistep_lif import Backend


@dataclass
class SpikeCounts:
    """Spikes and neuron-steps counted per neuron layer while recording (tensors on the model's
    device, summed without a host sync until read)."""

    spikes: dict[str, torch.Tensor]
    steps: dict[str, int]

    def rates(self) -> dict[str, float]:
        """Firing rate per layer: spikes / neuron-steps, in [0, 1]."""
        return {name: float(self.spikes[name]) / self.steps[name] for name in self.spikes if
                self.steps[name]}

    def overall(self) -> float:
        """Spikes over neuron-steps of all layers together (0.0 before any forward)."""
        total = sum(self.steps.values())
        return float(sum(float(s) for s in self.spikes.values())) / total if total else 0.0


class SpikingNetwork(nn.Module):
    """Runs ``body`` on ``x: [B, ...]`` repeated over ``timesteps`` steps (direct encoding) and
    returns the mean over time of its output: ``[B, ...] -> [B, K]``.

    ``body`` sees ``[T * B, ...]`` (step t of sample b at row ``t * B + b``); its neurons must be
    ``LIF``/``IF`` in folded mode, and their ``timesteps`` follow this module's.
    """

    def __init__(self, body: nn.Module, timesteps: int) -> None:
        super().__init__()
        self.body = body
        self.timesteps = timesteps

    @property
    def timesteps(self) -> int:
        return self._timesteps

    @timesteps.setter
    def timesteps(self, steps: int) -> None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"timesteps must be an int >= 1, got {steps!r}")
        self._timesteps = steps
        self._give_neurons_timesteps()

    def _give_neurons_timesteps(self) -> None:
        for _, neuron in self.neurons():
            if neuron.step_mode != "folded":
                raise ValueError(
                    f"neurons inside a SpikingNetwork run in step_mode='folded', and "
                    f"{type(neuron).__name__} has {neuron.step_mode!r}"
                )
            neuron.timesteps = self._timesteps

    def neurons(self) -> Iterator[tuple[str, LIF]]:
        """``(qualified name, module)`` of every LIF/IF neuron layer, in registration order."""
        for name, module in self.body.named_modules():
            if isinstance(module, LIF):
                yield name, module

    def set_backend(self, backend: Backend) -> None:
        """Run every neuron layer on ``backend`` ("auto", "torch", "numba" or "triton")."""
        for _, neuron in self.neurons():
            neuron.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, ...] -> the output averaged over T, [B, ...]."""
        # Again at every call: a body shared with another SpikingNetwork (at another T), or
        # changed after wrapping, would otherwise fold batch and time together silently.
        self._give_neurons_timesteps()
        steps = self.timesteps
        folded = x.unsqueeze(0).expand(steps, *x.shape).reshape(steps * x.shape[0], *x.shape[1:])
        out = self.body(folded)
        return out.unflatten(0, (steps, x.shape[0])).mean(0)

    @contextmanager
    def record_spikes(self) -> Iterator[SpikeCounts]:
        """Count spikes per neuron layer over the forwards run inside the ``with`` block."""
        counts = SpikeCounts(spikes={}, steps={})
        handles = []
        for name, neuron in self.neurons():
            counts.spikes[name] = torch.zeros((), dtype=torch.float64)
            counts.steps[name] = 0

            def hook(_module, _inputs, spikes, name=name) -> None:
                total = spikes.detach().sum(dtype=torch.float64)
                counts.spikes[name] = counts.spikes[name].to(total.device) + total
                counts.steps[name] += spikes.numel()

            handles.append(neuron.register_forward_hook(hook))
        try:
            yield counts
        finally:
            for handle in handles:
                handle.remove()
