"""Spike-driven convolution and linear layers in Triton: event scatter with atomic adds.

A binary input makes every multiply-accumulate an add of one weight row, and a zero input an add
of nothing. The launcher compacts the spikes into an event list (``nonzero`` on the flattened
input: one int64 flat index per spike, in NCHW order), and the kernel adds, for each event and
kernel offset, the weight row ``weight_t[c, ky, kx, :]`` into the output row it lands on with
``tl.atomic_add``. Each program owns ``BLOCK_E`` events x ``BLOCK_O`` output channels of one group.
Work and traffic are proportional to the spikes: per event and kernel offset, one weight row read
(rows of one channel are shared by the block's events, so they are served by L1/L2) and one row of
relaxed atomic adds (``red.global.add``) into ``out``. The only dense pass is ``nonzero`` reading
the spikes once, which any method reading a dense spike tensor must do.

Why scatter and not an output-stationary gather over per-pixel active-channel lists (no atomics,
deterministic float order): the gather visits all K*K input pixels of every output position and
every group, spiking or not, so its overhead is dense in the output size (dense outright for a
depthwise layer, where a list holds at most one channel), and it needs a channels-last CSR build
(permute, counts, cumsum, compaction) before the launch. The scatter treats groups 1..C, stride,
padding and dilation with one index computation (a stride-2 offset that misses the output grid is
masked arithmetic, no memory traffic). Its cost is that atomics run at a fraction of the L2 load
bandwidth; where a pixel has many active channels (low sparsity, groups == 1), summing them in
registers before one atomic per pixel would cut the atomics by that count. Neither has been timed
on a GPU yet (no GPU session so far): this argument is from memory traffic only.

Compiled for sm_90 (PTX, no GPU): the atomics are ``red.global.gpu.relaxed`` (no fences, no
returned value); when the pointers and row widths are multiples of 16 (Triton specialises so),
float32 rows go out as ``red.global.add.v4.f32`` with 128-bit weight loads, while int32 has no
vector ``red`` in PTX and int8 rows are read 8 bytes at a time.

Event order keeps atomics apart: consecutive events share (n, c) and differ in (y, x), and
(y, x) -> (oy, ox) is one-to-one at a fixed kernel offset, so one atomic instruction mostly hits
distinct addresses; different channels at one pixel collide across programs and are serialised by
L2, which is correct in either mode.

Numerics: integer mode (int8 weights widened to int32, int32 ``out``) is exact in any order.
Float mode adds float32 rows into float32 ``out`` in the order the atomics reach memory: on a GPU
that order is NOT deterministic from run to run (each output is the bias plus the same terms, in
some order); the interpreter runs programs in sequence and is deterministic. No multiplies occur;
launches still pass ``enable_fp_fusion=False`` like every kernel here.

Saved for backward: nothing (the ops layer owns autograd). ``torch.nonzero`` makes the host wait
for the device to learn the event count: one synchronisation per launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from neuro_emu.kernels.launch import device_of

# Elements per program (events x output channels): 1024 lanes x 4 warps is Triton's usual choice
# for a memory-bound elementwise body, here 8 atomic adds per thread per kernel offset.
# Not yet tuned on a GPU (no GPU session so far).
TILE = 1024
# Output channels per program, at most: 128 float32 = four 128-byte lines per event row, so a
# warp's atomics cover whole lines; wider groups take more programs along grid axis 1.
MAX_BLOCK_O = 128
NUM_WARPS = 4


@triton.jit
def _add_rows(out_ptr, w_ptr, o_out, o_w, m_e, o_o, m_o):
    """out[o_out[e] + o] += w[o_w[e] + o] for the block's events e and channels o, atomically;
    int8 weights are widened to out's int32."""
    m = m_e[:, None] & m_o[None, :]  # [BLOCK_E, BLOCK_O]
    b_w = tl.load(w_ptr + o_w[:, None] + o_o[None, :], mask=m, other=0)  # [BLOCK_E, BLOCK_O]
    tl.atomic_add(out_ptr + o_out[:, None] + o_o[None, :], b_w.to(out_ptr.dtype.element_ty),
                  mask=m, sem="relaxed")  # a reduction: no ordering with other memory needed


