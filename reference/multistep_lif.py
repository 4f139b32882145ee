"""Numba twin of ``kernels/multistep_lif.py``: fused multi-step IF/LIF on the CPU.

Same equations, same float32 operations in the same order as the spec in
``neuro_emu/ops/multistep_lif.py`` (no fastmath, so no FMA contraction and no reassociation), hence
the same bits. Layout: neurons are cut into chunks of ``CHUNK`` lanes spread over the threads
(``prange``); a chunk keeps its membranes in a small local array and walks time outermost, so each
step reads one contiguous row ``x[t, lo:hi]`` and the inner loop over lanes vectorises (SIMD).

Every literal is a ``np.float32``: a bare ``1.0`` is float64 in Numba and would promote the math.
16-bit inputs are widened to float32 by the launcher first (Numba has no bfloat16).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch

# Lanes per parallel task: 2048 float32 membranes (8 KiB) stay in L1 with room for the x/s rows;
# chosen by a sweep of 512..16384 at [T=8, N=2^20] on the 2-core CPU (flat from 1024 to 4096).
CHUNK = 2048

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


# The mode flags are closure constants, so Numba folds their branches away and the lane loop stays
# branch-free and vectorised (a runtime flag there made it 2x slower); one compiled kernel per mode.
@functools.cache
def _fwd_kernel(reset: int, save_h: bool):
    @numba.njit(parallel=True, cache=True)
    def fwd(x, v_init, spikes, h_out, v_out, beta, v_th, v_reset):
        steps, n = x.shape
        for chunk in numba.prange((n + CHUNK - 1) // CHUNK):
            lo = chunk * CHUNK
            hi = min(lo + CHUNK, n)
            v = v_init[lo:hi].copy()  # [width]
            for t in range(steps):
                x_t, s_t, h_t = x[t, lo:hi], spikes[t, lo:hi], h_out[t, lo:hi]
                for i in range(hi - lo):
                    h = v[i] * beta + x_t[i]
                    fire = h >= v_th
                    s = _ONE if fire else _ZERO
                    s_t[i] = s
                    if save_h:
                        h_t[i] = h
                    if reset == 0:
                        v[i] = h - s * v_th
                    elif reset == 1:
                        v[i] = v_reset if fire else h
                    else:
                        v[i] = h
            v_out[lo:hi] = v

    return fwd


@functools.cache
def _bwd_kernel(reset: int, surrogate: int, detach_reset: bool):
    @numba.njit(parallel=True, cache=True)
    def bwd(grad_s, grad_v, h_in, grad_x, grad_v_init, beta, v_th, v_reset, a, b):
        steps, n = h_in.shape
        for chunk in numba.prange((n + CHUNK - 1) // CHUNK):
            lo = chunk * CHUNK
            hi = min(lo + CHUNK, n)
            gv = grad_v[lo:hi].copy()  # [width], grad of the membrane after step t
            for t in range(steps - 1, -1, -1):
                h_t, gs_t, gx_t = h_in[t, lo:hi], grad_s[t, lo:hi], grad_x[t, lo:hi]
                for i in range(hi - lo):
                    h = h_t[i]
                    g = _surrogate_grad(h - v_th, surrogate, a, b)
                    if reset == 0:
                        dv_dh = _ONE if detach_reset else _ONE - v_th * g
                    elif reset == 1:
                        not_s = _ZERO if h >= v_th else _ONE
                        dv_dh = not_s if detach_reset else not_s + (v_reset - h) * g
                    else:
                        dv_dh = _ONE
                    grad_h = gs_t[i] * g + gv[i] * dv_dh
                    gx_t[i] = grad_h
                    gv[i] = grad_h * beta
            grad_v_init[lo:hi] = gv

    return bwd


def multistep_lif_fwd(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    beta: float,
    v_th: float,
    v_reset: float,
    reset: int,
    save_h: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: [T, N] contiguous, v_init: [N] float32 or None -> (spikes [T, N] in x.dtype,
    v_final [N] float32, h [T, N] in x.dtype if save_h else an empty [0])."""
    x32 = x.float()
    steps, n = x32.shape
    spikes = torch.empty_like(x32)
    h = torch.empty_like(x32) if save_h else torch.empty((steps, 0))
    v_final = torch.empty(n, dtype=torch.float32)
    v0 = torch.zeros(n, dtype=torch.float32) if v_init is None else v_init
    _fwd_kernel(reset, save_h)(
        x32.numpy(), v0.numpy(), spikes.numpy(), h.numpy(), v_final.numpy(),
        np.float32(beta), np.float32(v_th), np.float32(v_reset),
    )
    h = h.to(x.dtype) if save_h else x.new_empty(0)
    return spikes.to(x.dtype), v_final, h


def multistep_lif_bwd(
    grad_s: torch.Tensor,
    grad_v: torch.Tensor | None,
    h: torch.Tensor,
    beta: float,
    v_th: float,
    v_reset: float,
    reset: int,
    surrogate: int,
    sg_a: float,
    sg_b: float,
    detach_reset: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_s, h: [T, N] in x.dtype, grad_v: [N] float32 or None -> (grad_x [T, N] in x.dtype,
    grad_v_init [N] float32)."""
    h32 = h.float()
    grad_x = torch.empty_like(h32)
    grad_v_init = torch.empty(h32.shape[1], dtype=torch.float32)
    gv = torch.zeros_like(grad_v_init) if grad_v is None else grad_v
    _bwd_kernel(reset, surrogate, detach_reset)(
        grad_s.float().numpy(), gv.numpy(), h32.numpy(), grad_x.numpy(), grad_v_init.numpy(),
        np.float32(beta), np.float32(v_th), np.float32(v_reset), np.float32(sg_a), np.float32(sg_b),
    )
    return grad_x.to(h.dtype), grad_v_init
