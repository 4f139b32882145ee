"""Convolution and linear layers over binary spikes: validation, dense path, one dispatcher each.

``spike_conv2d(spikes, weight, ...)`` is ``F.conv2d(spikes, weight, ...)`` and ``spike_linear`` is
``F.linear``, for inputs that are 0 or 1. The sparse backends do work only for the spikes present,
with additions only (``kernels/spike_conv.py``, ``reference/spike_conv.py`` say how).

Two modes, chosen by the weight's dtype:

- float: float32 or bfloat16 weight, float bias; float32 accumulation and float32 output.
- integer: int8 weight, integer bias with values in int32's range; int32 accumulation and int32
  output, exact on every backend whatever the order of the additions (the Loihi emulator rests on
  it). A sum beyond int32's range wraps around (modulo 2^32), alike on every backend, as an int32
  adder does.

The sparse backends add a weight only where a spike is, so a zero input contributes nothing even
against an inf or NaN weight, where the dense path's product ``0 * inf`` is NaN.

In float mode the backends sum the same terms in different orders. Every order obeys the classic
bound for a sum of ``k`` float32 terms: ``|computed - exact| <= gamma_k * sum(|terms|)`` with
``gamma_k = k * 2^-24 / (1 - k * 2^-24)``, where ``k`` counts the weights added into that output
(plus the bias). :func:`float_error_bound` computes it per output; the tests hold every backend to
it against a float64 reference.

Backends: ``"dense"`` (``F.conv2d`` / ``F.linear``; integer mode in float64, exact for int8
weights), ``"numba"`` (CPU), ``"triton"`` (CUDA, or Triton's interpreter with
``TRITON_INTERPRET=1``), ``"auto"`` (Triton on CUDA, Numba on CPU). The sparse backends return
the convolution output in channels-last memory format, their native layout. Only the dense path
has a backward: ``"auto"`` takes it whenever autograd needs one (grad mode on and an input that
requires grad), and a sparse backend named outright is then an error.
"""

from __future__ import annotations

import functools
import importlib
import numbers
from typing import Literal

import torch
import torch.nn.functional as F

from neuro_emu.ops.multistep_lif import backend_unavailable_reason
from neuro_emu.reference.buffers import CACHE

_KERNEL_MODULES = {
    "numba": "neuro_emu.reference.spike_conv",
    "triton": "neuro_emu.kernels.spike_conv",
}
_FLOAT_WEIGHTS = (torch.float32, torch.bfloat16)
_SPIKE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.bool,
                 torch.uint8, torch.int8, torch.int32, torch.int64)
SparseBackend = Literal["auto", "dense", "numba", "triton"]
IntPair = int | tuple[int, int]


def _mode(weight: torch.Tensor) -> str:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dtype in _FLOAT_WEIGHTS:
        return "float"
    if weight.dtype == torch.int8:
        return "int"
    raise TypeError(
        "weight must be float32 or bfloat16 (float mode) or int8 (integer mode), "
        f"got {weight.dtype}"
    )


def check_spikes(spikes: torch.Tensor, rank: int, check: bool) -> None:
    """Raise unless ``spikes`` is a tensor of rank ``rank`` whose values are all 0 or 1 (the value
    check, a pass over the input, runs only with ``check=True``)."""
    if not isinstance(spikes, torch.Tensor):
        raise TypeError(f"spikes must be a torch.Tensor, got {type(spikes).__name__}")
    if spikes.dim() != rank:
        layout = "[N, C, H, W]" if rank == 4 else "[N, F]"
        raise ValueError(
            f"spikes must be {layout} (fold T and batch into N), got {tuple(spikes.shape)}"
        )
    if spikes.dtype not in _SPIKE_DTYPES:
        raise TypeError(
            f"spikes must be a real or integer tensor of 0s and 1s, got {spikes.dtype}"
        )
    if check and spikes.dtype != torch.bool:
        # Nonzero values that are not 1 (NaN included), counted with one byte-sized temporary:
        # full-size float temporaries cost more in page faults than the comparisons themselves.
        raise_if_not_binary(
            int(torch.count_nonzero(spikes)) - int(torch.count_nonzero(spikes == 1)), spikes
        )


