"""Loihi Conv synapses, exact in integers: what a Conv process delivers to its LIF each step.

Per step ``k``, for ``in_spikes: [T, C_in, H, W]`` and ``weights: [C_out, C_in // groups, KH, KW]``
(torch's layout and torch's cross-correlation, not Lava's flipped convolution; see below)::

    acc[k] = conv2d(p[k], W', stride, padding, dilation, groups)   # exact, int64
    p[k]   = in_spikes[k] != 0          (binary, num_message_bits == 0)
           = in_spikes[k]               (graded payloads, num_message_bits > 0)
    a_in[k] = out(acc[k - 1]),  a_in[0] = 0                          # the one-step synaptic delay

Two weight handlings, because Lava 0.10.0's Conv does not do what its own Dense does:

- ``"loihi"`` (default): the weights and output of Lava's bit-accurate Dense/Sparse
  (``../shared/loihi2_spec.md`` section 3), applied to the convolution's connectivity.
  ``W' = lava_weights(weights, num_weight_bits)`` (sign mode, clip to 8 bits of magnitude,
  truncation to ``num_weight_bits``) and ``out(acc) = acc << weight_exp`` (a floor shift right
  when negative; graded sums wrap to int32 first, as Dense's). Like Dense, no clamp of ``acc`` to
  24 bits. It is the issue's "Conv synapses with the same weight handling" and is checked against
  Lava's Dense run on the convolution matrix (``tests/golden/lava_conv_lif.npz``).
- ``"lava_conv"``: exactly Lava 0.10.0's ``PyConvModelFixed`` (``lava/proc/conv/models.py``).
  Its ``run_spk`` never reads ``weight_exp`` or ``num_weight_bits`` (they are declared only), so
  ``W'`` is the raw weights and ``out(acc) = signed_clamp(acc, 24)``, which despite its name
  WRAPS: ``((acc + 2^23) mod 2^24) - 2^23`` (``lava/proc/conv/utils.py``). Lava casts the float64
  sum to int32 first, so this mode matches it while ``|acc| < 2^31``. Use it to reproduce a
  Lava Conv network; ``weight_exp`` and ``num_weight_bits`` are accepted and, as in Lava, have no
  effect.

Lava's layouts, mapped here once: its Conv takes input ``(X, Y, C)`` = our ``[C, H, W]``
transposed, and weights ``(C_out, KX, KY, C_in / groups)`` applied as a true convolution
(``scipy.signal.convolve2d`` flips the kernel). So Lava's ``w_lava`` is our
``w_lava[:, ::-1, ::-1, :].transpose(0, 3, 2, 1)``, and its (X, Y) stride/padding/dilation pairs
are our (W, H) ones reversed.

Backends compute the same integers by different routes: ``"torch"`` runs ``F.conv2d`` once in
float64 (exact: the sum is bounded below 2^40, far inside float64's 53 bits, and rounded, so even a
Winograd or FFT algorithm cannot move it off the integer); ``"numba"`` and ``"triton"`` run
:func:`neuro_emu.ops.spike_conv2d` in its exact integer mode (binary spikes, int8 weights, int32
sums), with the weights split into 7-bit digits ``w = sum_j d_j 2^(7j)`` (two for Loihi's
[-256, 255]) and graded payloads split into bit planes, recombined in int64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from neuro_emu.ops.loihi_lif import (
    NUM_WEIGHT_BITS_RANGE,
    WEIGHT_EXP_RANGE,
    check_int_param,
    wrap_int32,
)
from neuro_emu.ops.multistep_lif import backend_unavailable_reason
from neuro_emu.ops.spike_conv import IntPair, conv_geometry, spike_conv2d

WEIGHT_HANDLINGS = ("loihi", "lava_conv")
BACKENDS = ("torch", "numba", "triton")
ACC_BITS = 24  # Lava Conv's a_buf: int32, precision 24
FLOAT64_EXACT_BOUND = 2**40  # leaves 2^12 of float64's 2^53 for any algorithm's rounding


def _check_int_tensor(t: torch.Tensor, name: str, rank: int, layout: str, bool_ok: bool) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype.is_complex or (t.dtype == torch.bool and not bool_ok):
        raise TypeError(f"{name} must hold integers, got {t.dtype}")


def _int8_digits(weights: torch.Tensor) -> list[torch.Tensor]:
    """int8 tensors ``d_j`` with ``weights == sum_j d_j << 7j`` (all but the last in [0, 127])."""
    digits, rest = [], weights.to(torch.int64)
    while int(rest.min()) < -128 or int(rest.max()) > 127:
        digits.append((rest & 127).to(torch.int8))
        rest = rest >> 7  # floor: the low digit stays non-negative
    digits.append(rest.to(torch.int8))
    return digits


def _bit_planes(payload: torch.Tensor, graded: bool) -> list[tuple[int, int, torch.Tensor]]:
    """``(sign, shift, plane)`` with ``payload == sum sign * (plane << shift)``, planes boolean."""
    if not graded:
        return [(1, 0, payload != 0)]
    p = payload.to(torch.int64)
    planes = []
    for sign, part in ((1, p.clamp(min=0)), (-1, (-p).clamp(min=0))):
        top = int(part.max()) if part.numel() else 0
        planes += [(sign, b, ((part >> b) & 1) != 0) for b in range(top.bit_length())]
    return planes


def _conv_torch(payload, weights, geometry, graded) -> torch.Tensor:
    p = (payload if graded else payload != 0).to(torch.int64)
    taps = weights[0].numel()
    bound = int(weights.abs().max()) * int(p.abs().max()) * taps if p.numel() else 0
    if bound >= FLOAT64_EXACT_BOUND:
        raise ValueError(
            f"backend='torch' sums in float64, exact while max|weight| * max|payload| * "
            f"{taps} taps < 2^40; this input bounds it by {bound}: use backend='numba' or 'triton'"
        )
    out = F.conv2d(p.to(torch.float64), weights.to(torch.float64), None, *geometry)
    return out.round().to(torch.int64)


def _conv_sparse(payload, weights, geometry, graded, backend) -> torch.Tensor:
    stride, padding, dilation, groups = geometry
    acc = None
    for j, digit in enumerate(_int8_digits(weights)):
        if not bool(digit.any()):
            continue
        for sign, shift, plane in _bit_planes(payload, graded):
            part = spike_conv2d(plane, digit, None, stride, padding, dilation, groups,
                                backend=backend, check=False).to(torch.int64)
            part = part << (7 * j + shift)
            acc = part * sign if acc is None else acc + part * sign
    if acc is None:  # all weights or all payloads zero
        shape = F.conv2d(torch.empty(payload.shape, device="meta"),
                         torch.empty(weights.shape, device="meta"), None, *geometry).shape
        acc = torch.zeros(shape, dtype=torch.int64, device=payload.device)
    return acc.contiguous()


def conv_input(
    weights: torch.Tensor,
    in_spikes: torch.Tensor,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    weight_exp: int = 0,
    num_weight_bits: int = 8,
    num_message_bits: int = 0,
    weight_handling: str = "loihi",
    backend: str = "numba",
) -> torch.Tensor:
    """What a Loihi Conv synapse delivers to its LIF at each step (module docstring).

    Args:
        weights: ``[C_out, C_in // groups, KH, KW]`` raw integer weights (torch layout).
        in_spikes: ``[T, C_in, H, W]`` integers or bool: any nonzero is a spike when
            ``num_message_bits == 0``, else the integer payload.
        stride, padding, dilation: ints or ``(H, W)`` pairs; groups: as ``F.conv2d``.
        weight_exp: output shift (negative: floor shift right), an int in -31..31; "loihi"
            handling only.
        num_weight_bits: an int in 1..8, weight precision; "loihi" handling only.
        num_message_bits: 0 for binary spikes, > 0 for graded payloads.
        weight_handling: "loihi" (Dense's clip, truncation and shift) or "lava_conv" (Lava
            0.10.0's Conv model: raw weights, 24-bit wrap); see the module docstring for why.
        backend: "torch" (float64 F.conv2d), "numba" or "triton" (integer spike_conv2d).

    Returns:
        ``a_in: [T, C_out, OH, OW]`` int64 on ``weights.device``, ``a_in[0] = 0``.

    Raises:
        TypeError: non-tensor or non-integer weights/spikes, non-int geometry, weight_exp or
            num_weight_bits.
        ValueError: bad ranks, stride/dilation < 1 or padding < 0, channel/group mismatch,
            weight_exp outside -31..31, num_weight_bits outside 1..8, negative
            num_message_bits, unknown weight_handling or backend, raw weights outside int32 in
            "lava_conv" mode, a float64 bound overrun on the torch backend.
        RuntimeError: geometry torch rejects (its own message), or the backend cannot run here.
    """
    _check_int_tensor(weights, "weights", 4, "[C_out, C_in // groups, KH, KW]", bool_ok=False)
    _check_int_tensor(in_spikes, "in_spikes", 4, "[T, C_in, H, W]", bool_ok=True)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    c_out, c_in = weights.shape[0], in_spikes.shape[1]
    if c_out % groups or c_in % groups:
        raise ValueError(f"groups={groups} must divide both C_out={c_out} and C_in={c_in}")
    if weights.shape[1] * groups != c_in:
        raise ValueError(f"in_spikes has C_in={c_in} channels, weights expect "
                         f"{weights.shape[1]} x groups={groups} = {weights.shape[1] * groups}")
    weight_exp = check_int_param("weight_exp", weight_exp, *WEIGHT_EXP_RANGE)
    num_weight_bits = check_int_param("num_weight_bits", num_weight_bits, *NUM_WEIGHT_BITS_RANGE)
    if num_message_bits < 0:
        raise ValueError(f"num_message_bits must be >= 0, got {num_message_bits}")
    if weight_handling not in WEIGHT_HANDLINGS:
        raise ValueError(f"weight_handling must be one of {WEIGHT_HANDLINGS}, "
                         f"got {weight_handling!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    geometry = conv_geometry(stride, padding, dilation, groups)
    # torch validates the rest of the geometry, with its own messages, on shape-only tensors.
    F.conv2d(torch.empty(in_spikes.shape, device="meta"),
             torch.empty(weights.shape, device="meta"), None, *geometry)
    in_spikes = in_spikes.to(weights.device)
    reason = backend_unavailable_reason(backend, in_spikes.device)
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} is not available: {reason}")

    if weight_handling == "loihi":
        # Imported here: neuro_emu.loihi imports this module.
        from neuro_emu.loihi import lava_weights

        w = lava_weights(weights, num_weight_bits).to(torch.int64)
    else:
        low, high = (int(v) for v in torch.aminmax(weights))
        if low < -(2**31) or high >= 2**31:
            raise ValueError(f"weight_handling='lava_conv' takes int32 weights (Lava's Var "
                             f"dtype), got values in [{low}, {high}]")
        w = weights.to(torch.int64)
    graded = num_message_bits > 0
    if backend == "torch":
        acc = _conv_torch(in_spikes, w, geometry, graded)
    else:
        taps = math.prod(w.shape[1:])
        if 128 * taps >= 2**31:
            raise ValueError(f"{taps} taps per output overflow spike_conv2d's int32 sums")
        acc = _conv_sparse(in_spikes, w, geometry, graded, backend)

    if weight_handling == "loihi":
        if graded:  # as Dense's weights.dot(s_in) on int32 arrays: the sum wraps
            acc = wrap_int32(acc)
        acc = acc << weight_exp if weight_exp > 0 else acc >> -weight_exp
    else:
        half = 1 << (ACC_BITS - 1)
        acc = ((acc + half) & ((1 << ACC_BITS) - 1)) - half  # Lava's signed_clamp: a wrap
    a_in = torch.zeros_like(acc)
    a_in[1:] = acc[:-1]
    return a_in
