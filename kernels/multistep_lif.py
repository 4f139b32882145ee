"""Fused multi-step IF/LIF in Triton: one launch for all T steps forward, one for BPTT backward.

Each program owns ``BLOCK`` neurons and keeps their membrane (forward) or membrane gradient
(backward) in float32 registers across time; memory sees only the per-step rows. Equations and
operation order are the spec's (``neuro_emu/ops/multistep_lif.py``); every launch passes
``enable_fp_fusion=False`` so ``v * beta + x`` is a multiply and an add, never an FMA, and divisions
use ``div_rn`` (IEEE round-to-nearest, not the approximate ``div.full``), which keeps the kernel
bit-exact with the Numba twin and the PyTorch spec.

Saved for backward: nothing new. Backward keeps a reference to x (and v_init) and recomputes the
pre-reset membrane h in float32, exactly as the forward had it. Traffic per neuron-step: forward
reads x and writes s; backward reads x, writes and re-reads h in a float32 scratch (grad_x itself
for float32 inputs, so no extra memory) and reads grad_s, writes grad_x.

Launch shape: ``block`` neurons per program over ``num_warps`` warps, and ``prefetch``, which loads
the next step's row (x forward; h and grad_s in the reverse loop) before the current step computes
and stores, so two rows of loads are in flight per thread. None of the three changes the
arithmetic: every variant is bit-identical. ``bench/gpu_lif_tune.py`` measures them on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from neuro_emu.kernels.launch import device_of

# Chosen by bench/gpu_lif_tune.py (block x num_warps x prefetch) on an H100, torch 2.11, Triton
# 3.6, T=8/32 x float32/bfloat16: the forward streams at about 96% of a copy's bandwidth in every
# variant (all within 1%) but 4096x4 and 512x8; the backward is fastest at 512 lanes x 4 warps
# with prefetch, 5% under 1024x4 without (geomean; up to 8% for float32). 4096x4 spills in the
# backward.
BLOCK = 512
NUM_WARPS = 4
PREFETCH = True


@triton.jit
def _surrogate_grad(u, a, b, SURROGATE: tl.constexpr):
    if SURROGATE == 0:  # atan
        au = u * a
        g = tl.math.div_rn(tl.zeros_like(u) + b, 1.0 + au * au)
    elif SURROGATE == 1:  # sigmoid
        sg = tl.math.div_rn(tl.zeros_like(u) + 1.0, 1.0 + tl.exp(-(u * a)))
        g = (sg * a) * (1.0 - sg)
    elif SURROGATE == 2:  # triangle
        t = 1.0 - tl.abs(u) * a
        g = tl.where(t > 0.0, t * a, 0.0)
    else:  # rectangle
        g = tl.where(tl.abs(u) < b, tl.zeros_like(u) + a, 0.0)
    return g


@triton.jit
def _store_rounded(ptr, b_value, mask):
    """Store float32 ``b_value`` at ``ptr`` rounding to nearest even, as torch's casts do.

    bfloat16 is rounded by hand: the Triton interpreter truncates in ``.to(tl.bfloat16)``, and the
    bit trick below is what the GPU's ``cvt.rn.bf16.f32`` computes anyway (for NaN: 0x7FC0).
    """
    if ptr.dtype.element_ty == tl.bfloat16:
        b_bits = b_value.to(tl.uint32, bitcast=True)
        b_bits = (b_bits + 0x7FFF + ((b_bits >> 16) & 1)) >> 16
        b_bits = tl.where(b_value != b_value, 0x7FC0, b_bits)  # NaN stays a quiet NaN
        tl.store(ptr, b_bits.to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=mask)
    else:
        tl.store(ptr, b_value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _lif_step(b_v, b_x, beta, v_th, v_reset, RESET: tl.constexpr):
    """One neuron-step of the spec on a block: returns (h, s, v_next), all float32."""
    b_h = b_v * beta + b_x
    b_fire = b_h >= v_th
    b_s = b_fire.to(tl.float32)
    if RESET == 0:
        b_v = b_h - b_s * v_th
    elif RESET == 1:
        b_v = tl.where(b_fire, v_reset, b_h)
    else:
        b_v = b_h
    return b_h, b_s, b_v


@triton.jit
def _load_membrane(ptr, o_n, m_n, HAS: tl.constexpr, BLOCK: tl.constexpr):
    if HAS:
        return tl.load(ptr + o_n, mask=m_n, other=0.0)
    return tl.zeros([BLOCK], dtype=tl.float32)


@triton.jit
def _forward_block(x_ptr, out_ptr, o_n, m_n, b_v, T, N, beta, v_th, v_reset,
                   RESET: tl.constexpr, STORE_H: tl.constexpr, PREFETCH: tl.constexpr):
    """Steps one block through all T; out[t] receives the spikes, or float32 h when ``STORE_H``.
    Returns the final membrane and the offsets one step past the end."""
    o_tn = o_n
    if PREFETCH:
        b_x_next = tl.load(x_ptr + o_tn, mask=m_n, other=0.0)  # [BLOCK] row 0; T >= 1
    for t in range(T):
        if PREFETCH:
            b_x = b_x_next.to(tl.float32)
            # Row t + 1 in flight while row t computes and stores; nothing past the last row.
            # (tl.where, not m_n & ...: the interpreter rejects a tensor & a Python bool as mask.)
            m_next = tl.where(t + 1 < T, m_n, False)
            b_x_next = tl.load(x_ptr + o_tn + N, mask=m_next, other=0.0)
        else:
            b_x = tl.load(x_ptr + o_tn, mask=m_n, other=0.0).to(tl.float32)
        b_h, b_s, b_v = _lif_step(b_v, b_x, beta, v_th, v_reset, RESET)
        b_out = b_h if STORE_H else b_s
        tl.store(out_ptr + o_tn, b_out.to(out_ptr.dtype.element_ty), mask=m_n)
        o_tn += N
    return b_v, o_tn


@triton.jit
def _multistep_lif_fwd_kernel(
    x_ptr, v_init_ptr, s_ptr, v_out_ptr,
    T, N, beta, v_th, v_reset,
    RESET: tl.constexpr, HAS_V_INIT: tl.constexpr, BLOCK: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    i_n = tl.program_id(0)
    o_n = i_n.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] int64: T*N may pass 2^31
    m_n = o_n < N
    b_v = _load_membrane(v_init_ptr, o_n, m_n, HAS_V_INIT, BLOCK)
    b_v, _ = _forward_block(x_ptr, s_ptr, o_n, m_n, b_v, T, N, beta, v_th, v_reset, RESET, False,
                            PREFETCH)
    tl.store(v_out_ptr + o_n, b_v, mask=m_n)


@triton.jit
def _multistep_lif_bwd_kernel(
    x_ptr, v_init_ptr, grad_s_ptr, grad_v_ptr, h_ptr, grad_x_ptr, grad_v_init_ptr,
    T, N, beta, v_th, v_reset, sg_a, sg_b,
    RESET: tl.constexpr, SURROGATE: tl.constexpr, DETACH_RESET: tl.constexpr,
    HAS_V_INIT: tl.constexpr, HAS_GRAD_V: tl.constexpr, BLOCK: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    i_n = tl.program_id(0)
    o_n = i_n.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    m_n = o_n < N
    # Recompute h forward into the float32 scratch h_ptr (grad_x itself for float32 inputs).
    b_v = _load_membrane(v_init_ptr, o_n, m_n, HAS_V_INIT, BLOCK)
    _, o_tn = _forward_block(x_ptr, h_ptr, o_n, m_n, b_v, T, N, beta, v_th, v_reset, RESET, True,
                             PREFETCH)
    # BPTT in reverse time; each lane reads its own h[t] before writing grad_x[t] over it.
    b_gv = _load_membrane(grad_v_ptr, o_n, m_n, HAS_GRAD_V, BLOCK)
    if PREFETCH:
        b_h_next = tl.load(h_ptr + o_tn - N, mask=m_n, other=0.0)  # [BLOCK] row T - 1
        b_gs_next = tl.load(grad_s_ptr + o_tn - N, mask=m_n, other=0.0)
    for t in range(T):
        o_tn -= N
        if PREFETCH:
            b_h = b_h_next
            b_gs = b_gs_next.to(tl.float32)
            # The row before this one in flight while this one computes and stores; none at row 0.
            m_prev = tl.where(t + 1 < T, m_n, False)
            b_h_next = tl.load(h_ptr + o_tn - N, mask=m_prev, other=0.0)
            b_gs_next = tl.load(grad_s_ptr + o_tn - N, mask=m_prev, other=0.0)
        else:
            b_h = tl.load(h_ptr + o_tn, mask=m_n, other=0.0)
            b_gs = tl.load(grad_s_ptr + o_tn, mask=m_n, other=0.0).to(tl.float32)
        b_g = _surrogate_grad(b_h - v_th, sg_a, sg_b, SURROGATE)
        if RESET == 0:
            if DETACH_RESET:
                b_dv_dh = tl.zeros_like(b_h) + 1.0
            else:
                b_dv_dh = 1.0 - v_th * b_g
        elif RESET == 1:
            b_not_s = tl.where(b_h >= v_th, 0.0, 1.0)
            if DETACH_RESET:
                b_dv_dh = b_not_s
            else:
                b_dv_dh = b_not_s + (v_reset - b_h) * b_g
        else:
            b_dv_dh = tl.zeros_like(b_h) + 1.0
        b_gh = b_gs * b_g + b_gv * b_dv_dh
        _store_rounded(grad_x_ptr + o_tn, b_gh, m_n)
        b_gv = b_gh * beta
    tl.store(grad_v_init_ptr + o_n, b_gv, mask=m_n)


def multistep_lif_fwd(
    x: torch.Tensor, v_init: torch.Tensor | None, beta: float, v_th: float, v_reset: float,
    reset: int, *, block: int = BLOCK, num_warps: int = NUM_WARPS, prefetch: bool = PREFETCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [T, N] contiguous, v_init: [N] float32 or None -> (spikes [T, N] in x.dtype,
    v_final [N] float32). ``block`` (a power of two), ``num_warps`` and ``prefetch`` pick the
    launch shape (module docstring); the results are the same bits for all of them."""
    steps, n = x.shape
    spikes = torch.empty_like(x)
    v_final = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return spikes, v_final
    with device_of(x):
        _multistep_lif_fwd_kernel[(triton.cdiv(n, block),)](
            x, v_final if v_init is None else v_init, spikes, v_final,
            steps, n, beta, v_th, v_reset,
            RESET=reset, HAS_V_INIT=v_init is not None, BLOCK=block, PREFETCH=prefetch,
            num_warps=num_warps, enable_fp_fusion=False,
        )
    return spikes, v_final


