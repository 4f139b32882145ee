"""Numba twin of ``kernels/spike_conv.py``: convolution and linear layers over binary spikes.

Design: event-driven scatter, additions only. Each spike ``(n, c, y, x)`` adds the weight row
``weight_t[c, ky, kx, :]`` (its group's output channels, contiguous) into the channels-last output
``out[n, oy, ox, g, :]`` for every kernel offset that lands inside the output. Work is proportional
to (spikes x kernel area x output channels), against (inputs x kernel area x output channels) for a
dense convolution, and every inner loop is a contiguous vector add.

Why scatter and not gather: a gather (for each output position, visit the active inputs of its
receptive field) needs a compressed active list per position or a scan of the whole receptive
field; the scatter reads each input once, in order, and writes rows that stay in L1/L2 for the
small output maps of SNN layers. Measured on the CIFAR VGG/ResNet layer shapes (benchmark
``bench/test_sparse_conv.py``). Parallel over samples ``n`` (T * B of them), so no two threads
ever write the same output row; within a sample the order of additions is fixed (c, y, x, ky, kx),
so float results are deterministic.

Integer mode: int8 weights are widened in the add (the loop vectorises to sign-extend + add) and
accumulate in int32, exact whatever the order.
"""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(inline="always")
def _is_spike(value, itemsize):
    """A nonzero value; for float32 bit patterns (itemsize 4) -0.0 counts as zero."""
    mask = np.uint64(0x7FFFFFFF) if itemsize == 4 else np.uint64(0xFF)
    return (np.uint64(value) & mask) != 0


@numba.njit(inline="always")
def _add_spike(out, weight_t, out_row_of, out_col_of, n, index, plane, width, out_h, out_w,
               groups, group_in):
    """Scatter the spike at flat index ``c * H * W + y * W + x`` of sample n."""
    c, rest = divmod(index, plane)
    y, x = divmod(rest, width)
    g = c // group_in
    kernel_h, kernel_w = out_row_of.shape[1], out_col_of.shape[1]
    for ky in range(kernel_h):
        oy = out_row_of[y, ky]
        if oy < 0:
            continue
        for kx in range(kernel_w):
            ox = out_col_of[x, kx]
            if ox < 0:
                continue
            w_row = weight_t[(c * kernel_h + ky) * kernel_w + kx]  # [OG]
            o_row = out[((n * out_h + oy) * out_w + ox) * groups + g]  # [OG]
            for o in range(w_row.shape[0]):
                o_row[o] += w_row[o]


@numba.njit(inline="always")
def _add_spike_runs(out_flat, runs_flat, out_row_of, run_ox, run_kx, run_len, n, index, plane,
                    width, out_h, out_w, kernel_h, kernel_w, channels_out):
    """The same scatter for stride 1, dilation 1, groups 1, one add per kernel row: the taps of a
    kernel row land on consecutive output columns, whose channels-last rows are contiguous, and
    ``runs_flat`` holds each kernel row's weights in reversed column order to match."""
    c, rest = divmod(index, plane)
    y, x = divmod(rest, width)
    length = np.uint64(run_len[x] * channels_out)
    for ky in range(kernel_h):
        oy = out_row_of[y, ky]
        if oy < 0:
            continue
        o_at = np.uint64(((n * out_h + oy) * out_w + run_ox[x]) * channels_out)
        w_at = np.uint64(((c * kernel_h + ky) * kernel_w + run_kx[x]) * channels_out)
        for o in range(length):
            out_flat[o_at + o] += runs_flat[w_at + o]


@numba.njit(parallel=True, cache=True)
def _conv2d_scatter(spikes, weight_t, out, init, out_row_of, out_col_of, height, width, out_h,
                    out_w, groups, runs):
    """spikes: [N, C * H * W] uint8 0/1, or float32 0.0/1.0 as int32 bit patterns;
    weight_t: [C * KH * KW, OG]; out: [N * OH * OW * groups, OG], overwritten; init: [groups, OG],
    written into each sample's rows just before its spikes are scattered there (still in cache);
    out_row_of: [H, KH] output row that input row y reaches through kernel row ky, or -1
    (out_col_of likewise for columns): tables instead of a division by the stride per spike.

    The scan reads 8 bytes at a time and looks inside only the nonzero words: at 99% sparsity
    almost every word of 8 uint8 (or 2 float32) spikes is zero."""
    n_samples, length = spikes.shape
    plane = height * width
    group_in = length // plane // groups
    per_word = 8 // spikes.itemsize
    whole = length - length % per_word
    rows_per_sample = out_h * out_w * groups
    for n in numba.prange(n_samples):
        for r in range(n * rows_per_sample, (n + 1) * rows_per_sample):
            start = init[r % groups]
            o_row = out[r]
            for o in range(o_row.shape[0]):
                o_row[o] = start[o]
        row = spikes[n]
        words = row[:whole].view(np.uint64)
        for w in range(words.shape[0]):
            if words[w] == 0:
                continue
            for i in range(w * per_word, (w + 1) * per_word):
                if _is_spike(row[i], spikes.itemsize):
                    _scatter(spikes, weight_t, out, out_row_of, out_col_of, runs, n, i, plane,
                             width, out_h, out_w, groups, group_in)
        for i in range(whole, length):
            if _is_spike(row[i], spikes.itemsize):
                _scatter(spikes, weight_t, out, out_row_of, out_col_of, runs, n, i, plane,
                         width, out_h, out_w, groups, group_in)