def raise_if_not_binary(not_binary: int, spikes: torch.Tensor) -> None:
    """The error for ``not_binary`` values of ``spikes`` that are neither 0 nor 1, if any."""
    if not_binary:
        raise ValueError(
            f"spikes must be binary (0 or 1): {not_binary} of {spikes.numel()} values are not "
            "(NaN included); pass check=False to skip this check"
        )


def _run_kernel(backend: str, name: str, spikes: torch.Tensor, check: bool, *args) -> None:
    """Run ``name`` of the backend's kernel module. The value check (``check``) runs inside the
    numba kernel's scan of the input where it can (no extra pass), else here, before."""
    kernel = importlib.import_module(_KERNEL_MODULES[backend])
    if check and backend == "numba" and spikes.dtype in kernel.CHECKS_IN_SCAN:
        raise_if_not_binary(getattr(kernel, name)(spikes, *args, check=True), spikes)
        return
    check_spikes(spikes, spikes.dim(), check)
    getattr(kernel, name)(spikes, *args)


def _check_bias(bias: torch.Tensor | None, mode: str, out_channels: int, device) -> None:
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor) or bias.shape != (out_channels,):
        shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"bias must be a tensor of shape ({out_channels},), got {shape}")
    if mode == "int" and (bias.dtype.is_floating_point or bias.dtype.is_complex):
        raise TypeError(f"integer mode (int8 weight) takes an integer bias, got {bias.dtype}")
    if mode == "float" and not bias.dtype.is_floating_point:
        raise TypeError(f"float mode takes a floating-point bias, got {bias.dtype}")
    if mode == "int" and bias.dtype == torch.int64 and bias.numel() and (
        int(bias.min()) < -(2**31) or int(bias.max()) >= 2**31
    ):
        raise ValueError("integer mode accumulates in int32: bias values must lie in "
                         f"[-2^31, 2^31 - 1], got {int(bias.min())} .. {int(bias.max())}")
    if bias.device != device:
        raise ValueError(f"bias is on {bias.device} but spikes are on {device}")


def _pair(value: IntPair, name: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int, or a pair (H, W) of ints; numpy integers too, as ``F.conv2d`` takes
    them) as a pair, each at least ``minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    )):
        raise TypeError(f"{name} must be an int or a pair of ints (H, W), got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value[0]), int(value[1])


def conv_geometry(
    stride: IntPair, padding: IntPair, dilation: IntPair, groups: int
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]:
    """``(stride, padding, dilation, groups)`` checked and as pairs: stride and dilation >= 1,
    padding >= 0, groups >= 1 (torch's shape-only checks let zero and negative values through)."""
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    return (_pair(stride, "stride", 1), _pair(padding, "padding", 0),
            _pair(dilation, "dilation", 1), int(groups))


def _resolve(backend: str, spikes: torch.Tensor, *tensors: torch.Tensor | None) -> str:
    """The backend to run; ``tensors``: the op's other inputs. Only the dense path has a backward,
    so "auto" takes it when autograd needs one, and a sparse backend is then an error."""
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (spikes, *tensors)
    )
    if backend == "dense":
        return backend
    if backend == "auto":
        preferred = "triton" if spikes.device.type == "cuda" else "numba"
        available = backend_unavailable_reason(preferred, spikes.device) is None
        return preferred if available and not needs_grad else "dense"
    if backend not in _KERNEL_MODULES:
        raise ValueError(f"backend must be 'auto', 'dense', 'numba' or 'triton', got {backend!r}")
    if needs_grad:
        raise RuntimeError(
            f"backend={backend!r} has no backward (the sparse backends serve inference) and an "
            "input requires grad: use backend='dense' or 'auto' to train through the op, or run "
            "it under torch.no_grad()"
        )
    reason = backend_unavailable_reason(backend, spikes.device)
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} is not available: {reason}")
    return backend


def _accumulator(shape: tuple[int, ...], mode: str, bias, device) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """The (uninitialised) output buffer and the row it starts from: ``bias`` shaped as the
    buffer's trailing dimensions, or zeros. The kernels initialise each sample's output right
    before scattering into it, while it is in cache (a separate fill pass costs a trip to memory
    over the whole output)."""
    dtype = torch.int32 if mode == "int" else torch.float32
    if device.type == "cpu":
        out = CACHE.empty(shape, dtype)
    else:
        out = torch.empty(shape, dtype=dtype, device=device)
    trailing = shape[-2:] if len(shape) == 5 else shape[-1:]
    init = (torch.zeros(trailing, dtype=dtype, device=device) if bias is None
            else bias.to(dtype).reshape(trailing).contiguous())
    return out, init


