"""Surrogate derivatives of the spike nonlinearity, shared by every backend.

The forward pass spikes with a Heaviside step, ``s = H(u)`` with ``u = h - v_th``; backward
replaces ``dH/du`` with a smooth surrogate ``g(u)``. Each surrogate reduces to two float32 constants
``(a, b)`` computed once here, so the PyTorch spec, the Numba twin and the Triton kernel evaluate
the same operations on the same numbers, in the same order:

======== ================================ ========================== =========================
name     g(u)                              a                          b
======== ================================ ========================== =========================
atan     b / (1 + (a*u)^2)                 pi/2 * alpha               alpha / 2
sigmoid  (sg*a) * (1 - sg), sg = 1/(1+e^-au) alpha                    unused
triangle a * max(0, 1 - |u|*a)             alpha                      unused
rectangle a if |u| < b else 0              alpha                      1 / (2 * alpha)
======== ================================ ========================== =========================

Each ``g`` integrates to 1 and is the exact derivative of :func:`surrogate_primitive`.
``atan``, ``triangle`` and ``rectangle`` use only correctly rounded IEEE operations, so their
gradients are bit exact across backends; ``sigmoid`` calls ``exp``, whose last bit differs
between libm, Sleef and CUDA, so its gradients agree to a stated tolerance instead
(``neuro_emu.conformance``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SURROGATES: tuple[str, ...] = ("atan", "sigmoid", "triangle", "rectangle")
SURROGATE_IDS: dict[str, int] = {name: i for i, name in enumerate(SURROGATES)}
_FLOAT32_OVERFLOW = 3.4028235677973366e38  # the largest float32 plus half an ulp: rounds to inf


def as_float32(value: float) -> float:
    """``value`` rounded to the nearest float32, as a Python float (exact in every backend);
    too large a value becomes inf, which the callers reject."""
    if abs(value) >= _FLOAT32_OVERFLOW:  # numpy would warn; torch.compile cannot trace errstate
        return math.copysign(math.inf, value)
    return float(np.float32(value))


def surrogate_constants(surrogate: str, alpha: float) -> tuple[float, float]:
    """The float32 constants ``(a, b)`` of ``surrogate`` with sharpness ``alpha`` (see table)."""
    if surrogate not in SURROGATE_IDS:
        raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if surrogate == "atan":
        constants = as_float32(math.pi / 2 * alpha), as_float32(alpha / 2)
    elif surrogate == "rectangle":
        constants = as_float32(alpha), as_float32(0.5 / alpha)
    else:
        constants = as_float32(alpha), 0.0
    if not all(math.isfinite(c) for c in constants) or constants[0] == 0:
        raise ValueError(f"alpha={alpha!r} overflows or underflows float32 for {surrogate}")
    return constants


def surrogate_grad(u: torch.Tensor, surrogate: int, a: float, b: float) -> torch.Tensor:
    """``g(u)`` elementwise, in ``u``'s dtype, in the operation order of the kernels.

    ``surrogate`` is an index into :data:`SURROGATES`. Division takes a tensor numerator on purpose:
    PyTorch computes ``scalar / tensor`` as ``reciprocal(tensor) * scalar``, which rounds twice.
    """
    if surrogate == 0:
        au = u * a
        return torch.div(torch.tensor(b, dtype=u.dtype), au * au + 1)
    if surrogate == 1:
        sg = torch.div(torch.tensor(1.0, dtype=u.dtype), torch.exp(-(u * a)) + 1)
        return (sg * a) * (1 - sg)
    if surrogate == 2:
        t = 1 - u.abs() * a
        return torch.where(t > 0, t * a, 0.0)
    return torch.where(u.abs() < b, a, 0.0).to(u.dtype)


def surrogate_primitive(u: torch.Tensor, surrogate: int, a: float, b: float) -> torch.Tensor:
    """A smooth step whose derivative is ``g(u)``: the function the surrogate pretends H is.

    Used for gradient checks (``torch.autograd.gradcheck`` needs a forward whose true derivative
    is the surrogate) and as a "soft spike" in analysis.
    """
    if surrogate == 0:
        # d/du [atan(a u) / pi] = (a / pi) / (1 + (a u)^2) and a / pi = alpha / 2 = b.
        return torch.atan(u * a) / math.pi + 0.5
    if surrogate == 1:
        return torch.sigmoid(u * a)
    if surrogate == 2:
        au = (u * a).clamp(-1.0, 1.0)
        return torch.where(au < 0, (au + 1) ** 2 / 2, 1 - (1 - au) ** 2 / 2)
    return (u * a + 0.5).clamp(0.0, 1.0)
