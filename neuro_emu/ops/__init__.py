"""Every op of neuro-emu, one dispatcher each; the only place that knows the backends."""

from neuro_emu.ops.multistep_lif import (
    BACKENDS,
    LIFParams,
    available_backends,
    backend_unavailable_reason,
    lif_params,
    multistep_if,
    multistep_lif,
)
from neuro_emu.ops.spike_conv import float_error_bound, spike_conv2d, spike_linear
from neuro_emu.ops.surrogate import SURROGATES, surrogate_grad, surrogate_primitive
from neuro_emu.reference.buffers import set_cpu_buffer_cache

__all__ = [
    "BACKENDS",
    "LIFParams",
    "SURROGATES",
    "available_backends",
    "float_error_bound",
    "backend_unavailable_reason",
    "lif_params",
    "multistep_if",
    "multistep_lif",
    "set_cpu_buffer_cache",
    "spike_conv2d",
    "spike_linear",
    "surrogate_grad",
    "surrogate_primitive",
]
