"""Numba twin of ``kernels/multistep_lif.py``: fused multi-step IF/LIF on the CPU.

Same equations, same float32 operations in the same order as the spec in
``neuro_emu/ops/multistep_lif.py`` (no fastmath, so no FMA contraction and no reassociation), hence
the same bits. Layout: neurons are cut into chunks of ``CHUNK`` lanes spread over the threads
(``prange``); a chunk walks time outermost with its membranes cache-resident, so each step reads one
contiguous run of ``x[t]`` and the inner loop over lanes vectorises (SIMD).

Every literal is a ``np.float32``: a bare ``1.0`` is float64 in Numba and would promote the math.
bfloat16 is read and written natively, as 16-bit patterns: widening is a shift, and narrowing rounds
to nearest even as torch does (a NaN becomes 0x7FC0, where torch's vectorised cast may keep other
NaN bits); float16 is widened to float32 by the launcher first.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

from neuro_emu.reference.buffers import CACHE

# Lanes per parallel task: 65536 float32 membranes (256 KiB) stay in L2 across the T steps. A sweep
# of 1024..65536 at [T=8, N=2^20] on the 2-core CPU gave 1.68, 1.36, 1.22, 1.18 ms: larger chunks
# pay the per-step loop set-up less often.
CHUNK = 65536

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


@numba.njit(inline="always")
def _surrogate_grad(u, surrogate, a, b):
    if surrogate == 0:  # atan
        au = u * a
        return b / (_ONE + au * au)
    if surrogate == 1:  # sigmoid
        sg = _ONE / (_ONE + np.exp(-(u * a)))
        return (sg * a) * (_ONE - sg)
    if surrogate == 2:  # triangle
        t = _ONE - abs(u) * a
        return t * a if t > _ZERO else _ZERO
    return a if abs(u) < b else _ZERO  # rectangle


@numba.njit(inline="always")
def _step(v, x, beta, v_th, v_reset, reset):
    """One neuron-step of the spec: returns (h, s, v_next)."""
    h = v * beta + x
    fire = h >= v_th
    s = _ONE if fire else _ZERO
    if reset == 0:
        return h, s, h - s * v_th
    if reset == 1:
        return h, s, v_reset if fire else h
    return h, s, h


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret a uint32 as float32 (Numba has no scalar ``view``); free after vectorising."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.uint32), codegen


@intrinsic
def _float32_as_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return types.uint32(types.float32), codegen


_BF16_ONE = np.int16(0x3F80)  # 1.0 in bfloat16


@numba.njit(inline="always")
def _load(row, i, bf16):
    """row[i] as float32; a bfloat16 row holds its 16-bit patterns as int16."""
    if bf16:
        return _bits_as_float32((np.uint32(row[i]) & np.uint32(0xFFFF)) << np.uint32(16))
    return row[i]


@numba.njit(inline="always")
def _store(row, i, value, bf16):
    """row[i] = value, rounded to nearest even for a bfloat16 row (NaN stays a quiet NaN)."""
    if bf16:
        bits = _float32_as_bits(value)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> 16
        row[i] = np.int16(0x7FC0) if value != value else np.int16(rounded)
    else:
        row[i] = value


@numba.njit(inline="always")
def _forward_chunk(x, out, v, lo, hi, beta, v_th, v_reset, reset, bf16, store_h):
    """Lanes lo..hi through all T steps; out[t] receives the spikes, or h when ``store_h``."""
    for t in range(x.shape[0]):
        x_t, out_t = x[t], out[t]
        for i in range(lo, hi):
            h, s, v[i] = _step(v[i], _load(x_t, i, bf16), beta, v_th, v_reset, reset)
            if store_h:
                out_t[i] = h
            elif bf16:
                out_t[i] = _BF16_ONE if s else np.int16(0)
            else:
                out_t[i] = s


# The mode flags are closure constants, so Numba folds their branches away and the lane loop stays
# branch-free and vectorised (a runtime flag there made it 2x slower); one compiled kernel per mode.
# Lane indices are unsigned on purpose: with a signed index Numba emits a negative-index wraparound
# check that LLVM cannot drop, and the loop does not vectorise (3x slower).
@functools.cache
def _fwd_kernel(reset: int, bf16: bool):
    @numba.njit(parallel=True, cache=True)
    def fwd(x, spikes, v, beta, v_th, v_reset):
        """x: [T, N] -> spikes: [T, N]; v: [N] holds v_init on entry, v_final on exit."""
        n = x.shape[1]
        for chunk in numba.prange((n + CHUNK - 1) // CHUNK):
            lo = np.uint64(chunk) * np.uint64(CHUNK)
            hi = min(lo + np.uint64(CHUNK), np.uint64(n))
            _forward_chunk(x, spikes, v, lo, hi, beta, v_th, v_reset, reset, bf16, False)

    return fwd


@functools.cache
def _bwd_kernel(reset: int, surrogate: int, detach_reset: bool, bf16: bool):
    @numba.njit(parallel=True, cache=True)
    def bwd(x, v, grad_s, h_scratch, grad_x, gv, beta, v_th, v_reset, a, b):
        """x, grad_s: [T, N] -> grad_x: [T, N]; v: [N] v_init (overwritten); gv: [N] holds the
        final membrane's gradient on entry and v_init's on exit; h_scratch: [T, N] float32
        (grad_x itself for float32).

        Per chunk: recompute h forward into h_scratch (still cache-hot for the way back), then
        BPTT in reverse time; each lane reads its h[t] before it writes grad_x[t]."""
        steps, n = x.shape
        for chunk in numba.prange((n + CHUNK - 1) // CHUNK):
            lo = np.uint64(chunk) * np.uint64(CHUNK)
            hi = min(lo + np.uint64(CHUNK), np.uint64(n))
            _forward_chunk(x, h_scratch, v, lo, hi, beta, v_th, v_reset, reset, bf16, True)
            for t in range(steps - 1, -1, -1):
                gs_t, gx_t = grad_s[t], grad_x[t]
                # float32: h lives in grad_x itself. One array, not two aliased ones, keeps the
                # loop vectorised (LLVM gives up on two pointers it finds overlapping: 5x slower).
                h_t = h_scratch[t] if bf16 else gx_t
                for i in range(lo, hi):
                    h = h_t[i]
                    g = _surrogate_grad(h - v_th, surrogate, a, b)
                    if reset == 0:
                        dv_dh = _ONE if detach_reset else _ONE - v_th * g
                    elif reset == 1:
                        not_s = _ZERO if h >= v_th else _ONE
                        dv_dh = not_s if detach_reset else not_s + (v_reset - h) * g
                    else:
                        dv_dh = _ONE
                    grad_h = _load(gs_t, i, bf16) * g + gv[i] * dv_dh
                    _store(gx_t, i, grad_h, bf16)
                    gv[i] = grad_h * beta

    return bwd


def _kernel_view(t: torch.Tensor) -> tuple[np.ndarray, bool]:
    """(numpy view of ``t`` for the kernels, whether it is bfloat16); float16 is widened first.
    Detached: under ``create_graph`` autograd hands the backward tensors that require grad."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy(), True
    if t.dtype == torch.float16:
        t = CACHE.empty(t.shape).copy_(t)
    return t.numpy(), False


