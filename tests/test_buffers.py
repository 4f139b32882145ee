"""The CPU output-buffer cache of the Numba backend: reuse only what no tensor still uses."""

from __future__ import annotations

import gc

import pytest
import torch

from neuro_emu.reference.buffers import MIN_BYTES, _BufferCache

BIG = (4, MIN_BYTES // 4)  # one float32 buffer of 4 MiB


@pytest.fixture
def cache():
    return _BufferCache(64 * MIN_BYTES)


def test_freed_buffer_is_reused(cache):
    first = cache.empty(BIG)
    address = first.data_ptr()
    del first
    gc.collect()
    assert cache.empty(BIG).data_ptr() == address


def test_buffer_in_use_through_a_view_is_not_reused(cache):
    first = cache.empty(BIG)
    view = first[1:].view(-1)  # keeps the storage alive after `first` is gone
    view.fill_(7.0)
    address = first.data_ptr()
    del first
    gc.collect()
    second = cache.empty(BIG)
    assert second.data_ptr() != address
    second.fill_(0.0)
    assert bool((view == 7.0).all())


def test_small_and_oversized_requests_bypass_the_cache(cache):
    small = cache.empty((10,))
    assert small.shape == (10,) and cache.stats()["held_bytes"] == 0
    huge = cache.empty((65 * MIN_BYTES // 4,))
    assert huge.numel() == 65 * MIN_BYTES // 4 and cache.stats()["held_bytes"] == 0


def test_cap_evicts_idle_buffers_then_falls_back(cache):
    cache.clear(max_bytes=2 * 4 * MIN_BYTES)  # room for two 4 MiB buffers
    a, b = cache.empty(BIG), cache.empty(BIG)
    c = cache.empty(BIG)  # both cached ones busy: a plain tensor
    assert cache.stats()["held_bytes"] == 8 * MIN_BYTES
    del a
    gc.collect()
    d = cache.empty((8, MIN_BYTES // 4))  # 8 MiB: evicts idle `a`, still no room -> plain
    assert cache.stats()["held_bytes"] == 4 * MIN_BYTES
    assert d.shape == (8, MIN_BYTES // 4) and b.shape == c.shape == BIG


def test_turning_off_drops_buffers_as_they_are_freed(cache):
    a = cache.empty(BIG)
    cache.clear(max_bytes=0)
    del a
    gc.collect()
    cache.empty(BIG)  # bypasses the cache, and lets the returned buffer go
    assert cache._returned == [] and cache._held == 0
    assert cache.stats() == {"held_bytes": 0, "idle_bytes": 0, "max_bytes": 0}


def test_bfloat16_buffers_share_the_byte_sized_pool(cache):
    first = cache.empty((2, MIN_BYTES // 2), torch.bfloat16)
    assert first.dtype == torch.bfloat16 and first.shape == (2, MIN_BYTES // 2)
    address = first.data_ptr()
    del first
    gc.collect()
    assert cache.empty((MIN_BYTES // 2,), torch.float32).data_ptr() == address  # the same 2 MiB


def test_op_outputs_survive_later_calls():
    """A spike tensor the caller keeps is never handed out again."""
    from neuro_emu.ops import multistep_lif

    x = torch.rand(4, MIN_BYTES // 4) * 1.5
    kept = multistep_lif(x, beta=0.5, backend="numba")
    expected = kept.clone()
    for _ in range(3):
        multistep_lif(torch.zeros_like(x), beta=0.5, backend="numba")
    assert torch.equal(kept, expected)