def spike_conv2d(
    spikes: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    backend: SparseBackend = "auto",
    check: bool = True,
) -> torch.Tensor:
    """``F.conv2d`` of binary spikes, by additions only on the sparse backends.

    Args:
        spikes: ``[N, C, H, W]`` of 0s and 1s (any real, bool or integer dtype); N may fold T and
            batch.
        weight: ``[O, C // groups, KH, KW]``, float32/bfloat16 (float mode) or int8 (integer mode).
        bias: ``[O]``, float (float mode) or integer (integer mode), or None.
        stride, padding, dilation, groups: as ``F.conv2d`` (ints or pairs; no string padding).
        backend: "auto", "dense", "numba" or "triton" (see the module docstring).
        check: verify that spikes are binary (the numba backend counts offenders during its
            own scan of a float32, uint8 or bool input; otherwise it is a pass over the input).
            False skips it, and then a non-binary input gives backend-dependent results (the
            sparse backends count any nonzero value as one spike, the dense one multiplies).

    Returns:
        ``[N, O, OH, OW]`` float32 (float mode) or int32 (integer mode).

    Raises:
        TypeError / ValueError: bad dtypes, ranks, shapes, geometry (torch's own messages), a
            non-binary input (with the count of offending values), mismatched devices.
        RuntimeError: the backend cannot run here (the message says why).
    """
    mode = _mode(weight)
    check_spikes(spikes, 4, check=False)  # the values: below, where the backend does it best
    stride, padding, dilation, groups = conv_geometry(stride, padding, dilation, groups)
    if weight.device != spikes.device:
        raise ValueError(f"weight is on {weight.device} but spikes are on {spikes.device}")
    out_shape = _conv_out_shape(spikes.shape, weight.shape, stride, padding, dilation, groups)
    _check_bias(bias, mode, weight.shape[0], spikes.device)
    backend = _resolve(backend, spikes, weight, bias)
    if backend == "dense" or spikes.numel() == 0:  # an empty input: torch's own result
        check_spikes(spikes, 4, check)
        return _dense(F.conv2d, spikes, weight, bias, mode, stride, padding, dilation, groups)
    n, out_channels, out_h, out_w = out_shape
    group_out = out_channels // groups
    bias = None if bias is None else bias.view(groups, group_out)
    out, init = _accumulator((n, out_h, out_w, groups, group_out), mode, bias, spikes.device)
    _run_kernel(backend, "spike_conv2d", spikes, check, _kernel_weight(weight, mode), out, init,
                stride, padding, dilation, groups)
    return out.view(n, out_h, out_w, out_channels).permute(0, 3, 1, 2)


def spike_linear(
    spikes: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    backend: SparseBackend = "auto",
    check: bool = True,
) -> torch.Tensor:
    """``F.linear`` of binary spikes ``[N, F]`` with ``weight: [O, F]``, by additions only on the
    sparse backends. Returns ``[N, O]`` float32 (float mode) or int32 (integer mode). Arguments
    and errors as :func:`spike_conv2d`."""
    mode = _mode(weight)
    if weight.dim() == 1:  # F.linear's vector weight: one output, returned without its axis
        if bias is not None:
            raise RuntimeError("mat2 must be a matrix, got 1-D tensor")  # torch's, for this case
        return spike_linear(spikes, weight[None], None, backend, check)[:, 0]
    check_spikes(spikes, 2, check=False)  # the values: below, as in spike_conv2d
    if weight.device != spikes.device:
        raise ValueError(f"weight is on {weight.device} but spikes are on {spikes.device}")
    _linear_out_shape(spikes.shape, weight.shape)
    _check_bias(bias, mode, weight.shape[0], spikes.device)
    backend = _resolve(backend, spikes, weight, bias)
    if backend == "dense" or spikes.numel() == 0:  # an empty input: torch's own result
        check_spikes(spikes, 2, check)
        return _dense(F.linear, spikes, weight, bias, mode)
    out, init = _accumulator((spikes.shape[0], weight.shape[0]), mode, bias, spikes.device)
    _run_kernel(backend, "spike_linear", spikes, check, _kernel_weight(weight, mode), out, init)
    return out


