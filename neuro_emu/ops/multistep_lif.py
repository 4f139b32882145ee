"""Multi-step IF/LIF neurons: the PyTorch spec, the custom ops, and the one dispatcher.

Per element and time step ``t`` (DESIGN.md section 2), with the membrane ``v`` starting at
``v_init`` (default 0) and every operation rounded in float32 (float64 on the ``torch`` backend for
float64 x)::

    h    = v * beta + x[t]                 # a multiply, then an add: two roundings, never an FMA
    s[t] = 1 if h >= v_th else 0
    v    = h - s[t] * v_th                 # reset="subtract"
         | (v_reset if s[t] else h)        # reset="zero"
         | h                               # reset="none"

Backward is BPTT with the surrogate ``g(u)`` of :mod:`neuro_emu.ops.surrogate` standing in for
``dH/du`` at ``u = h - v_th``, in reverse time from ``grad_v = grad of the final membrane``::

    grad_h    = grad_s[t] * g + grad_v * dv_dh
    grad_x[t] = grad_h
    grad_v    = grad_h * beta                  # and grad_v_init = grad_v after t = 0

with ``dv_dh = 1 - v_th * g`` (subtract), ``(1 - s) + (v_reset - h) * g`` (zero), ``1`` (none),
and ``dv_dh = 1`` resp. ``1 - s`` when ``detach_reset=True``.

Saved for backward by the kernel backends: references to x and v_init only, no new memory (x is
one value per neuron-step in its own dtype, and stays alive only if nothing else holds it). The
backward kernel recomputes ``h`` in float32 from them, bit for bit as the forward had it, and
derives ``s = h >= v_th``; so 16-bit inputs get their surrogate from the exact float32 ``h``.

NaN and Inf follow IEEE arithmetic and are not checked (a check would cost a pass over memory):
a NaN membrane never spikes and stays NaN; +Inf spikes at every step after; -Inf never spikes.
Every backend does the same, and the tests hold them to it.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch.autograd.function import once_differentiable

from neuro_emu.ops.surrogate import (
    SURROGATE_IDS,
    as_float32,
    surrogate_constants,
    surrogate_grad,
    surrogate_primitive,
)

BACKENDS: tuple[str, ...] = ("torch", "numba", "triton")
RESET_MODES: dict[str, int] = {"subtract": 0, "soft": 0, "zero": 1, "hard": 1, "none": 2}
_KERNEL_MODULES = {
    "numba": "neuro_emu.reference.multistep_lif",
    "triton": "neuro_emu.kernels.multistep_lif",
}

Backend = Literal["auto", "torch", "numba", "triton"]
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class LIFParams:
    """Validated neuron parameters, every float already rounded to float32."""

    beta: float
    v_th: float
    reset: int
    v_reset: float
    surrogate: int
    sg_a: float
    sg_b: float
    detach_reset: bool


def lif_params(
    beta: float,
    v_th: float = 1.0,
    reset: str = "subtract",
    v_reset: float = 0.0,
    surrogate: str = "atan",
    alpha: float = 2.0,
    detach_reset: bool = False,
) -> LIFParams:
    """Check the neuron parameters and round them to float32.

    Raises:
        ValueError: beta outside [0, 1], v_th not finite and > 0, v_reset not finite, an unknown
            reset mode or surrogate, or alpha not finite and > 0.
    """
    if not (_is_number(beta) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta must be a number in [0, 1] (1 - 1/tau; IF is 1), got {beta!r}")
    # Checked after rounding: 1e39 is finite as a Python float but infinite in float32.
    if not (_is_number(v_th) and math.isfinite(as_float32(v_th)) and as_float32(v_th) > 0):
        raise ValueError(f"v_th must be a finite float32 number > 0, got {v_th!r}")
    if not (_is_number(v_reset) and math.isfinite(as_float32(v_reset))):
        raise ValueError(f"v_reset must be a finite float32 number, got {v_reset!r}")
    if reset not in RESET_MODES:
        raise ValueError(f"reset must be one of {sorted(RESET_MODES)}, got {reset!r}")
    sg_a, sg_b = surrogate_constants(surrogate, alpha)
    return LIFParams(
        beta=as_float32(beta),
        v_th=as_float32(v_th),
        reset=RESET_MODES[reset],
        v_reset=as_float32(v_reset),
        surrogate=SURROGATE_IDS[surrogate],
        sg_a=sg_a,
        sg_b=sg_b,
        detach_reset=bool(detach_reset),
    )


# Looked up once: torch.compile cannot trace importlib's find_spec inside a compiled region.
_INSTALLED: dict[str, bool] = {
    name: importlib.util.find_spec(name) is not None for name in _KERNEL_MODULES
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def backend_unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on tensors of ``device`` here, or None if it can."""
    if backend == "torch":
        return None
    if backend not in _KERNEL_MODULES:
        return f"unknown backend {backend!r}; choose one of {('auto', *BACKENDS)}"
    if not _INSTALLED[backend]:
        return f"the {backend} backend needs the '{backend}' package, which is not installed"
    if backend == "numba" and device.type != "cpu":
        return f"the numba backend runs on CPU tensors, and x is on {device}"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return (
            f"the triton backend needs a CUDA tensor, and x is on {device} "
            "(set TRITON_INTERPRET=1 to run it in Triton's slow CPU interpreter, as the tests do)"
        )
    return None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run on tensors of ``device`` on this machine."""
    device = torch.device(device)
    return [name for name in BACKENDS if backend_unavailable_reason(name, device) is None]


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """Map ``"auto"`` to Triton on CUDA and Numba on CPU (torch for float64); check availability."""
    if backend == "auto":
        if x.dtype == torch.float64:
            return "torch"  # the kernels accumulate in float32 by contract
        preferred = "triton" if x.device.type == "cuda" else "numba"
        return preferred if backend_unavailable_reason(preferred, x.device) is None else "torch"
    reason = backend_unavailable_reason(backend, x.device)
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} is not available: {reason}")
    if backend != "torch" and x.dtype == torch.float64:
        raise TypeError(
            f"backend={backend!r} takes float32, float16 or bfloat16 (it accumulates in float32); "
            "x is float64: use backend='torch' or convert x"
        )
    return backend


def check_inputs(x: torch.Tensor, v_init: torch.Tensor | None) -> None:
    """Raise a clear error for inputs no backend can run: see :func:`multistep_lif`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor [T, *shape], got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError("x must have shape [T, *shape] (time first), got a 0-dim tensor")
    if x.shape[0] == 0:
        raise ValueError(f"x has T = 0 time steps (shape {tuple(x.shape)}); T must be >= 1")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"x must be float32, float16, bfloat16 or float64, got {x.dtype} "
            "(convert spike counts or integer inputs with x.float())"
        )
    if v_init is None:
        return
    if not isinstance(v_init, torch.Tensor):
        raise TypeError(f"v_init must be a torch.Tensor or None, got {type(v_init).__name__}")
    if v_init.shape != x.shape[1:]:
        raise ValueError(
            f"v_init must have x's shape without T, {tuple(x.shape[1:])}, got {tuple(v_init.shape)}"
        )
    if not v_init.dtype.is_floating_point:
        raise TypeError(f"v_init must be a floating-point tensor, got {v_init.dtype}")
    if v_init.device != x.device:
        raise ValueError(f"x is on {x.device} but v_init is on {v_init.device}; put them together")


