"""IF and LIF neuron layers over the fused multi-step op.

Multi-step mode (the default) takes ``x: [T, B, ...]`` and runs all T steps in one kernel call;
each call starts from ``v_init`` (rest, 0, unless given), so batches never leak state into each
other and no reset is needed between them. Folded mode is multi-step on ``x: [T * B, ...]``, time
folded into the batch the way convolutions and BatchNorm see it, with T in ``self.timesteps``
(set by :class:`neuro_emu.layers.SpikingNetwork`): whole networks then run on folded tensors and
only the neurons look at time. Single-step mode takes ``x: [B, ...]`` for one time step
and carries the membrane in ``self.v`` from call to call, for users who loop over time themselves;
call :meth:`reset_state` between sequences. Both modes give the same spikes, bit for bit.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from neuro_emu.ops import lif_params, multistep_lif
from neuro_emu.ops.multistep_lif import BACKENDS, Backend
from neuro_emu.ops.surrogate import as_float32

StepMode = Literal["multi", "single", "folded"]


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons: ``h = v * beta + x[t]``, spike ``h >= v_th``, then reset.

    Args:
        tau: membrane time constant in steps (``beta = 1 - 1/tau``; tau = 2 gives beta = 0.5).
        beta: the decay directly; give tau or beta, not both.
        v_th: firing threshold (> 0).
        reset: "subtract" (soft), "zero" (to ``v_reset``) or "none".
        v_reset: membrane after a spike for reset="zero".
        v_init: membrane at the start of every multi-step call (QCFS conversion uses v_th / 2).
        surrogate, alpha: backward surrogate of the spike ("atan", "sigmoid", "triangle",
            "rectangle") and its sharpness.
        detach_reset: drop the reset from the gradient.
        backend: "auto" (Triton on CUDA, Numba on CPU), "torch", "numba" or "triton".
        step_mode: "multi" (``x: [T, B, ...]``) or "single" (``x: [B, ...]``, one step per call).

    After a call, ``self.v`` holds the final membrane ``[B, ...]`` (float32, detached in
    multi-step mode, part of the graph in single-step mode).
    """

    def __init__(
        self,
        tau: float | None = None,
        *,
        beta: float | None = None,
        v_th: float = 1.0,
        reset: str = "subtract",
        v_reset: float = 0.0,
        v_init: float = 0.0,
        surrogate: str = "atan",
        alpha: float = 2.0,
        detach_reset: bool = False,
        backend: Backend = "auto",
        step_mode: StepMode = "multi",
        timesteps: int | None = None,
    ) -> None:
        super().__init__()
        if (tau is None) == (beta is None):
            raise ValueError(f"give exactly one of tau or beta, got tau={tau!r}, beta={beta!r}")
        if tau is not None:
            if not (isinstance(tau, (int, float)) and tau >= 1):
                raise ValueError(f"tau must be a number >= 1 (in time steps), got {tau!r}")
            beta = 1.0 - 1.0 / tau
        if step_mode not in ("multi", "single", "folded"):
            raise ValueError(f"step_mode must be 'multi', 'single' or 'folded', got {step_mode!r}")
        self.kwargs = dict(
            beta=beta, v_th=v_th, reset=reset, v_reset=v_reset, surrogate=surrogate,
            alpha=alpha, detach_reset=detach_reset,
        )
        lif_params(**self.kwargs)  # fail at construction, not at the first forward
        if not (isinstance(v_init, (int, float)) and math.isfinite(as_float32(v_init))):
            raise ValueError(f"v_init must be a finite float32 number, got {v_init!r}")
        if backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
        if timesteps is not None and not _is_count(timesteps):
            raise ValueError(f"timesteps must be None or an int >= 1, got {timesteps!r}")
        self.v_init = float(v_init)
        self.backend = backend
        self.step_mode = step_mode
        self.timesteps = timesteps
        self.v: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        # Single-step mode carries a membrane that is part of the caller's autograd graph, which
        # deepcopy and pickle refuse: a copy carries it detached.
        state = self.__dict__.copy()
        if state.get("v") is not None:
            state["v"] = state["v"].detach()
        return state

    def reset_state(self) -> None:
        """Forget the membrane: the next single-step call starts from ``v_init``."""
        self.v = None

    def _initial_membrane(self, shape: tuple[int, ...], device) -> torch.Tensor | None:
        if self.v_init == 0.0:
            return None
        return torch.full(shape, self.v_init, dtype=torch.float32, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, B, ...] (multi), [T * B, ...] (folded) or [B, ...] (single) -> spikes of the
        same shape and dtype."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} takes a torch.Tensor, got {type(x).__name__}")
        if self.step_mode == "folded":
            steps = self.timesteps
            if not _is_count(steps):
                raise ValueError(
                    f"{type(self).__name__} in folded mode needs timesteps (T >= 1), got {steps!r}:"
                    " wrap the network in SpikingNetwork or set .timesteps"
                )
            if x.dim() < 1 or x.shape[0] % steps:
                raise ValueError(
                    f"folded input {tuple(x.shape)} does not split into T = {steps} steps: its "
                    "first dimension must be T * B"
                )
            x = x.unflatten(0, (steps, -1))
            spikes, v = multistep_lif(
                x, self._initial_membrane(x.shape[1:], x.device), **self.kwargs,
                backend=self.backend, return_state=True,
            )
            self.v = v.detach()
            return spikes.flatten(0, 1)
        if self.step_mode == "multi":
            if x.dim() < 2:
                raise ValueError(
                    f"{type(self).__name__} in multi-step mode takes x: [T, B, ...], got "
                    f"{tuple(x.shape)}; use step_mode='single' for one step [B, ...]"
                )
            spikes, v = multistep_lif(
                x, self._initial_membrane(x.shape[1:], x.device), **self.kwargs,
                backend=self.backend, return_state=True,
            )
            self.v = v.detach()
            return spikes
        if self.v is not None and self.v.shape != x.shape:
            raise ValueError(
                f"single-step input {tuple(x.shape)} does not match the carried membrane "
                f"{tuple(self.v.shape)}; call reset_state() between sequences"
            )
        v = self._initial_membrane(x.shape, x.device) if self.v is None else self.v
        spikes, self.v = multistep_lif(
            x.unsqueeze(0), v, **self.kwargs, backend=self.backend, return_state=True
        )
        return spikes.squeeze(0)

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        mode = self.step_mode
        if mode == "folded":
            mode += f", timesteps={self.timesteps}"
        return f"{params}, v_init={self.v_init}, backend={self.backend}, step_mode={mode}"


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class IF(LIF):
    """Integrate-and-fire neurons: :class:`LIF` with ``beta = 1`` (no leak)."""

    def __init__(self, **kwargs) -> None:
        if "tau" in kwargs or "beta" in kwargs:
            raise ValueError("IF has no leak (beta = 1); use LIF for tau or beta")
        super().__init__(beta=1.0, **kwargs)