@triton.jit
def _spike_conv2d_kernel(
    events_ptr, w_ptr, out_ptr,
    E, C, H, W, OH, OW, C_PER_G, OG, CO, KH, KW, SH, SW, PH, PW, DH, DW,
    BLOCK_E: tl.constexpr, BLOCK_O: tl.constexpr,
):
    i_e, i_o = tl.program_id(0), tl.program_id(1)
    o_e = i_e.to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)  # [BLOCK_E] int64
    m_e = o_e < E
    o_o = i_o * BLOCK_O + tl.arange(0, BLOCK_O)  # [BLOCK_O]
    m_o = o_o < OG
    b_flat = tl.load(events_ptr + o_e, mask=m_e, other=0)  # [BLOCK_E] int64: n*C*H*W + ...
    b_x = b_flat % W
    b_flat = b_flat // W
    b_y = b_flat % H
    b_flat = b_flat // H
    b_c = b_flat % C
    b_n = b_flat // C
    # out row of (n, oy, ox, g) is ((n * OH + oy) * OW + ox) * CO + g * OG, CO = groups * OG
    o_g = (b_c // C_PER_G) * OG  # [BLOCK_E]
    o_wc = b_c * KH  # [BLOCK_E]: weight_t row of (c, ky, kx) is ((c * KH + ky) * KW + kx) * OG
    for ky in range(KH):
        b_ty = b_y + PH - ky * DH  # [BLOCK_E]: oy * SH when the tap lands on the grid
        b_oy = b_ty // SH
        m_y = m_e & (b_ty >= 0) & (b_ty % SH == 0) & (b_oy < OH)
        o_ny = (b_n * OH + b_oy) * OW
        o_wy = (o_wc + ky) * KW
        for kx in range(KW):
            b_tx = b_x + PW - kx * DW
            b_ox = b_tx // SW
            m_yx = m_y & (b_tx >= 0) & (b_tx % SW == 0) & (b_ox < OW)
            _add_rows(out_ptr, w_ptr, (o_ny + b_ox) * CO + o_g, (o_wy + kx) * OG, m_yx, o_o, m_o)


@triton.jit
def _spike_linear_kernel(
    events_ptr, w_ptr, out_ptr, E, F, CO,
    BLOCK_E: tl.constexpr, BLOCK_O: tl.constexpr,
):
    i_e, i_o = tl.program_id(0), tl.program_id(1)
    o_e = i_e.to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)  # [BLOCK_E] int64
    m_e = o_e < E
    o_o = i_o * BLOCK_O + tl.arange(0, BLOCK_O)  # [BLOCK_O]
    m_o = o_o < CO
    b_flat = tl.load(events_ptr + o_e, mask=m_e, other=0)  # [BLOCK_E] int64: n * F + i
    _add_rows(out_ptr, w_ptr, (b_flat // F) * CO, (b_flat % F) * CO, m_e, o_o, m_o)


def conv_weight_rows(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """weight: [O, C/g, KH, KW] -> [C, KH, KW, O/g] contiguous: one row per (input channel,
    kernel offset), holding that channel's group of output channels."""
    out_channels, group_in, kernel_h, kernel_w = weight.shape
    group_out = out_channels // groups
    return (
        weight.view(groups, group_out, group_in, kernel_h, kernel_w)
        .permute(0, 2, 3, 4, 1)
        .reshape(groups * group_in, kernel_h, kernel_w, group_out)
        .contiguous()
    )


def _blocks(width: int) -> tuple[int, int]:
    """(BLOCK_E, BLOCK_O) for rows of ``width`` output channels: the row in as few channel
    blocks as MAX_BLOCK_O allows, events filling the rest of the TILE."""
    block_o = min(triton.next_power_of_2(width), MAX_BLOCK_O)
    return TILE // block_o, block_o


def _events(spikes: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
    """[E] int64 flat indices of the nonzero entries of ``spikes`` (any dtype), ascending; None
    when there is nothing to add (no output, or no spike): ``out`` then keeps the bias."""
    if out.numel() == 0:
        return None
    events = torch.nonzero(spikes.reshape(-1)).view(-1)
    return events if events.numel() else None


def spike_conv2d(
    spikes: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, init: torch.Tensor,
    stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
) -> None:
    """Write ``init + conv2d(spikes, weight)`` into ``out``, with adds only.

    spikes: [N, C, H, W] binary, any dtype. weight: [O, C/groups, KH, KW] contiguous, float32 or
    int8; it is read as ``weight_t = conv_weight_rows(weight, groups)``, [C, KH, KW, OG], where
    input channel c (group g = c // (C/groups)) at offset (ky, kx) contributes
    weight_t[c, ky, kx, :] to channels g*OG .. g*OG+OG-1.
    out: [N, OH, OW, groups, OG] contiguous, float32 (float32 weights) or int32 (int8 weights),
    overwritten; init: [groups, OG], the bias or zeros, which every output starts from. For every
    spike (n, c, y, x) and (ky, kx) with
    oy = (y + ph - ky*dh) / sh, ox = (x + pw - kx*dw) / sw integral and inside [0, OH) x [0, OW):
    out[n, oy, ox, g, :] += weight_t[c, ky, kx, :]. Float order: see the module docstring.
    """
    _, channels, height, width = spikes.shape
    weight_t = conv_weight_rows(weight, groups)
    _, kh, kw, og = weight_t.shape
    _, oh, ow, _, _ = out.shape
    out.copy_(init.expand(out.shape))
    events = _events(spikes, out)
    if events is None:
        return
    n_events = events.numel()
    block_e, block_o = _blocks(og)
    grid = (triton.cdiv(n_events, block_e), triton.cdiv(og, block_o))
    with device_of(spikes):
        _spike_conv2d_kernel[grid](
            events, weight_t, out,
            n_events, channels, height, width, oh, ow, channels // groups, og, groups * og,
            kh, kw, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
            BLOCK_E=block_e, BLOCK_O=block_o, num_warps=NUM_WARPS, enable_fp_fusion=False,
        )


def spike_linear(spikes: torch.Tensor, weight: torch.Tensor, out: torch.Tensor,
                 init: torch.Tensor) -> None:
    """Write ``init + linear(spikes, weight)`` into ``out``, with adds only.

    spikes: [N, F] binary, any dtype. weight: [O, F] contiguous, float32 or int8 (the Linear
    weight), read as ``weight_t = weight.t()`` made contiguous, [F, O]: one pass over the weight,
    so that each spike's row is contiguous. out: [N, O] contiguous, float32 or int32, overwritten,
    starting from init: [O], the bias or zeros; out[n, :] += weight_t[i, :] for every spike
    (n, i). Float order: see the module docstring.
    """
    out.copy_(init.expand(out.shape))
    events = _events(spikes, out)
    if events is None:
        return
    weight_t = weight.t().contiguous()
    features, width = weight_t.shape
    n_events = events.numel()
    block_e, block_o = _blocks(width)
    grid = (triton.cdiv(n_events, block_e), triton.cdiv(width, block_o))
    with device_of(spikes):
        _spike_linear_kernel[grid](
            events, weight_t, out, n_events, features, width,
            BLOCK_E=block_e, BLOCK_O=block_o, num_warps=NUM_WARPS, enable_fp_fusion=False,
        )