class _LIFStep(torch.autograd.Function):
    """One time step of the spec with its hand-written BPTT step (the kernels' operation order).

    ``smooth=True`` spikes with the surrogate's primitive instead of H (and resets arithmetically),
    making the forward's true derivative equal to the backward: what gradcheck needs.
    """

    @staticmethod
    def forward(ctx, x_t, v, p: LIFParams, smooth: bool):  # noqa: D102
        acc = v.dtype
        h = v * p.beta + x_t.to(acc)
        if smooth:
            s = surrogate_primitive(h - p.v_th, p.surrogate, p.sg_a, p.sg_b)
            v_next = (h - s * p.v_th, h * (1 - s) + s * p.v_reset, h)[p.reset]
        else:
            fire = h >= p.v_th
            s = fire.to(acc)
            v_next = (h - s * p.v_th, torch.where(fire, p.v_reset, h), h)[p.reset]
        ctx.save_for_backward(h)
        ctx.p, ctx.smooth, ctx.x_dtype = p, smooth, x_t.dtype
        return s.to(x_t.dtype), v_next

    @staticmethod
    @once_differentiable  # h is saved without its graph: a second derivative would be wrong
    def backward(ctx, grad_s, grad_v):  # noqa: D102
        (h,) = ctx.saved_tensors
        p, acc = ctx.p, h.dtype
        grad_s = torch.zeros_like(h) if grad_s is None else grad_s.to(acc)
        grad_v = torch.zeros_like(h) if grad_v is None else grad_v
        g = surrogate_grad(h - p.v_th, p.surrogate, p.sg_a, p.sg_b)
        if p.reset == 0:
            dv_dh = 1.0 if p.detach_reset else 1 - g * p.v_th
        elif p.reset == 1:
            s = (
                surrogate_primitive(h - p.v_th, p.surrogate, p.sg_a, p.sg_b)
                if ctx.smooth
                else (h >= p.v_th).to(acc)
            )
            dv_dh = (1 - s) if p.detach_reset else (1 - s) + (p.v_reset - h) * g
        else:
            dv_dh = 1.0
        grad_h = grad_s * g + grad_v * dv_dh
        return grad_h.to(ctx.x_dtype), grad_h * p.beta, None, None


