"""Numba twin of ``kernels/loihi_lif.py``: Lava's fixed-point CUBA LIF over T steps.

The equations are in ``neuro_emu/ops/loihi_lif.py``. Neurons are independent, so the loop runs
parallel over neurons with time inside, in int64 (``u * 4096`` reaches 2^43) with Lava's int32
wraps as casts (``np.int32`` truncates: two's complement).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

_UV_LIMIT = np.int64(2**23)


@numba.njit(inline="always")
def _tdiv12(x):
    """x / 4096 rounded toward zero (Lava's sign(x) * (|x| >> 12))."""
    return -((-x) >> 12) if x < 0 else x >> 12


@numba.njit(inline="always")
def _wrap_int32(x):
    """x wrapped to 32-bit two's complement, as Lava's int32 arithmetic does."""
    return np.int64(np.int32(x))


@numba.njit(parallel=True, cache=True)
def _loihi_lif(a_in, u0, v0, du, dv, vth, bias, u_out, v_out, s_out):
    steps, n = a_in.shape
    for i in numba.prange(n):
        u, v = u0[i], v0[i]
        u_decay, v_decay, vth_eff = 4096 - (du[i] + 1), 4096 - dv[i], vth[i] << 6
        for k in range(steps):
            u = _wrap_int32(_tdiv12(u * u_decay) + _wrap_int32(a_in[k, i] << 6))
            if u > _UV_LIMIT:
                u -= 2 * _UV_LIMIT
            elif u <= -_UV_LIMIT:
                u += 2 * _UV_LIMIT
            v = _wrap_int32(_tdiv12(v * v_decay) + u + bias[i])
            v = min(max(v, 1 - _UV_LIMIT), _UV_LIMIT - 1)
            spike = v > vth_eff
            if spike:
                v = 0
            u_out[k, i], v_out[k, i], s_out[k, i] = u, v, spike


def loihi_lif(a_in, u0, v0, du, dv, vth, bias):
    """a_in: [T, N] int64; the rest [N] int64 -> u, v, s traces [T, N] int32."""
    u, v, s = (torch.empty(a_in.shape, dtype=torch.int32) for _ in range(3))
    _loihi_lif(
        a_in.numpy(), u0.numpy(), v0.numpy(), du.numpy(), dv.numpy(), vth.numpy(),
        bias.numpy(), u.numpy(), v.numpy(), s.numpy(),
    )
    return u, v, s
