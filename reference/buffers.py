"""A cache of large CPU output buffers for the Numba kernels.

A neuron op's output is a fresh ``[T, N]`` tensor. On Linux, glibc serves allocations of 32 MiB and
more with ``mmap``, and returns them to the kernel on free, so every call pays the first-touch page
faults of its output again: 7 to 8 ms for 32 MiB on the 2-core CI VM, where the kernel itself takes
1.2 ms. This cache keeps output buffers of at least ``MIN_BYTES`` after their tensors die and hands
them out again, already faulted in. (PyTorch's CUDA allocator does the same on the GPU.)

A buffer goes back to the cache only when no tensor or view uses it any more: the tensor wraps a
numpy array that only its storage references, and a ``weakref.finalize`` on that array returns the
buffer once the storage is freed. The cache holds at most ``max_bytes`` in all (default 512 MiB,
``NEURO_EMU_CPU_CACHE_MB`` or :func:`set_cpu_buffer_cache` to change; 0 turns it off); past that,
outputs are plain ``torch.empty``.
"""

from __future__ import annotations

import math
import os
import threading
import weakref

import numpy as np
import torch

# Below 1 MiB glibc recycles freed memory from its heap by itself, so there is nothing to win.
MIN_BYTES = 1 << 20


class _BufferCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: dict[int, list[np.ndarray]] = {}  # byte size -> idle buffers, newest last
        self._held = 0  # bytes of all cached buffers, idle or in use
        # Finalizers run whenever a tensor dies, in any thread, even inside this class while it
        # holds the lock (a garbage collection triggered by an allocation): they only append here
        # (atomic), and the next call under the lock files the buffers.
        self._returned: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An uninitialised CPU tensor of ``shape`` and ``dtype``, from the cache when large."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_BYTES or nbytes > self.max_bytes:
            if self._returned:  # buffers may die after the cache was turned off: let them go
                with self._lock:
                    self._file_returned()
            return torch.empty(shape, dtype=dtype)
        with self._lock:
            self._file_returned()
            idle = self._free.get(nbytes)
            buffer = idle.pop() if idle else self._new_buffer(nbytes)
        if buffer is None:
            return torch.empty(shape, dtype=dtype)
        view = buffer.view()  # only the tensor's storage will reference this array
        weakref.finalize(view, self._returned.append, buffer)
        return torch.from_numpy(view).view(dtype).view(shape)

    def _new_buffer(self, nbytes: int) -> np.ndarray | None:
        while self._held + nbytes > self.max_bytes and self._drop_one_idle():
            pass
        if self._held + nbytes > self.max_bytes:
            return None
        self._held += nbytes
        return np.empty(nbytes, dtype=np.uint8)

    def _drop_one_idle(self) -> bool:
        for size, idle in self._free.items():
            if idle:
                idle.pop(0)
                self._held -= size
                return True
        return False

    def _file_returned(self) -> None:
        """Move the buffers whose tensors died to the idle lists (call with the lock held)."""
        while self._returned:
            buffer = self._returned.pop()
            if self._held > self.max_bytes:  # the cap shrank while it was in use
                self._held -= buffer.nbytes
            else:
                self._free.setdefault(buffer.nbytes, []).append(buffer)

    def clear(self, max_bytes: int | None = None) -> None:
        with self._lock:
            if max_bytes is not None:
                self.max_bytes = max_bytes
            self._file_returned()
            for size, idle in self._free.items():
                self._held -= size * len(idle)
            self._free.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._file_returned()
            idle = sum(size * len(b) for size, b in self._free.items())
            return {"held_bytes": self._held, "idle_bytes": idle, "max_bytes": self.max_bytes}


def _cap_from_environment() -> int:
    text = os.environ.get("NEURO_EMU_CPU_CACHE_MB", "512")
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        raise ValueError(f"NEURO_EMU_CPU_CACHE_MB must be a number of MiB >= 0, got {text!r}")
    return int(megabytes * 2**20)


CACHE = _BufferCache(_cap_from_environment())


def set_cpu_buffer_cache(max_bytes: int) -> int:
    """Cap the cache at ``max_bytes`` (0 turns it off) and drop the idle buffers.

    Returns the previous cap."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    previous = CACHE.max_bytes
    CACHE.clear(max_bytes)
    return previous
