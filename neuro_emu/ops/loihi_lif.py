"""Loihi fixed-point CUBA LIF and Dense input, as Lava 0.10.0's bit-accurate CPU models compute
them (``../shared/loihi2_spec.md``): the integer spec, the Dense accumulation, the dispatcher.

Per neuron and step ``k``, with ``int32(x)`` the two's-complement wrap to 32 bits (spec
section 2)::

    u = int32(tdiv(u * (4096 - (du + 1)), 12) + int32(a_in[k] << 6))  # tdiv: rounds toward zero
    u = u - 2^24 if u > 2^23 else u + 2^24 if u <= -2^23 else u     # 24-bit wrap, Lava's '>'
    v = clip(int32(tdiv(v * (4096 - dv), 12) + u + bias), -(2^23 - 1), 2^23 - 1)  # saturate
    s = v > (vth << 6);  v = 0 where s                     # hard reset of v; u is not reset

``a_in[k]`` is what Dense sent: ``shift(W @ S[k - 1], weight_exp)`` with a floor shift, and 0 at
k = 0 (Dense's one-step delay); graded payloads' ``W @ S`` wraps to int32 first (Lava's
``weights.dot(s_in)`` multiplies int32 arrays; binary spikes are summed in int64). The ``int32``
wraps are Lava's: ``u``, ``v``, the bias and the received ``a_in`` are int32 arrays in
``AbstractPyLifModelFixed.subthr_dynamics``, and only the decay products are taken in int64; they
matter once ``|a_in| >= 2^25`` (``a_in << 6`` overflows) or ``u`` has left 24 bits (Lava wraps it
by 2^24 once, not modulo). The backends compute in int64 and wrap at the same places, so ``u`` and
``v`` always fit the int32 traces. Integer arithmetic is exact in any order, so every backend must
give the same traces, bit for bit.
"""

from __future__ import annotations

import importlib
import numbers

import torch

from neuro_emu.ops.multistep_lif import backend_unavailable_reason

_KERNEL_MODULES = {
    "numba": "neuro_emu.reference.loihi_lif",
    "triton": "neuro_emu.kernels.loihi_lif",
}
UV_LIMIT = 2**23  # u and v are 24-bit signed
# Lava leaves weight_exp unbounded. Within +-31 every shift stays below the 32 bits of the int32
# a_in it feeds, where the backends' int64 shifts are all defined and equal numpy's (Lava's);
# a count of 64 or more wraps in Numba (mod 64) but not in torch.
WEIGHT_EXP_RANGE = (-31, 31)
NUM_WEIGHT_BITS_RANGE = (1, 8)


def check_int_param(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int, or a TypeError (not an integer; bool refused) or ValueError (outside
    ``low..high``) naming ``name`` and the value."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return int(value)


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 ``x`` wrapped to 32-bit two's complement, as Lava's int32 arithmetic does, int64."""
    return x.to(torch.int32).to(torch.int64)


def _tdiv12(x: torch.Tensor) -> torch.Tensor:
    """x / 4096 rounded toward zero, as Lava's ``sign(x) * (|x| >> 12)``."""
    return torch.sign(x) * (x.abs() >> 12)


def loihi_lif_torch(a_in, u0, v0, du, dv, vth, bias):
    """The spec, a loop over T in int64 torch ops. Shapes as :func:`loihi_lif`."""
    u, v = u0.clone(), v0.clone()
    vth_eff = vth << 6
    u_t, v_t, s_t = (torch.empty(a_in.shape, dtype=torch.int32, device=a_in.device)
                     for _ in range(3))
    for k, a_k in enumerate(a_in.unbind(0)):
        u = wrap_int32(_tdiv12(u * (4096 - (du + 1))) + wrap_int32(a_k << 6))
        wrapped_up = torch.where(u <= -UV_LIMIT, u + 2 * UV_LIMIT, u)
        u = torch.where(u > UV_LIMIT, u - 2 * UV_LIMIT, wrapped_up)
        v = wrap_int32(_tdiv12(v * (4096 - dv)) + u + bias).clamp(-UV_LIMIT + 1, UV_LIMIT - 1)
        s = v > vth_eff
        v = torch.where(s, 0, v)
        u_t[k], v_t[k], s_t[k] = u, v, s
    return u_t, v_t, s_t


def dense_input(
    weights: torch.Tensor, in_spikes: torch.Tensor, weight_exp: int, graded: bool
) -> torch.Tensor:
    """What Dense delivers at each step: ``a_in: [T, n_out]`` int64, with the one-step delay.

    weights: ``[n_out, n_in]`` integers after Lava's clip/truncate; in_spikes: ``[T, n_in]``
    integers or bool (binary mode: any nonzero is a spike; graded: the integer payloads);
    weight_exp: in ``WEIGHT_EXP_RANGE``. The product runs in floating point, exactly: float32
    when every partial sum stays below 2^24 (bounded by max|w| times the largest row of
    |payloads|), float64 otherwise.

    Raises:
        TypeError: non-integer weights or spikes, a weight_exp that is not an int.
        ValueError: weight_exp out of range, or a bound of 2^53 or more (float64 would round).
    """
    for name, t in (("weights", weights), ("in_spikes", in_spikes)):
        if t.dtype.is_floating_point or t.dtype.is_complex:
            raise TypeError(f"{name} must hold integers, got {t.dtype}")
    weight_exp = check_int_param("weight_exp", weight_exp, *WEIGHT_EXP_RANGE)
    payload = (in_spikes if graded else in_spikes != 0).to(torch.int64)
    bound = int(weights.abs().max() * payload.abs().sum(1).max()) if payload.numel() else 0
    if bound >= 2**53:
        raise ValueError(f"Dense sums are bounded by max|weight| * the largest row of "
                         f"|payloads| = {bound}, beyond the 2^53 that float64 holds exactly")
    dtype = torch.float32 if bound < 2**24 else torch.float64
    acc = (payload.to(dtype) @ weights.to(dtype).T).to(torch.int64)
    if graded:  # Lava's weights.dot(s_in) on int32 arrays: the sum wraps before the shift
        acc = wrap_int32(acc)
    acc = acc << weight_exp if weight_exp > 0 else acc >> -weight_exp
    a_in = torch.zeros_like(acc)
    a_in[1:] = acc[:-1]
    return a_in


def loihi_lif(
    a_in: torch.Tensor,
    u0: torch.Tensor,
    v0: torch.Tensor,
    du: torch.Tensor,
    dv: torch.Tensor,
    vth: torch.Tensor,
    bias: torch.Tensor,
    backend: str = "numba",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the fixed-point LIF over T steps.

    Args:
        a_in: ``[T, N]`` int64 input per step (from :func:`dense_input`); T may be 0.
        u0, v0, du, dv, vth, bias: ``[N]`` int64 (bias already ``bias_mant`` shifted by
            ``bias_exp``).
        backend: "torch" (the spec), "numba" or "triton".

    Returns:
        The traces ``u, v, s``, each ``[T, N]`` int32, recorded after every step as Lava's
        ``Var.get()`` shows them (post-reset v).
    """
    if backend == "torch":
        return loihi_lif_torch(a_in, u0, v0, du, dv, vth, bias)
    if backend not in _KERNEL_MODULES:
        raise ValueError(f"backend must be 'torch', 'numba' or 'triton', got {backend!r}")
    reason = backend_unavailable_reason(backend, a_in.device)
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} is not available: {reason}")
    kernel = importlib.import_module(_KERNEL_MODULES[backend])
    return kernel.loihi_lif(a_in.contiguous(), u0, v0, du, dv, vth, bias)