def _membrane(n: int, v_init: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.float32) if v_init is None else v_init.detach().clone()


def multistep_lif_fwd(
    x: torch.Tensor, v_init: torch.Tensor | None, beta: float, v_th: float, v_reset: float,
    reset: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [T, N] contiguous, v_init: [N] float32 or None -> (spikes [T, N] in x.dtype,
    v_final [N] float32)."""
    x_np, bf16 = _kernel_view(x)
    out_dtype = torch.bfloat16 if bf16 else torch.float32
    spikes = CACHE.empty(x.shape, out_dtype)
    v = _membrane(x.shape[1], v_init)
    _fwd_kernel(reset, bf16)(
        x_np, _kernel_view(spikes)[0], v.numpy(), np.float32(beta), np.float32(v_th),
        np.float32(v_reset),
    )
    return spikes.to(x.dtype), v


def multistep_lif_bwd(
    grad_s: torch.Tensor, grad_v: torch.Tensor | None, x: torch.Tensor, v_init: torch.Tensor | None,
    beta: float, v_th: float, v_reset: float, reset: int, surrogate: int, sg_a: float, sg_b: float,
    detach_reset: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_s, x: [T, N], grad_v, v_init: [N] float32 or None -> (grad_x [T, N] in x.dtype,
    grad_v_init [N] float32)."""
    x_np, bf16 = _kernel_view(x)
    grad_x = CACHE.empty(x.shape, torch.bfloat16 if bf16 else torch.float32)
    h_scratch = CACHE.empty(x.shape) if bf16 else grad_x
    gv = _membrane(x.shape[1], grad_v)
    _bwd_kernel(reset, surrogate, detach_reset, bf16)(
        x_np, _membrane(x.shape[1], v_init).numpy(), _kernel_view(grad_s)[0], h_scratch.numpy(),
        _kernel_view(grad_x)[0], gv.numpy(), np.float32(beta), np.float32(v_th),
        np.float32(v_reset), np.float32(sg_a), np.float32(sg_b),
    )
    return grad_x.to(x.dtype), gv