@numba.njit(inline="always")
def _scatter(spikes, weight_t, out, out_row_of, out_col_of, runs, n, i, plane, width, out_h,
             out_w, groups, group_in):
    """The run-wise add when ``runs`` holds (run tables and reversed weights), else tap-wise."""
    if runs is None:
        _add_spike(out, weight_t, out_row_of, out_col_of, n, i, plane, width, out_h, out_w,
                   groups, group_in)
    else:
        out_flat, runs_flat, run_ox, run_kx, run_len = runs
        _add_spike_runs(out_flat, runs_flat, out_row_of, run_ox, run_kx, run_len, n, i, plane,
                        width, out_h, out_w, out_row_of.shape[1], out_col_of.shape[1],
                        weight_t.shape[1])


def _reach(size: int, out_size: int, kernel: int, stride: int, pad: int, dil: int) -> np.ndarray:
    """[size, kernel]: the output index input index i reaches through kernel tap k, or -1."""
    i = np.arange(size)[:, None]
    k = np.arange(kernel)[None, :]
    t = i + pad - k * dil
    o = t // stride
    return np.where((t >= 0) & (t % stride == 0) & (o < out_size), o, -1).astype(np.int64)


@numba.njit(parallel=True, cache=True)
def _linear_scatter(spikes, weight_t, out, init):
    n_samples, features = spikes.shape
    for n in numba.prange(n_samples):
        o_row = out[n]  # [out_features]
        for o in range(o_row.shape[0]):
            o_row[o] = init[o]
        row = spikes[n]
        for i in range(features):
            if _is_spike(row[i], spikes.itemsize):
                w_row = weight_t[i]
                for o in range(o_row.shape[0]):
                    o_row[o] += w_row[o]


def spike_conv2d(
    spikes: torch.Tensor,
    weight_t: torch.Tensor,
    out: torch.Tensor,
    init: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> None:
    """Write ``init`` + the convolution of ``spikes`` into ``out``.

    spikes: [N, C, H, W] binary, any dtype; weight_t: [C, KH, KW, O // groups] float32 or int8;
    out: [N, OH, OW, groups, O // groups] float32 or int32, overwritten; init: [groups,
    O // groups], the bias or zeros.
    """
    n, _, height, width = spikes.shape
    _, kernel_h, kernel_w, group_out = weight_t.shape
    _, out_h, out_w, _, _ = out.shape
    out_col_of = _reach(width, out_w, kernel_w, stride[1], padding[1], dilation[1])
    runs = None
    if stride[1] == 1 and dilation[1] == 1 and groups == 1:
        valid = out_col_of >= 0  # [W, KW]: a contiguous range of kx per x
        last_kx = np.where(valid.any(1), kernel_w - 1 - np.argmax(valid[:, ::-1], axis=1), 0)
        runs = (
            out.view(-1).numpy(),
            weight_t.flip(2).contiguous().view(-1).numpy(),
            out_col_of[np.arange(width), last_kx],  # the leftmost output column of the run
            kernel_w - 1 - last_kx,  # where the run starts in the reversed kernel row
            valid.sum(1),
        )
    _conv2d_scatter(
        _spike_words(spikes).reshape(n, -1),
        weight_t.view(-1, group_out).numpy(),
        out.view(-1, group_out).numpy(),
        init.numpy(),
        _reach(height, out_h, kernel_h, stride[0], padding[0], dilation[0]),
        out_col_of,
        height,
        width,
        out_h,
        out_w,
        groups,
        runs,
    )


def spike_linear(spikes: torch.Tensor, weight_t: torch.Tensor, out: torch.Tensor,
                 init: torch.Tensor) -> None:
    """spikes: [N, F] binary; weight_t: [F, O]; out: [N, O], overwritten; init: [O], the bias or
    zeros each output row starts from."""
    _linear_scatter(_spike_words(spikes), weight_t.numpy(), out.numpy(), init.numpy())


def _spike_words(spikes: torch.Tensor) -> np.ndarray:
    """Binary spikes as the kernels scan them: float32 as its int32 bit patterns (no conversion
    pass), any other dtype as uint8 0/1."""
    if spikes.dtype == torch.float32:
        return spikes.contiguous().view(torch.int32).numpy()
    if spikes.dtype in (torch.bool, torch.uint8):
        return spikes.contiguous().view(torch.uint8).numpy()
    return (spikes != 0).view(torch.uint8).contiguous().numpy()