def multistep_lif_bwd(
    grad_s: torch.Tensor, grad_v: torch.Tensor | None, x: torch.Tensor, v_init: torch.Tensor | None,
    beta: float, v_th: float, v_reset: float, reset: int, surrogate: int, sg_a: float, sg_b: float,
    detach_reset: bool, *, block: int = BLOCK, num_warps: int = NUM_WARPS,
    prefetch: bool = PREFETCH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_s, x: [T, N], grad_v, v_init: [N] float32 or None -> (grad_x [T, N] in x.dtype,
    grad_v_init [N] float32). Launch shape as in :func:`multistep_lif_fwd`."""
    steps, n = x.shape
    grad_x = torch.empty_like(x)
    h = grad_x if x.dtype == torch.float32 else torch.empty_like(x, dtype=torch.float32)
    grad_v_init = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return grad_x, grad_v_init
    with device_of(x):
        _multistep_lif_bwd_kernel[(triton.cdiv(n, block),)](
            x, grad_v_init if v_init is None else v_init, grad_s,
            grad_v_init if grad_v is None else grad_v, h, grad_x, grad_v_init,
            steps, n, beta, v_th, v_reset, sg_a, sg_b,
            RESET=reset, SURROGATE=surrogate, DETACH_RESET=detach_reset,
            HAS_V_INIT=v_init is not None, HAS_GRAD_V=grad_v is not None, BLOCK=block,
            PREFETCH=prefetch, num_warps=num_warps, enable_fp_fusion=False,
        )
    return grad_x, grad_v_init
