"""Lava's fixed-point CUBA LIF in Triton: one launch for all T steps, state in int64 registers.

Equations in ``neuro_emu/ops/loihi_lif.py``. Each program owns ``BLOCK`` neurons; per step it reads
one row of ``a_in`` and writes one row each of the u, v and s traces. Integer arithmetic only, so
the result is exact and identical to the Numba twin whatever the hardware.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from neuro_emu.kernels.launch import device_of

# An integer elementwise stream, like the float neuron kernel's. Not tuned on a GPU (none so far).
BLOCK = 1024
NUM_WARPS = 4
UV_LIMIT = 2**23


@triton.jit
def _tdiv12(x):
    """x / 4096 rounded toward zero."""
    return tl.where(x < 0, -((-x) >> 12), x >> 12)


@triton.jit
def _wrap_int32(x):
    """int64 x wrapped to 32-bit two's complement, as Lava's int32 arithmetic does."""
    return x.to(tl.int32).to(tl.int64)


@triton.jit
def _loihi_lif_kernel(
    a_ptr, u0_ptr, v0_ptr, du_ptr, dv_ptr, vth_ptr, bias_ptr, u_ptr, v_ptr, s_ptr,
    T, N, UV_LIMIT: tl.constexpr, BLOCK: tl.constexpr,
):
    i_n = tl.program_id(0)
    o_n = i_n.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] int64
    m_n = o_n < N
    b_u = tl.load(u0_ptr + o_n, mask=m_n, other=0)  # [BLOCK] int64
    b_v = tl.load(v0_ptr + o_n, mask=m_n, other=0)
    b_u_decay = 4096 - (tl.load(du_ptr + o_n, mask=m_n, other=0) + 1)
    b_v_decay = 4096 - tl.load(dv_ptr + o_n, mask=m_n, other=0)
    b_vth = tl.load(vth_ptr + o_n, mask=m_n, other=0) << 6
    b_bias = tl.load(bias_ptr + o_n, mask=m_n, other=0)
    o_tn = o_n
    for _ in range(T):
        b_a = tl.load(a_ptr + o_tn, mask=m_n, other=0)
        b_u = _wrap_int32(_tdiv12(b_u * b_u_decay) + _wrap_int32(b_a << 6))
        b_u = tl.where(b_u > UV_LIMIT, b_u - 2 * UV_LIMIT,
                       tl.where(b_u <= -UV_LIMIT, b_u + 2 * UV_LIMIT, b_u))
        b_v = _wrap_int32(_tdiv12(b_v * b_v_decay) + b_u + b_bias)
        b_v = tl.minimum(tl.maximum(b_v, 1 - UV_LIMIT), UV_LIMIT - 1)
        b_s = b_v > b_vth
        b_v = tl.where(b_s, 0, b_v)
        tl.store(u_ptr + o_tn, b_u.to(tl.int32), mask=m_n)
        tl.store(v_ptr + o_tn, b_v.to(tl.int32), mask=m_n)
        tl.store(s_ptr + o_tn, b_s.to(tl.int32), mask=m_n)
        o_tn += N


def loihi_lif(a_in, u0, v0, du, dv, vth, bias):
    """a_in: [T, N] int64 contiguous; the rest [N] int64 -> u, v, s traces [T, N] int32."""
    steps, n = a_in.shape
    u, v, s = (torch.empty(a_in.shape, dtype=torch.int32, device=a_in.device) for _ in range(3))
    if n == 0 or steps == 0:
        return u, v, s
    with device_of(a_in):
        _loihi_lif_kernel[(triton.cdiv(n, BLOCK),)](
            a_in, u0, v0, du, dv, vth, bias, u, v, s, steps, n,
            UV_LIMIT=UV_LIMIT, BLOCK=BLOCK, num_warps=NUM_WARPS,
        )
    return u, v, s
