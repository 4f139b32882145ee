"""Convolution and linear layers for spike trains ``[T, B, ...]`` that use the spike-sparse kernels
when the input is sparse enough for them to pay.

Training (grad enabled and the weights or the input requiring grad) always takes the dense path,
``F.conv2d`` / ``F.linear`` under autograd. Otherwise each call measures the input's sparsity
(stored in ``last_sparsity``) and runs :func:`neuro_emu.ops.spike_conv2d` /
:func:`~neuro_emu.ops.spike_linear` on the sparse backend at or above ``sparse_threshold``, dense
below it. The default threshold is the crossover that the benchmark measured on this project's
2-core CPU for the VGG 128-channel 16x16 layer (``bench/results/sparse_conv-*.md``): below it, the
dense convolution is faster. On other machines, measure yours with
``neuro-emu bench --suite sparse_conv`` and pass ``sparse_threshold``.
"""

from __future__ import annotations

import torch
from torch import nn

from neuro_emu.ops import spike_conv2d, spike_linear
from neuro_emu.ops.spike_conv import SparseBackend, check_spikes, raise_if_not_binary

# Crossover sparsity of the Numba path against torch's dense convolution, VGG 128@16x16, batch
# 32 x T 4, on the 2-core CPU: 78.0%, 78.2%, 76.6% and 78.5% in four runs at commit c127893
# (bench/results/sparse_conv-cpu-amd-epyc-2cores.md holds the last, where the other 3x3 layer
# shapes cross between 72.6% and 84.7%, the 1x1 stride-2 shortcuts between 92.8% and 95.0%).
DEFAULT_SPARSE_THRESHOLD = 0.78
# The same for the linear layer (VGG classifier 4096 -> 512, N = 128): 86.0% at commit da8d214, the
# only run of its tiled kernel (bench/results/sparse_conv-cpu-amd-epyc-avx2-2cores.md). On that
# AVX2-only VM the 3x3 stride-1 convolutions cross at 60% or below: there both defaults lean to the
# dense path and leave the sparse path's gain between the crossover and the threshold unused.
DEFAULT_LINEAR_SPARSE_THRESHOLD = 0.86
_SPARSE_WEIGHT_DTYPES = (torch.float32, torch.bfloat16)


class _SparseWhenItPays:
    """The dispatch shared by the two layers: dense under autograd or below the threshold."""

    backend: SparseBackend
    sparse_threshold: float
    check: bool
    folded: bool
    last_sparsity: float | None

    def _set_dispatch(self, backend: SparseBackend, sparse_threshold: float, check: bool,
                      folded: bool) -> None:
        if backend not in ("auto", "dense", "numba", "triton"):
            raise ValueError(
                f"backend must be 'auto', 'dense', 'numba' or 'triton', got {backend!r}"
            )
        if not (isinstance(sparse_threshold, (int, float)) and 0 <= sparse_threshold <= 1):
            raise ValueError(f"sparse_threshold must be in [0, 1], got {sparse_threshold!r}")
        self.backend, self.sparse_threshold, self.check = backend, sparse_threshold, check
        self.folded = folded
        self.last_sparsity = None

    def _use_sparse(self, flat: torch.Tensor, rank: int) -> bool:
        check_spikes(flat, rank, check=False)
        nonzero = int(torch.count_nonzero(flat))
        if self.check and flat.dtype != torch.bool:  # one pass fewer than check_spikes's
            raise_if_not_binary(nonzero - int(torch.count_nonzero(flat == 1)), flat)
        if torch.is_grad_enabled() and (flat.requires_grad or any(
            p.requires_grad for p in self.parameters(recurse=False)
        )):
            self.last_sparsity = None
            return False
        self.last_sparsity = 1.0 - nonzero / max(flat.numel(), 1)
        # The sparse kernels take float32/bfloat16 weights (a float64 or float16 layer stays dense).
        return (self.backend != "dense" and self.weight.dtype in _SPARSE_WEIGHT_DTYPES
                and self.last_sparsity >= self.sparse_threshold)

    def _dispatch(self, flat: torch.Tensor, rank: int, sparse_op, dense_forward) -> torch.Tensor:
        """The layer's output on ``flat`` in the weight's dtype, whichever path computes it (the
        sparse ops return float32; the dense op needs the spikes in the weight's dtype)."""
        if self._use_sparse(flat, rank):
            return sparse_op().to(self.weight.dtype)
        return dense_forward(flat.to(self.weight.dtype))


def _time_batch_check(x: torch.Tensor, rank: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != rank:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected spikes {layout}, got {got}")


class SpikingConv2d(nn.Conv2d, _SparseWhenItPays):
    """``nn.Conv2d`` over spikes ``x: [T, B, C, H, W] -> [T, B, O, OH, OW]``, or with ``folded``
    over ``[T * B, C, H, W]`` (time folded into the batch, as inside a SpikingNetwork).

    Args beyond ``nn.Conv2d``'s: ``backend`` for the sparse path ("auto", "numba", "triton"; or
    "dense" to never use it), ``sparse_threshold`` (sparsity from which the sparse path runs),
    ``check`` (verify the input is binary; a pass over it), ``folded``. Padding must be numeric
    (no "same"), padding_mode "zeros".
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        backend: SparseBackend = "auto",
        sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD,
        check: bool = True,
        folded: bool = False,
    ) -> None:
        if isinstance(padding, str):
            raise TypeError(f"padding must be an int or a pair of ints, got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias)
        self._set_dispatch(backend, sparse_threshold, check, folded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _time_batch_check(x, 4 if self.folded else 5,
                          "[T * B, C, H, W]" if self.folded else "[T, B, C, H, W]")
        flat = x if self.folded else x.flatten(0, 1)
        out = self._dispatch(flat, 4, lambda: spike_conv2d(
            flat, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
            backend=self.backend, check=False,
        ), super().forward)
        return out if self.folded else out.unflatten(0, x.shape[:2])


class SpikingLinear(nn.Linear, _SparseWhenItPays):
    """``nn.Linear`` over spikes ``x: [T, B, F] -> [T, B, O]`` (``[T * B, F]`` with ``folded``);
    arguments as :class:`SpikingConv2d`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        backend: SparseBackend = "auto",
        sparse_threshold: float = DEFAULT_LINEAR_SPARSE_THRESHOLD,
        check: bool = True,
        folded: bool = False,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self._set_dispatch(backend, sparse_threshold, check, folded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _time_batch_check(x, 2 if self.folded else 3, "[T * B, F]" if self.folded else "[T, B, F]")
        flat = x if self.folded else x.flatten(0, 1)
        out = self._dispatch(flat, 2, lambda: spike_linear(
            flat, self.weight, self.bias, backend=self.backend, check=False,
        ), super().forward)
        return out if self.folded else out.unflatten(0, x.shape[:2])