def multistep_lif_torch(
    x: torch.Tensor, v_init: torch.Tensor | None, p: LIFParams, smooth: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec: a Python loop over T of :class:`_LIFStep`, differentiated by autograd.

    Returns ``(spikes [T, *shape] in x.dtype, final membrane [*shape] in float32/float64)``.
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    v = torch.zeros(x.shape[1:], dtype=acc, device=x.device) if v_init is None else v_init.to(acc)
    spikes = []
    for x_t in x.unbind(0):
        s, v = _LIFStep.apply(x_t, v, p, smooth)
        spikes.append(s)
    return torch.stack(spikes), v


@torch.library.custom_op("neuro_emu::multistep_lif_fwd", mutates_args=())
def _multistep_lif_fwd(
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    beta: float,
    v_th: float,
    reset: int,
    v_reset: float,
    surrogate: int,
    sg_a: float,
    sg_b: float,
    detach_reset: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel forward: x [T, *shape] -> (spikes [T, *shape] in x.dtype, v_final [*shape] f32).

    The surrogate arguments are unused here; they ride along for the backward."""
    return _kernel_fwd(x, v_init, beta, v_th, reset, v_reset, backend)


def _kernel_fwd(x, v_init, beta, v_th, reset, v_reset, backend):
    """The forward kernel of ``backend`` on ``x: [T, *shape]``: see :func:`_multistep_lif_fwd`."""
    kernel = _kernel_module(backend, x)
    steps = x.shape[0]
    spikes, v_final = kernel.multistep_lif_fwd(
        x.contiguous().view(steps, -1), _flat_membrane(v_init), beta, v_th, v_reset, reset
    )
    return spikes.view(x.shape), v_final.view(x.shape[1:])


@_multistep_lif_fwd.register_fake
def _(x, v_init, beta, v_th, reset, v_reset, surrogate, sg_a, sg_b, detach_reset, backend):
    # The kernels return contiguous tensors whatever x's strides: so must the fake.
    return x.new_empty(x.shape), x.new_empty(x.shape[1:], dtype=torch.float32)


@torch.library.custom_op("neuro_emu::multistep_lif_bwd", mutates_args=())
def _multistep_lif_bwd(
    grad_s: torch.Tensor,
    grad_v: torch.Tensor | None,
    x: torch.Tensor,
    v_init: torch.Tensor | None,
    beta: float,
    v_th: float,
    reset: int,
    v_reset: float,
    surrogate: int,
    sg_a: float,
    sg_b: float,
    detach_reset: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel BPTT: (grad_s [T, *shape], grad_v_final [*shape], the forward's x and v_init) ->
    (grad_x [T, *shape] in x.dtype, grad_v_init [*shape] float32). Recomputes h from x."""
    return _kernel_bwd(grad_s, grad_v, x, v_init, beta, v_th, reset, v_reset, surrogate, sg_a,
                       sg_b, detach_reset, backend)


def _kernel_bwd(grad_s, grad_v, x, v_init, beta, v_th, reset, v_reset, surrogate, sg_a, sg_b,
                detach_reset, backend):
    """The BPTT kernel of ``backend``: see :func:`_multistep_lif_bwd`."""
    kernel = _kernel_module(backend, x)
    steps = x.shape[0]
    grad_x, grad_v_init = kernel.multistep_lif_bwd(
        grad_s.to(x.dtype).contiguous().view(steps, -1),
        _flat_membrane(grad_v),
        x.contiguous().view(steps, -1),
        _flat_membrane(v_init),
        beta, v_th, v_reset, reset, surrogate, sg_a, sg_b, detach_reset,
    )
    return grad_x.view(x.shape), grad_v_init.view(x.shape[1:])


@_multistep_lif_bwd.register_fake
def _(grad_s, grad_v, x, v_init, beta, v_th, reset, v_reset, surrogate, sg_a, sg_b, detach_reset,
      backend):
    # The kernels return contiguous tensors whatever x's strides: so must the fake.
    return x.new_empty(x.shape), x.new_empty(x.shape[1:], dtype=torch.float32)


def _kernel_module(backend: str, x: torch.Tensor):
    """The kernel module of ``backend``, for direct callers of the custom ops too."""
    if backend not in _KERNEL_MODULES or x.dtype not in _FLOAT_DTYPES[:3]:
        raise ValueError(
            f"the kernel ops take backend 'numba' or 'triton' and float32/16 or bfloat16 x, got "
            f"backend={backend!r} and {x.dtype}; call neuro_emu.ops.multistep_lif instead"
        )
    return _import(_KERNEL_MODULES[backend])


_import = functools.lru_cache(maxsize=None)(importlib.import_module)


def _flat_membrane(v: torch.Tensor | None) -> torch.Tensor | None:
    """[*shape] membrane (or its gradient) of any float dtype -> [N] contiguous float32."""
    return None if v is None else v.to(torch.float32).reshape(-1).contiguous()


def _setup_context(ctx, inputs, output):
    x, v_init, *params, backend = inputs
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zero-filled
    ctx.save_for_backward(x, v_init)  # references to the inputs: no new memory
    ctx.params, ctx.backend = params, backend


def _backward(ctx, grad_s, grad_v, bwd=torch.ops.neuro_emu.multistep_lif_bwd):
    x, v_init = ctx.saved_tensors
    if grad_s is None:
        grad_s = torch.zeros_like(x)
    grad_x, grad_v_init = bwd(grad_s, grad_v, x, v_init, *ctx.params, ctx.backend)
    grad_v_init = None if v_init is None else grad_v_init.to(v_init.dtype)
    return (grad_x, grad_v_init) + (None,) * 9


_multistep_lif_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerLIF(torch.autograd.Function):
    """The custom ops' forward and backward without torch.library's dispatch, for eager calls.

    The same kernels, autograd context and backward as the registered op (so the same numbers);
    torch.compile traces the registered op instead (see :func:`multistep_lif`). On a [4, 16]
    input on Numba (host time only; three alternating runs, 2-core AVX2 VM), forward + backward
    took 550-850 us through the registered ops and 340-460 us through this Function, the forward
    alone 150-230 against 107-166 us. On a GPU that host time adds to every neuron layer of every
    training step."""

    @staticmethod
    def forward(ctx, x, v_init, *params_and_backend):  # noqa: D102
        # The context is set up here, not in a separate setup_context: torch would then bind
        # the arguments with inspect.signature on every call (a sixth of the call in a profile).
        _setup_context(ctx, (x, v_init, *params_and_backend), None)
        beta, v_th, reset, v_reset = params_and_backend[:4]
        return _kernel_fwd(x, v_init, beta, v_th, reset, v_reset, params_and_backend[-1])

    @staticmethod
    @once_differentiable  # the kernels' backward has no backward of its own
    def backward(ctx, grad_s, grad_v):  # noqa: D102
        return _backward(ctx, grad_s, grad_v, bwd=_kernel_bwd)


def multistep_lif(
    x: torch.Tensor,
    v_init: torch.Tensor | None = None,
    *,
    beta: float,
    v_th: float = 1.0,
    reset: str = "subtract",
    v_reset: float = 0.0,
    surrogate: str = "atan",
    alpha: float = 2.0,
    detach_reset: bool = False,
    backend: Backend = "auto",
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run a layer of IF/LIF neurons over all T steps (equations in the module docstring).

    Args:
        x: ``[T, *shape]`` input current, float32/float16/bfloat16 (float64 on ``torch`` only);
            any strides (non-contiguous inputs are copied once).
        v_init: ``[*shape]`` initial membrane (any float dtype; default 0).
        beta: membrane decay, ``1 - 1/tau``; 1 makes an IF neuron.
        v_th, reset, v_reset: threshold and reset rule ("subtract" | "zero" | "none").
        surrogate, alpha: backward surrogate ("atan" | "sigmoid" | "triangle" | "rectangle").
        detach_reset: drop the reset's path from the gradient.
        backend: "auto" (Triton on CUDA, Numba on CPU), "torch", "numba" or "triton".
        return_state: also return the final membrane.

    Returns:
        spikes ``[T, *shape]`` in x's dtype, and with ``return_state`` the final membrane
        ``[*shape]`` in float32 (float64 for float64 x), ready to pass back as ``v_init``.

    Raises:
        TypeError / ValueError: a non-tensor or non-float x, a 0-dim x, T = 0, a v_init of the
            wrong shape, dtype or device, or a parameter out of range (see :func:`lif_params`).
        RuntimeError: the backend cannot run here (the message says why).
    """
    p = lif_params(beta, v_th, reset, v_reset, surrogate, alpha, detach_reset)
    check_inputs(x, v_init)
    backend = resolve_backend(backend, x)
    if backend == "torch":
        spikes, v_final = multistep_lif_torch(x, v_init, p)
    else:
        # Contiguous here, before autograd saves x: the backward then reuses this copy instead
        # of making its own (a strided x would otherwise be copied twice per training step).
        # Eager calls skip torch.library's dispatch (_EagerLIF); compiled code sees the op.
        fused = (torch.ops.neuro_emu.multistep_lif_fwd if torch.compiler.is_compiling()
                 else _EagerLIF.apply)
        spikes, v_final = fused(
            x.contiguous(),
            v_init,
            p.beta,
            p.v_th,
            p.reset,
            p.v_reset,
            p.surrogate,
            p.sg_a,
            p.sg_b,
            p.detach_reset,
            backend,
        )
    return (spikes, v_final) if return_state else spikes


def multistep_if(x: torch.Tensor, v_init: torch.Tensor | None = None, **kwargs):
    """:func:`multistep_lif` with ``beta = 1`` (integrate-and-fire)."""
    return multistep_lif(x, v_init, beta=1.0, **kwargs)
