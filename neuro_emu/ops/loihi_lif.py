"""Loihi fixed-point CUBA LIF and Dense input, as Lava 0.10.0's bit-accurate CPU models compute
them (``../shared/loihi2_spec.md``): the integer spec, the Dense accumulation, the dispatcher.

Per neuron and step ``k``, in 64-bit integers (spec section 2)::

    u = tdiv(u * (4096 - (du + 1)), 12) + (a_in[k] << 6)   # tdiv: shift rounding toward zero
    u = u - 2^24 if u > 2^23 else u + 2^24 if u <= -2^23 else u     # 24-bit wrap, Lava's '>'
    v = clip(tdiv(v * (4096 - dv), 12) + u + bias, -(2^23 - 1), 2^23 - 1)        # saturate
    s = v > (vth << 6);  v = 0 where s                     # hard reset of v; u is not reset

``a_in[k]`` is what Dense sent: ``shift(W @ S[k - 1], weight_exp)`` with a floor shift, and 0 at
k = 0 (Dense's one-step delay). Integer arithmetic is exact in any order, so every backend must
give the same traces, bit for bit.
"""

from __future__ import annotations

import importlib

import torch

from neuro_emu.ops.multistep_lif import backend_unavailable_reason

_KERNEL_MODULES = {
    "numba": "neuro_emu.reference.loihi_lif",
    "triton": "neuro_emu.kernels.loihi_lif",
}
UV_LIMIT = 2**23  # u and v are 24-bit signed


def _tdiv12(x: torch.Tensor) -> torch.Tensor:
    """x / 4096 rounded toward zero, as Lava's ``sign(x) * (|x| >> 12)``."""
    return torch.sign(x) * (x.abs() >> 12)


def loihi_lif_torch(a_in, u0, v0, du, dv, vth, bias):
    """The spec, a loop over T in int64 torch ops. Shapes as :func:`loihi_lif`."""
    u, v = u0.clone(), v0.clone()
    vth_eff = vth << 6
    traces = []
    for a_k in a_in.unbind(0):
        u = _tdiv12(u * (4096 - (du + 1))) + (a_k << 6)
        wrapped_up = torch.where(u <= -UV_LIMIT, u + 2 * UV_LIMIT, u)
        u = torch.where(u > UV_LIMIT, u - 2 * UV_LIMIT, wrapped_up)
        v = (_tdiv12(v * (4096 - dv)) + u + bias).clamp(-UV_LIMIT + 1, UV_LIMIT - 1)
        s = v > vth_eff
        v = torch.where(s, 0, v)
        traces.append((u, v, s))
    u_t, v_t, s_t = (torch.stack(t) for t in zip(*traces, strict=True))
    return u_t.to(torch.int32), v_t.to(torch.int32), s_t.to(torch.int32)


def dense_input(
    weights: torch.Tensor, in_spikes: torch.Tensor, weight_exp: int, graded: bool
) -> torch.Tensor:
    """What Dense delivers at each step: ``a_in: [T, n_out]`` int64, with the one-step delay.

    weights: ``[n_out, n_in]`` integers after Lava's clip/truncate; in_spikes: ``[T, n_in]``
    (binary mode: any nonzero is a spike; graded: the integer payloads). The product runs in
    floating point, exactly: float32 when every partial sum stays below 2^24 (bounded by
    max|w| times the largest row of |payloads|), float64 otherwise (exact below 2^53).
    """
    payload = (in_spikes if graded else in_spikes != 0).to(torch.int64)
    bound = int(weights.abs().max() * payload.abs().sum(1).max()) if payload.numel() else 0
    dtype = torch.float32 if bound < 2**24 else torch.float64
    acc = (payload.to(dtype) @ weights.to(dtype).T).to(torch.int64)
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
        a_in: ``[T, N]`` int64 input per step (from :func:`dense_input`).
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