def _kernel_weight(weight: torch.Tensor, mode: str) -> torch.Tensor:
    """The weight as the kernels take it: contiguous float32 (float mode) or int8 (integer mode);
    each backend lays it out as it reads it (see the kernels). No copy when it already is."""
    return weight.to(torch.int8 if mode == "int" else torch.float32).contiguous()


# The shape checks below are remembered per geometry: torch's meta call costs 20 to 90 us
# (measured on two machines), against whole sparse calls from 0.1 ms (a linear layer on one
# sample) at 99% sparsity. lru_cache keeps no exception: an error is raised afresh every call.
@functools.lru_cache(maxsize=256)
def _conv_out_shape(spikes_shape: torch.Size, weight_shape: torch.Size, stride, padding, dilation,
                    groups) -> torch.Size:
    """``F.conv2d``'s output shape, after its CPU checks (in its words where it has them): torch
    checks the rest itself, on shape-only tensors, whose checks alone would let these through."""
    if len(weight_shape) != 4:
        raise ValueError(f"weight must be [O, C // groups, KH, KW], got {tuple(weight_shape)}")
    if weight_shape[0] == 0 or weight_shape[0] % groups:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} (and at least 1) "
            f"at dimension 0, but got weight of size {list(weight_shape)} instead"
        )
    if spikes_shape[1] != weight_shape[1] * groups:
        raise RuntimeError(
            f"expected input{list(spikes_shape)} to have {weight_shape[1] * groups} channels "
            f"(weight {list(weight_shape)}, groups={groups}), but got {spikes_shape[1]} channels "
            "instead"
        )
    if 0 in spikes_shape[2:] and spikes_shape[0] and spikes_shape[1]:
        raise RuntimeError("Only zero batch or zero channel inputs are supported, but got input "
                           f"shape: {list(spikes_shape)}")
    return F.conv2d(torch.empty(spikes_shape, device="meta"),
                    torch.empty(weight_shape, device="meta"), None, stride, padding, dilation,
                    groups).shape


@functools.lru_cache(maxsize=256)
def _linear_out_shape(spikes_shape: torch.Size, weight_shape: torch.Size) -> torch.Size:
    """``F.linear``'s output shape for a matrix weight, with its CPU error for a mismatch."""
    if len(weight_shape) != 2:
        raise ValueError(f"weight must be [O, F] (or [F]), got {tuple(weight_shape)}")
    if spikes_shape[1] != weight_shape[1]:
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({spikes_shape[0]}x{spikes_shape[1]} "
            f"and {weight_shape[1]}x{weight_shape[0]})"
        )
    return torch.Size((spikes_shape[0], weight_shape[0]))


def _dense(op, spikes, weight, bias, mode, *geometry) -> torch.Tensor:
    """The reference path: float32 for float mode; float64 for integer mode (exact: every sum of
    int8 weights over binary inputs is far below 2^53), returned as int32 through int64, which
    wraps a sum beyond int32 around as the int32 accumulators do (a direct cast saturates)."""
    dtype = torch.float64 if mode == "int" else torch.float32
    out = op(
        spikes.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), *geometry
    )
    return out.to(torch.int64).to(torch.int32) if mode == "int" else out


def float_error_bound(
    spikes: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, **conv
) -> torch.Tensor:
    """Per-output bound on a float32 result's error against the exact sum (module docstring):
    ``gamma_k * sum(|terms|)`` with ``k`` the number of terms. ``conv``: the geometry for a
    convolution (weight of rank 4), nothing for linear."""
    op = F.conv2d if weight.dim() == 4 else F.linear
    ones = torch.ones_like(weight, dtype=torch.float64)
    s = spikes.to(torch.float64)
    terms = op(s, ones, None, **conv) + (0 if bias is None else 1)
    magnitude = op(s, weight.to(torch.float64).abs(), None, **conv)
    if bias is not None:
        shape = (-1, 1, 1) if weight.dim() == 4 else (-1,)
        magnitude = magnitude + bias.to(torch.float64).abs().view(shape)
    unit = 2.0**-24
    return terms * unit / (1 - terms * unit) * magnitude
