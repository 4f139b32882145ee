"""A per-layer or per-channel constant factor, the weight that converted spikes carry."""

from __future__ import annotations

import torch
from torch import nn


class Scale(nn.Module):
    """``x: [N, C, ...] -> x * factor``, ``factor`` a scalar or one value per channel (dim 1).

    Conversion places it after an IF neuron whose threshold is lambda: a spike then carries the
    value lambda, as the QCFS activation it replaces does (NIR's ``Scale`` node).
    """

    def __init__(self, factor: torch.Tensor | float) -> None:
        super().__init__()
        factor = torch.as_tensor(factor, dtype=torch.float32).detach().clone()
        if factor.dim() > 1:
            raise ValueError(f"factor must be a scalar or [C], got shape {tuple(factor.shape)}")
        self.register_buffer("factor", factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor.dim() == 0:
            return x * self.factor
        return x * self.factor.view(-1, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        if self.factor.dim() == 0:
            return f"factor={self.factor.item():.6g}"
        return f"{self.factor.numel()} channels"
