"""What every Triton launcher needs: run on the tensor's own GPU."""

import contextlib

import torch


def device_of(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on t's GPU and stream, not the current one (CPU tensors: Triton's interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
