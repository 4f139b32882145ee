"""Numba twin of ``kernels/spike_conv.py``: convolution and linear layers over binary spikes.

Design: event-driven scatter, additions only. Each spike ``(n, c, y, x)`` adds the weight row
``weight_t[c, ky, kx, :]`` (its group's output channels, contiguous) into the channels-last output
``out[n, oy, ox, g, :]`` for every kernel offset that lands inside the output. Work is proportional
to (spikes x kernel area x output channels), against (inputs x kernel area x output channels) for a
dense convolution, and every inner loop is a contiguous vector add.

Per sample, the spikes are found 64 bytes at a time and bucketed by pixel (a counting sort), and
the pixels are visited in raster order: all active channels of a pixel add into the same output
rows, so their weight rows are summed four at a time before one read-modify-write of the output
row (measured on one core: 19 G adds/s for one row at a time, 41 G adds/s for four), and the
output rows being written, KH rows of the map, stay in L1. For stride 1, dilation 1 and groups
1, the taps of a kernel row land on consecutive output columns, whose channels-last rows are
contiguous: one add of up to KW * O values per kernel row, from the weights with each kernel row
reversed.

Why scatter and not gather: a gather (for each output position, visit the active inputs of its
receptive field) needs the same per-pixel lists and then visits every output position, spiking
neighbourhood or not; the scatter only visits pixels with spikes. Measured on the CIFAR VGG/ResNet
layer shapes (benchmark ``bench/test_sparse_conv.py``). Parallel over samples ``n`` (T * B of
them), so no two threads ever write the same output row; within a sample the order of additions
is fixed, so float results are deterministic.

Alternatives measured and dropped (2-core AMD EPYC, VGG 128@16x16, N = 128, whole call, same run
as this kernel): a gather per output pixel, 3.45 against 2.66 ms at 99% sparsity (and 7.6 against
4.2 ms on 64@32x32: its branchy walk over the nine neighbour pixels costs more than it saves); a
gather from a counting sort of (spike, tap) pairs by output pixel, 3.15 against 2.82 ms (the sort
of nine entries per spike outweighs the adds it groups); runs grouped by output row across the KH
input rows that reach it (up to 4x more rows summed per pass at 99%), 2.78 against 2.68 ms; sums
of eight rows per pass, 6.10 against 6.11 ms at 95%; each sample summed in a per-thread buffer
and then written out by non-temporal (cache-bypassing) stores, 2.20 against 1.96 ms at 99% for
the kernel alone (it saves the output's read-for-ownership, 0.1 ms on an all-zero input, but
with spikes it lost; why was not found), or by an ordinary copy, 2.11 ms. The adds read every
weight row from L2 (the weights are 590 KB, one 4.6 KB block per channel), about 20 bytes a
cycle per core at 95%: more rows per pass do not cut that traffic.

Linear layers: the same scatter, one weight row per spike (``out[n, :] += weight[:, i]``), but
from the Linear weight ``[O, F]`` as it is, whose rows per spike are columns: the kernel transposes
it tile by tile into a buffer that stays in L1, each tile only when some sample has a spike in it
(and adds from the columns directly when it has few), so no transposed copy of the weight is ever
written. Measured against transposing the whole weight first (4096 -> 512, N = 128, 99% sparsity,
2-core AMD EPYC without AVX-512): torch's ``t().contiguous()`` takes ~4 ms of a ~6.5 ms call, a
tiled Numba transpose ~1 ms; the fused tiles take ~2.2-2.9 ms for the whole call. A gather (each
output a sum over the sample's spikes, one row of the weight at a time) took 4.8 ms.

Integer mode: int8 weights are widened in the add and accumulate in int32, exact whatever the
order.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch
from numba.cpython.unsafe.numbers import trailing_zeros


@numba.njit(inline="always")
def _is_spike(value, itemsize):
    """A nonzero value; for float32 bit patterns (itemsize 4) -0.0 counts as zero."""
    mask = np.uint64(0x7FFFFFFF) if itemsize == 4 else np.uint64(0xFF)
    return (np.uint64(value) & mask) != 0


@numba.njit(inline="always")
def _find_spikes(row, found, one):
    """Write the indices of ``row``'s spikes into ``found``, in order; return how many, and how
    many of them are not ``one`` (the bit pattern of 1; -1 to skip that count).

    Reads 64 bytes at a time (8 words OR-ed, a branch-free block LLVM keeps in registers) and
    looks inside only the nonzero blocks: at 99% sparsity most blocks of 64 uint8 (or 16
    float32) spikes are zero. Measured 4.5x faster than a branch per 8-byte word. Inside a
    block, a bit mask of its spikes (a loop LLVM vectorises) is walked by trailing-zero count,
    one step per spike: VGG 128@16x16 at 99% sparsity, 2.44 -> 2.11 ms for the whole call
    against a branch-free append of every value of the block (:func:`_keep_if_spike`, which
    still takes the tail). A table of set-bit positions per byte of the mask, copied without a
    branch, measured 8-22% slower for the whole call (95% and 99%, three VGG shapes)."""
    per_block = 64 // row.itemsize
    blocks = row.shape[0] // per_block
    words = row[:blocks * per_block].view(np.uint64)
    count = not_one = 0
    for b in range(blocks):
        nonzero = np.uint64(0)
        for k in range(8):
            nonzero |= words[b * 8 + k]
        if nonzero == 0:
            continue
        base = b * per_block
        mask = np.uint64(0)
        for k in range(per_block):
            value = row[base + k]
            spike = _is_spike(value, row.itemsize)
            mask |= np.uint64(spike) << np.uint64(k)
            not_one += spike & (one >= 0) & (value != one)
        while mask != 0:
            found[count] = base + trailing_zeros(mask)
            count += 1
            mask &= mask - np.uint64(1)
    for i in range(blocks * per_block, row.shape[0]):
        count, not_one = _keep_if_spike(row, i, found, count, not_one, one)
    return count, not_one


@numba.njit(inline="always")
def _keep_if_spike(row, i, found, count, not_one, one):
    """Append i to ``found`` if row[i] is a spike, without a branch: the slot is always written
    and the count advances by 0 or 1 (a branch mispredicts on a few percent of random spikes,
    which at 95% sparsity cost more than the adds)."""
    spike = _is_spike(row[i], row.itemsize)
    found[count] = i
    return count + spike, not_one + (spike & (one >= 0) & (row[i] != one))


@numba.njit(inline="always")
def _add_rows(out, o_at, weights, w_at, first, last, length):
    """``out[o_at + o] += sum of weights[w_at[j] + o]`` for j in [first, last), o < length: four
    rows summed per pass over ``out`` (then two, then one, for the rest), so one load and store of
    ``out`` serves up to four spikes."""
    # Unsigned offsets: numba then knows every index is >= 0 and emits no wraparound branch,
    # which would keep LLVM from vectorising the loops.
    o_at, length = np.uint64(o_at), np.uint64(length)
    j = first
    while j + 4 <= last:
        a, b = np.uint64(w_at[j]), np.uint64(w_at[j + 1])
        c, d = np.uint64(w_at[j + 2]), np.uint64(w_at[j + 3])
        for o in range(length):
            out[o_at + o] += (weights[a + o] + weights[b + o]) + (weights[c + o] + weights[d + o])
        j += 4
    if j + 2 <= last:
        a, b = np.uint64(w_at[j]), np.uint64(w_at[j + 1])
        for o in range(length):
            out[o_at + o] += weights[a + o] + weights[b + o]
        j += 2
    while j < last:  # at most once; as an ``if`` numba's codegen made this add 2x slower
        a = np.uint64(w_at[j])
        for o in range(length):
            out[o_at + o] += weights[a + o]
        j += 1


@numba.njit(parallel=True, cache=True)
def _conv2d_scatter(spikes, weights, out, init, out_row_of, out_col_of, height, width, out_h,
                    out_w, kernel_h, kernel_w, groups, runs, scratch, one, not_one):
    """spikes: [N, C * H * W] uint8 0/1, or float32 0.0/1.0 as int32 bit patterns; weights:
    flat [C * KH * KW * OG] (``weight_t``, or its kernel rows reversed when ``runs`` is given);
    out: flat [N * OH * OW * groups * OG], overwritten; init: [groups * OG], written into each
    sample's rows just before its spikes are added there (still in cache); out_row_of: [H, KH]
    output row that input row y reaches through kernel row ky, or -1 (out_col_of likewise for
    columns): tables instead of a division by the stride per spike. ``runs``: for stride 1,
    dilation 1, groups 1, the per-column tables of :func:`spike_conv2d`, else None. scratch:
    [slices, 2 * C * H * W + 2 * H * W + 1] int32, one row per slice of samples run in parallel.
    one: the bit pattern of 1 in ``spikes``, or -1; not_one: [N], per sample the count of
    nonzero values that are not ``one`` (the binary check, fused into the scan).

    Per sample: find the spikes, bucket them by pixel (a counting sort; channels stay in order
    within a pixel), then for each pixel with spikes and each kernel offset add the weight rows
    of its active channels into the output row they share, four at a time. Pixels go in raster
    order, so the output rows being written (KH rows of the map) stay in L1."""
    n_samples, length = spikes.shape
    slices = scratch.shape[0]
    for t in numba.prange(slices):
        for n in range(t, n_samples, slices):
            not_one[n] = _conv2d_sample(spikes[n], weights, out, init, out_row_of, out_col_of,
                                        n, height, width, out_h, out_w, kernel_h, kernel_w,
                                        groups, runs, scratch[t], one)


@numba.njit(inline="always")
def _conv2d_sample(row, weights, out, init, out_row_of, out_col_of, n, height, width, out_h,
                   out_w, kernel_h, kernel_w, groups, runs, scratch, one):
    """Sample n of :func:`_conv2d_scatter`; row: its spikes [C * H * W]. Returns the count of
    its values that are not ``one``."""
    length, plane, row_len = row.shape[0], height * width, init.shape[0]
    group_in, group_out = length // plane // groups, row_len // groups
    found, channel = scratch[:length], scratch[length:2 * length]
    pixel_end = scratch[2 * length:]
    sample_len = out_h * out_w * row_len
    # Row by row through 2-D views: numba vectorises this fill, not the same on flat offsets.
    rows = out[n * sample_len:(n + 1) * sample_len].reshape((out_h * out_w, row_len))
    for r in range(rows.shape[0]):
        o_row = rows[r]
        for o in range(row_len):
            o_row[o] = init[o]
    count, not_one = _find_spikes(row, found, one)
    if count == 0:
        return not_one
    # Counting sort by pixel: counts, their prefix sums (each pixel's start), then the scatter,
    # which moves every start along to its pixel's end. Each index's channel is a product with
    # the plane's reciprocal, exact (index + 0.5 is never a multiple of the plane, and float64
    # holds it far closer than 0.5 / plane).
    inv_plane = 1.0 / plane
    pixel_end[:plane + 1] = 0
    for j in range(count):
        c = np.int64((found[j] + 0.5) * inv_plane)
        pixel_end[found[j] - c * plane + 1] += 1
    # Prefix sums, and the list of pixels with spikes (appended without a branch): the loop
    # below visits only those, with no mispredicted test on each empty pixel.
    active = pixel_end[plane + 1:]
    n_active = 0
    for p in range(plane):
        active[n_active] = p
        n_active += pixel_end[p + 1] != 0
        pixel_end[p + 1] += pixel_end[p]
    for j in range(count):
        c = np.int64((found[j] + 0.5) * inv_plane)
        p = found[j] - c * plane
        channel[pixel_end[p]] = c
        pixel_end[p] += 1
    w_at = found  # reused: the weight offsets of one pixel's active channels
    for a in range(n_active):
        p = active[a]
        first, last = pixel_end[p - 1] if p > 0 else 0, pixel_end[p]
        y, x = divmod(p, width)
        for ky in range(kernel_h):
            oy = out_row_of[y, ky]
            if oy < 0:
                continue
            if runs is not None:
                run_ox, run_kx, run_len = runs
                for j in range(first, last):
                    w_at[j] = ((channel[j] * kernel_h + ky) * kernel_w + run_kx[x]) * group_out
                _add_rows(out, ((n * out_h + oy) * out_w + run_ox[x]) * group_out, weights,
                          w_at, first, last, run_len[x] * group_out)
                continue
            for kx in range(kernel_w):
                ox = out_col_of[x, kx]
                if ox < 0:
                    continue
                # The channels of one group share an output row; groups are runs of channels.
                j = first
                while j < last:
                    g = channel[j] // group_in
                    end = j
                    while end < last and channel[end] // group_in == g:
                        w_at[end] = ((channel[end] * kernel_h + ky) * kernel_w + kx) * group_out
                        end += 1
                    _add_rows(out, (((n * out_h + oy) * out_w + ox) * groups + g) * group_out,
                              weights, w_at, j, end, group_out)
                    j = end
    return not_one


def _reach(size: int, out_size: int, kernel: int, stride: int, pad: int, dil: int) -> np.ndarray:
    """[size, kernel]: the output index input index i reaches through kernel tap k, or -1."""
    i = np.arange(size)[:, None]
    k = np.arange(kernel)[None, :]
    t = i + pad - k * dil
    o = t // stride
    return np.where((t >= 0) & (t % stride == 0) & (o < out_size), o, -1).astype(np.int64)


@functools.lru_cache(maxsize=256)
def _geometry(height: int, width: int, out_h: int, out_w: int, kernel_h: int, kernel_w: int,
              stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
              groups: int) -> tuple:
    """The tables :func:`_conv2d_scatter` takes: (out_row_of, out_col_of, runs), see there.
    Remembered per geometry: making them costs ~20 us, 1% of a call at 99% sparsity."""
    out_col_of = _reach(width, out_w, kernel_w, stride[1], padding[1], dilation[1])
    runs = None
    if stride[1] == 1 and dilation[1] == 1 and groups == 1:
        # The taps of a kernel row land on consecutive output columns: one add per kernel row,
        # from the kernel row's weights in reversed column order.
        valid = out_col_of >= 0  # [W, KW]: a contiguous range of kx per x
        last_kx = np.where(valid.any(1), kernel_w - 1 - np.argmax(valid[:, ::-1], axis=1), 0)
        runs = (
            out_col_of[np.arange(width), last_kx],  # the leftmost output column of the run
            kernel_w - 1 - last_kx,  # where the run starts in the reversed kernel row
            valid.sum(1),
        )
    out_row_of = _reach(height, out_h, kernel_h, stride[0], padding[0], dilation[0])
    return out_row_of, out_col_of, runs


@numba.njit(parallel=True, cache=True)
def _weight_rows(weight, groups, reverse_rows, rows):
    """rows[g * CG + c, ky, kx, o] = weight[g * OG + o, c, ky, kx], with kx counted from the
    right when ``reverse_rows``: the layout :func:`_conv2d_scatter` reads (``weight_t`` of
    ``kernels/spike_conv.py``, or its kernel rows reversed), made in one pass over the weight
    (torch's permute, copy and flip take two, 1.7x the time on the 590 KB VGG weight).
    weight: [O, CG, KH, KW]; rows: [groups * CG, KH, KW, OG]."""
    out_channels, group_in, kernel_h, kernel_w = weight.shape
    group_out = out_channels // groups
    for gc in numba.prange(groups * group_in):
        g = gc // group_in
        c = gc - g * group_in
        for ky in range(kernel_h):
            for kx in range(kernel_w):
                source_kx = kernel_w - 1 - kx if reverse_rows else kx
                for o in range(group_out):
                    rows[gc, ky, kx, o] = weight[g * group_out + o, c, ky, source_kx]


# The linear scatter's tiles: LINEAR_FEATURES input features x LINEAR_OUTPUTS output features of
# the weight, transposed into a 32 KB buffer (L1) that the tile's spikes then add from. A tile with
# fewer than LINEAR_DIRECT spikes (all samples together) adds straight from the weight's columns
# instead: below that, its strided loads cost less than transposing the tile (estimated from
# 4096 -> 512 timings: a tile's transposition costs about as much as 20 spikes added from columns;
# thresholds of 32, 64 and 128 timed alike at N = 1, 4, 32 and 128; all-direct was up to 18x
# slower with many spikes).
LINEAR_FEATURES = 128
LINEAR_OUTPUTS = 64
LINEAR_DIRECT = 32


@numba.njit(parallel=True, cache=True)
def _linear_scatter(spikes, weight, out, init, found, counts, one, not_one):
    """spikes: [N, F] as :func:`_conv2d_scatter` takes them; weight: [O, F], the Linear weight as
    it is; out: [N, O], overwritten; init: [O]; found: [N, F] int32 scratch; counts: [N] scratch;
    one, not_one: as :func:`_conv2d_scatter`.

    The spikes of all samples are bucketed by tile of LINEAR_FEATURES features (a counting sort;
    samples in order within a tile, features in order within a sample). Each thread owns
    LINEAR_OUTPUTS output features (no two threads write one output) and walks the tiles:
    transposes the tile's weights into a buffer and adds its rows, a sample's spikes summed four
    at a time per pass over its output row, or for a tile with few spikes adds each spike's
    weight column directly."""
    n_samples, features = spikes.shape
    out_features = weight.shape[0]
    for n in numba.prange(n_samples):
        counts[n], not_one[n] = _find_spikes(spikes[n], found[n], one)
    n_tiles = (features + LINEAR_FEATURES - 1) // LINEAR_FEATURES
    tile_end = np.zeros(n_tiles + 1, np.int64)  # first the counts, then each tile's start
    for n in range(n_samples):
        for j in range(counts[n]):
            tile_end[found[n, j] // LINEAR_FEATURES + 1] += 1
    largest = 0
    for t in range(n_tiles):
        largest = max(largest, tile_end[t + 1])
        tile_end[t + 1] += tile_end[t]
    spike_sample = np.empty(tile_end[n_tiles], np.int32)
    spike_feature = np.empty(tile_end[n_tiles], np.int32)
    for n in range(n_samples):
        for j in range(counts[n]):
            t = found[n, j] // LINEAR_FEATURES
            spike_sample[tile_end[t]] = n
            spike_feature[tile_end[t]] = found[n, j]
            tile_end[t] += 1  # moves along to the tile's end
    out_flat = out.reshape(-1)
    for part in numba.prange((out_features + LINEAR_OUTPUTS - 1) // LINEAR_OUTPUTS):
        o_first = part * LINEAR_OUTPUTS
        width = min(LINEAR_OUTPUTS, out_features - o_first)
        for n in range(n_samples):
            for o in range(width):
                out[n, o_first + o] = init[o_first + o]
        tile = np.empty(LINEAR_FEATURES * LINEAR_OUTPUTS, weight.dtype)
        w_at = np.empty(largest, np.int64)  # the weight offsets of one tile's spikes
        for t in range(n_tiles):
            first, last = tile_end[t - 1] if t > 0 else 0, tile_end[t]
            if last - first < LINEAR_DIRECT:
                for k in range(first, last):
                    o_row, f = out[spike_sample[k]], spike_feature[k]
                    for o in range(width):
                        o_row[o_first + o] += weight[o_first + o, f]
                continue
            f_first = t * LINEAR_FEATURES
            for o in range(width):
                w_row = weight[o_first + o]
                for f in range(min(LINEAR_FEATURES, features - f_first)):
                    tile[f * LINEAR_OUTPUTS + o] = w_row[f_first + f]
            for k in range(first, last):
                w_at[k - first] = (spike_feature[k] - f_first) * LINEAR_OUTPUTS
            k = first
            while k < last:  # the runs of one sample's spikes
                end = k + 1
                while end < last and spike_sample[end] == spike_sample[k]:
                    end += 1
                _add_rows(out_flat, spike_sample[k] * out_features + o_first, tile, w_at,
                          k - first, end - first, width)
                k = end


def spike_conv2d(
    spikes: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    init: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    check: bool = False,
) -> int:
    """Write ``init`` + the convolution of ``spikes`` into ``out``.

    spikes: [N, C, H, W] binary, any dtype; weight: [O, C // groups, KH, KW] contiguous, float32
    or int8; out: [N, OH, OW, groups, O // groups] float32 or int32, overwritten; init: [groups,
    O // groups], the bias or zeros. check: count the nonzero inputs that are not 1, during the
    scan (only float32, uint8 and bool inputs: see :data:`CHECKS_IN_SCAN`).

    Returns:
        That count, 0 without ``check``.
    """
    n, channels, height, width = spikes.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    _, out_h, out_w, _, _ = out.shape
    if spikes[0].numel() * 2 >= 2**31 or weight.numel() >= 2**31:
        raise ValueError("spike_conv2d's numba kernel indexes a sample and the weight with int32")
    out_row_of, out_col_of, runs = _geometry(height, width, out_h, out_w, kernel_h, kernel_w,
                                             stride, padding, dilation, groups)
    weight_np = weight.numpy()
    rows = np.empty((channels, kernel_h, kernel_w, out_channels // groups), weight_np.dtype)
    _weight_rows(weight_np, groups, runs is not None, rows)
    words, one = _spike_words(spikes, check)
    not_one = np.zeros(n, np.int64)
    _conv2d_scatter(
        words.reshape(n, -1),
        rows.reshape(-1),
        out.view(-1).numpy(),
        init.view(-1).numpy(),
        out_row_of,
        out_col_of,
        height,
        width,
        out_h,
        out_w,
        kernel_h,
        kernel_w,
        groups,
        runs,
        np.empty((numba.get_num_threads(), 2 * spikes[0].numel() + 2 * height * width + 1),
                 np.int32),
        one,
        not_one,
    )
    return int(not_one.sum())


def spike_linear(spikes: torch.Tensor, weight: torch.Tensor, out: torch.Tensor,
                 init: torch.Tensor, check: bool = False) -> int:
    """spikes: [N, F] binary; weight: [O, F] contiguous, float32 or int8; out: [N, O], overwritten;
    init: [O], the bias or zeros each output row starts from; check and the result: as
    :func:`spike_conv2d`."""
    words, one = _spike_words(spikes, check)
    n = spikes.shape[0]
    not_one = np.zeros(n, np.int64)
    _linear_scatter(words, weight.numpy(), out.numpy(), init.numpy(),
                    np.empty(spikes.shape, np.int32), np.empty(n, np.int64), one, not_one)
    return int(not_one.sum())


# Input dtypes whose values the scan sees as they are, so it can count the non-binary ones.
CHECKS_IN_SCAN = (torch.float32, torch.uint8, torch.bool)
_FLOAT32_ONE = int(np.float32(1.0).view(np.int32))  # 1.0's bit pattern, as the scan reads it


def _spike_words(spikes: torch.Tensor, check: bool) -> tuple[np.ndarray, int]:
    """Binary spikes as the kernels scan them, and the bit pattern of 1 to check them against
    (-1: no check). float32 as its int32 bit patterns (no conversion pass), bool and uint8 as
    uint8, any other dtype as uint8 0/1 (its check must run before, on the original values)."""
    if spikes.dtype == torch.float32:
        return spikes.contiguous().view(torch.int32).numpy(), _FLOAT32_ONE if check else -1
    if spikes.dtype in (torch.bool, torch.uint8):
        return spikes.contiguous().view(torch.uint8).numpy(), 1 if check else -1
    return (spikes != 0).view(torch.uint8).contiguous().numpy(), -1
