"""Lava's bit-accurate Dense -> fixed-point LIF pair as one event-driven Numba kernel.

The same function as ``neuro_emu.ops.loihi_lif.dense_input`` followed by ``loihi_lif`` (the
equations are in ``neuro_emu/ops/loihi_lif.py``), computed the way a CPU does it fastest:

- Weights are stored once as 8-bit mantissas, transposed to ``[n_in, n_out]``. After Lava's clip
  and truncation every weight is ``sign * (m << drop)``: ``drop = 8 - num_weight_bits`` (+1 for
  mixed signs) low bits are zero, and ``m`` fits uint8 (excitatory, or inhibitory with
  ``sign = -1``) or int8 (mixed). A 256 x 100k layer then takes 25.6 MB, which stays in the L3
  cache across steps, where int64 weights (205 MB) stream from memory every step. The sum of
  mantissas times ``sign << drop`` is the sum of the weights exactly.
- Only active inputs are read: step k adds the mantissa rows of the inputs that spiked at step
  k - 1 (Dense's one-step delay), in blocks of neurons that stay in cache, then runs the LIF update
  on the block. Parallel over neuron blocks; time runs inside each block (neurons are
  independent), so no step needs a barrier.

Integer arithmetic throughout (int64 sums), so the traces equal the spec's bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
import torch

from neuro_emu.reference.buffers import CACHE

_UV_LIMIT = np.int64(2**23)
# Neurons per block, at most: each active input's weight row is then read 4 KiB at a time (the
# rows stream from memory when the matrix outgrows L3), and the block's accumulator, u and v stay
# in L2. Measured on the 2-core VM, PreparedDenseLIF.run at fan-in 256: 1M neurons x 20 steps
# 42.3 / 32.6 / 34.7 / 36.9 ms with blocks of 1024 / 4096 / 8192 / 16384.
MAX_BLOCK = 4096


class Mantissas(NamedTuple):
    """Weights as the kernel reads them: ``weight = sign * (mantissa << drop)``."""

    mantissa: np.ndarray  # [n_in, n_out] uint8 (one sign) or int8 (mixed)
    sign: int  # +1, or -1 for inhibitory-only weights
    drop: int  # low bits Lava's truncation cleared


@numba.njit(parallel=True, cache=True)
def _transpose_mantissas(weights, low, high, drop, out):
    """out[i, o] = clip(weights[o, i], low, high) >> drop, tile by tile (the clip is Lava's
    8-bit magnitude clip, already on the sign-adjusted weights). weights: [n_out, n_in] int64
    (negated first for inhibitory weights); out: [n_in, n_out] uint8/int8."""
    n_out, n_in = weights.shape
    tile = 64
    for o0 in numba.prange((n_out + tile - 1) // tile):
        for i0 in range(0, n_in, tile):
            for i in range(i0, min(i0 + tile, n_in)):
                for o in range(o0 * tile, min(o0 * tile + tile, n_out)):
                    w = min(max(weights[o, i], low), high)
                    out[i, o] = w >> drop


def prepare(weights: torch.Tensor, mixed: bool, inhibitory: bool, drop: int) -> Mantissas:
    """Lava's clip and truncation of raw integer ``weights: [n_out, n_in]`` in the sign mode
    ``neuro_emu.loihi.lava_sign_mode`` gives (see ``neuro_emu.loihi.lava_weights``), as 8-bit
    mantissas ``[n_in, n_out]``."""
    w = weights.to(torch.int64)
    if inhibitory:
        w = -w
    out = np.empty((w.shape[1], w.shape[0]), np.int8 if mixed else np.uint8)
    _transpose_mantissas(w.numpy(), -256 if mixed else 0, 255, drop, out)
    return Mantissas(out, -1 if inhibitory else 1, drop)


@numba.njit(inline="always")
def _tdiv12(x):
    """x / 4096 rounded toward zero (Lava's sign(x) * (|x| >> 12)), without a branch: negative
    values get 4095 added before the floor shift."""
    return (x + ((x >> 63) & 4095)) >> 12


@numba.njit(inline="always")
def _wrap_int32(x):
    """x wrapped to 32-bit two's complement, as Lava's int32 arithmetic does."""
    return np.int64(np.int32(x))


@numba.njit(parallel=True, cache=True)
def _dense_lif(mantissa, scale, weight_exp, active, payload, step_start, u0, v0, du, dv, vth,
               bias, acc_blocks, u_out, v_out, s_out):
    """mantissa: [n_in, n_out]; scale: sign << drop; active, payload: the inputs active at each
    step and their payloads (None for binary spikes), step k's at [step_start[k],
    step_start[k+1]); u0 ... bias: [n_out] int64; acc_blocks: [blocks, block] scratch for the
    sums of mantissas, int32 where they provably fit (binary spikes: half the bytes per add of
    int64) else int64; u_out, v_out, s_out: [T, n_out] int32, written.

    The neuron update is branch-free (selects, min/max) so that LLVM vectorises it across the
    block's neurons."""
    steps, n_out = u_out.shape
    blocks, block = acc_blocks.shape
    for b in numba.prange(blocks):
        lo = b * block
        n = min(block, n_out - lo)
        acc = acc_blocks[b, :n]
        u, v = u0[lo:lo + n].copy(), v0[lo:lo + n].copy()
        u_decay, v_decay = 4095 - du[lo:lo + n], 4096 - dv[lo:lo + n]
        vth_eff, bias_b = vth[lo:lo + n] << 6, bias[lo:lo + n]
        for k in range(steps):
            acc[:] = 0
            if k > 0:  # Dense's delay: step k receives the spikes of step k - 1
                for j in range(step_start[k - 1], step_start[k]):
                    row = mantissa[active[j], lo:lo + n]
                    if payload is None:
                        for o in range(n):
                            acc[o] += row[o]
                    else:
                        p = payload[j]
                        for o in range(n):
                            acc[o] += p * np.int64(row[o])
            # The update as simple loops that each write one array: LLVM vectorises a loop
            # only when it can check at run time that its arrays do not overlap, and gives up
            # when there are too many pairs to check.
            for o in range(n):
                a = np.int64(acc[o]) * scale
                if payload is not None:  # graded: Lava's weights.dot(s_in) is int32
                    a = _wrap_int32(a)
                a = a << weight_exp if weight_exp >= 0 else a >> -weight_exp
                u_o = _wrap_int32(_tdiv12(u[o] * u_decay[o]) + _wrap_int32(a << 6))
                u[o] = u_o + np.int64(2) * _UV_LIMIT * ((u_o <= -_UV_LIMIT) - (u_o > _UV_LIMIT))
            for o in range(n):
                v_o = _wrap_int32(_tdiv12(v[o] * v_decay[o]) + u[o] + bias_b[o])
                v[o] = min(max(v_o, 1 - _UV_LIMIT), _UV_LIMIT - 1)
            s_k = s_out[k, lo:lo + n]
            for o in range(n):
                s_k[o] = v[o] > vth_eff[o]
            for o in range(n):
                v[o] = 0 if v[o] > vth_eff[o] else v[o]
            u_k = u_out[k, lo:lo + n]
            for o in range(n):
                u_k[o] = u[o]
            v_k = v_out[k, lo:lo + n]
            for o in range(n):
                v_k[o] = v[o]


def run(weights: Mantissas, in_spikes: torch.Tensor, weight_exp: int, graded: bool,
        u0: torch.Tensor, v0: torch.Tensor, du: torch.Tensor, dv: torch.Tensor,
        vth: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The traces ``u, v, s: [T, n_out]`` int32 of ``in_spikes: [T, n_in]`` (binary: any nonzero
    is a spike; graded: integer payloads) through prepared ``weights``; neuron parameters
    ``[n_out]`` int64 (bias already shifted by its exponent)."""
    steps, n_out = in_spikes.shape[0], weights.mantissa.shape[1]
    step_of, active = torch.nonzero(in_spikes, as_tuple=True)
    payload = in_spikes[step_of, active].to(torch.int64).numpy() if graded else None
    # Binary spikes: a sum of at most n_in mantissas below 256 fits int32 up to 2^23 inputs.
    wide = graded or weights.mantissa.shape[0] >= 2**23
    # Smaller blocks for small layers, so that every thread gets one.
    per_thread = -(-n_out // numba.get_num_threads())
    block = min(MAX_BLOCK, -(-per_thread // 64) * 64)
    acc_blocks = np.empty((-(-n_out // block), block), np.int64 if wide else np.int32)
    step_start = torch.zeros(steps + 1, dtype=torch.int64)
    step_start[1:] = torch.bincount(step_of, minlength=steps).cumsum(0)
    u, v, s = (CACHE.empty((steps, n_out), torch.int32) for _ in range(3))
    _dense_lif(
        weights.mantissa, weights.sign << weights.drop, weight_exp, active.numpy(), payload,
        step_start.numpy(), u0.numpy(), v0.numpy(), du.numpy(), dv.numpy(), vth.numpy(),
        bias.numpy(), acc_blocks, u.numpy(), v.numpy(), s.numpy(),
    )
    return u, v, s
