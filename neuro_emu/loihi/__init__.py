"""Bit-accurate emulation of Loihi's fixed-point neurons and synapses, as Lava computes them.

So far: :func:`run_dense_lif`, one Dense -> LIF pair exactly as Lava's RingBuffer -> Dense -> LIF
-> RingBuffer chain runs it, and :func:`run_dense_lif_stack` for feed-forward stacks of them
(``../shared/loihi2_spec.md``; checked against vectors recorded from Lava 0.10.0 in
``tests/golden/``); :mod:`neuro_emu.loihi.quantize` maps float Linear -> LIF layers onto them.
:func:`run_conv_lif` does the same for Conv -> LIF (:mod:`neuro_emu.ops.loihi_conv`; both Lava's
Dense weight handling and its Conv model's, checked against Lava in ``tests/golden/``).
Whole networks: :mod:`neuro_emu.loihi.network` folds and quantizes a SpikingNetwork (BatchNorm,
Scale and average pooling folded into the synapses) into a :class:`LoihiNetwork` that
``compile(net, target="loihi2_sim")`` returns, with a quantization report and
:func:`evaluate_accuracy` (float vs integer); :mod:`neuro_emu.loihi.resources` estimates its
Loihi 2 resources and energy from cited figures.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from neuro_emu.ops.loihi_conv import IntPair, conv_input
from neuro_emu.ops.loihi_lif import (
    NUM_WEIGHT_BITS_RANGE,
    WEIGHT_EXP_RANGE,
    check_int_param,
    dense_input,
    loihi_lif,
)
from neuro_emu.ops.multistep_lif import backend_unavailable_reason

IntLike = int | np.ndarray | torch.Tensor


def lava_sign_mode(low: int, high: int, num_weight_bits: int) -> tuple[bool, bool, int]:
    """Lava's Dense sign mode for weights in ``[low, high]`` (spec section 3): ``(mixed,
    inhibitory, drop)``, drop being how many low bits its truncation clears. Excitatory weights
    (all >= 0) are neither mixed nor inhibitory."""
    mixed = low < 0 < high
    return mixed, low < 0 and high <= 0, 8 - num_weight_bits + int(mixed)


def lava_weights(weights: torch.Tensor, num_weight_bits: int = 8) -> torch.Tensor:
    """The weights Lava's bit-accurate Dense actually uses (spec section 3), as int16.

    The sign mode comes from the weights (:func:`lava_sign_mode`): excitatory (all >= 0),
    inhibitory (all <= 0) or mixed. They are clipped to 8 bits of magnitude ([0, 255], or
    [-256, 255] when mixed), then their ``8 - num_weight_bits`` (+1 when mixed) lowest bits are
    cleared: toward -inf for excitatory and mixed weights, toward zero (in magnitude) for
    inhibitory ones.
    """
    low, high = (int(v) for v in torch.aminmax(weights))
    mixed, inhibitory, drop = lava_sign_mode(low, high, num_weight_bits)
    # One narrowing copy to int16 (after a clamp only if some raw weight does not fit), then
    # in place: a fresh full-width temporary per step costs more in page faults than the math.
    # copy=True: .to() returns int16 weights themselves, which the steps below must not touch.
    fits = -(2**15) < low and high < 2**15
    w = (weights if fits else weights.clamp(-(2**15) + 1, 2**15 - 1)).to(torch.int16, copy=True)
    if inhibitory:
        w.neg_()
    w.clamp_(-256 if mixed else 0, 255)
    w.bitwise_right_shift_(drop).bitwise_left_shift_(drop)
    return w.neg_() if inhibitory else w


def _per_neuron(value: IntLike, n: int, name: str, low: int, high: int) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be integer, got {t.dtype}")
    t = t.to(torch.int64)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    if bool((t < low).any()) or bool((t > high).any()):
        raise ValueError(f"{name} must lie in [{low}, {high}], got values in "
                         f"[{int(t.min())}, {int(t.max())}]")
    return t.contiguous()


class PreparedDenseLIF:
    """A Dense -> LIF pair whose weights are prepared once and run on many inputs, as Lava
    compiles a network once and runs it: :func:`run_dense_lif` is ``PreparedDenseLIF(weights,
    **params).run(in_spikes, u0=..., v0=...)``. Arguments as :func:`run_dense_lif`.

    On the numba backend the weights are kept as 8-bit mantissas ``[n_in, n_out]`` and Dense and
    LIF run as one event-driven kernel (``reference/loihi_dense_lif.py``); the other backends keep
    Lava's clipped weights and run ``dense_input`` then the LIF kernel."""

    def __init__(
        self,
        weights: torch.Tensor,
        *,
        weight_exp: int = 0,
        num_weight_bits: int = 8,
        num_message_bits: int = 0,
        du: IntLike,
        dv: IntLike,
        vth: IntLike,
        bias_mant: IntLike = 0,
        bias_exp: IntLike = 0,
        backend: str = "numba",
    ) -> None:
        if not isinstance(weights, torch.Tensor) or weights.dim() != 2:
            raise ValueError("weights must be a tensor [n_out, n_in]")
        if weights.dtype.is_floating_point or weights.dtype.is_complex:
            raise TypeError(f"weights must hold integers, got {weights.dtype}")
        if weights.numel() == 0:
            raise ValueError(f"weights must connect at least one input to one neuron, got shape "
                             f"{tuple(weights.shape)}")
        weight_exp = check_int_param("weight_exp", weight_exp, *WEIGHT_EXP_RANGE)
        num_weight_bits = check_int_param("num_weight_bits", num_weight_bits,
                                          *NUM_WEIGHT_BITS_RANGE)
        if num_message_bits < 0:
            raise ValueError(f"num_message_bits must be >= 0, got {num_message_bits}")
        if backend not in ("numba", "triton", "torch"):
            raise ValueError(f"backend must be 'torch', 'numba' or 'triton', got {backend!r}")
        n = weights.shape[0]
        self.n_in, self.n_out = weights.shape[1], n
        self.weight_exp, self.graded, self.backend = weight_exp, num_message_bits > 0, backend
        self.device = weights.device
        params = {
            "du": _per_neuron(du, n, "du", -1, 4095),
            "dv": _per_neuron(dv, n, "dv", 0, 4095),
            "vth": _per_neuron(vth, n, "vth", 0, 2**31 - 1),
        }
        mant = _per_neuron(bias_mant, n, "bias_mant", -(2**31), 2**31 - 1)
        exp = _per_neuron(bias_exp, n, "bias_exp", -31, 31)
        params["bias"] = torch.where(exp >= 0, mant << exp.clamp(min=0),
                                     mant >> (-exp).clamp(min=0))
        self.params = {k: t.to(self.device) for k, t in params.items()}
        if backend == "numba":
            reason = backend_unavailable_reason("numba", self.device)
            if reason is not None:
                raise RuntimeError(f"backend='numba' is not available: {reason}")
            self._fused = importlib.import_module("neuro_emu.reference.loihi_dense_lif")
            low, high = (int(v) for v in torch.aminmax(weights))
            self._weights = self._fused.prepare(
                weights, *lava_sign_mode(low, high, num_weight_bits)
            )
        else:
            self._weights = lava_weights(weights, num_weight_bits)

    def run(self, in_spikes: torch.Tensor, *, u0: IntLike = 0,
            v0: IntLike = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The traces ``u, v, s``, each ``[T, n_out]`` int32, of ``in_spikes: [T, n_in]`` from
        the initial state ``u0, v0`` (scalars or ``[n_out]``); empty for T = 0."""
        if not isinstance(in_spikes, torch.Tensor) or in_spikes.dim() != 2:
            raise ValueError("in_spikes must be a tensor [T, n_in]")
        if in_spikes.dtype.is_floating_point or in_spikes.dtype.is_complex:
            raise TypeError(f"in_spikes must hold integers, got {in_spikes.dtype}")
        if in_spikes.shape[1] != self.n_in:
            raise ValueError(f"in_spikes has {in_spikes.shape[1]} inputs per step, weights "
                             f"expect {self.n_in}")
        n = self.n_out
        u0 = _per_neuron(u0, n, "u0", -(2**31), 2**31 - 1).to(self.device)
        v0 = _per_neuron(v0, n, "v0", -(2**31), 2**31 - 1).to(self.device)
        p = self.params
        in_spikes = in_spikes.to(self.device)
        if self.backend == "numba":
            return self._fused.run(self._weights, in_spikes, self.weight_exp, self.graded, u0, v0,
                                   p["du"], p["dv"], p["vth"], p["bias"])
        a_in = dense_input(self._weights, in_spikes, self.weight_exp, graded=self.graded)
        return loihi_lif(a_in, u0, v0, p["du"], p["dv"], p["vth"], p["bias"],
                         backend=self.backend)


def run_dense_lif(
    weights: torch.Tensor,
    in_spikes: torch.Tensor,
    *,
    weight_exp: int = 0,
    num_weight_bits: int = 8,
    num_message_bits: int = 0,
    du: IntLike,
    dv: IntLike,
    vth: IntLike,
    bias_mant: IntLike = 0,
    bias_exp: IntLike = 0,
    u0: IntLike = 0,
    v0: IntLike = 0,
    backend: str = "numba",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``in_spikes`` through Lava's bit-accurate Dense and fixed-point LIF.

    Args:
        weights: ``[n_out, n_in]`` raw integer weights (Lava's clip and truncation are applied).
        in_spikes: ``[T, n_in]`` integers: 0/1 spikes, or payloads when ``num_message_bits > 0``.
        weight_exp: the Dense output shift (negative: floor shift right), an int in -31..31
            (Lava sets no bound; ``neuro_emu.ops.loihi_lif.WEIGHT_EXP_RANGE`` says why this one).
        num_weight_bits: an int in 1..8, weight precision.
        num_message_bits: 0 for binary spikes, else graded payloads.
        du: current decay, -1..4095 (Lava adds 1; -1 holds u, as lava-dl uses it);
            dv: voltage decay, 0..4095; vth: threshold mantissa, >= 0 (compared as vth << 6).
        bias_mant, bias_exp: bias = bias_mant << bias_exp (floor shift right when negative).
        u0, v0: initial current and voltage.
        All neuron parameters: a scalar or one value per neuron ``[n_out]``.
        backend: "numba" (CPU), "triton" (CUDA, or its interpreter), or "torch" (the spec).

    Returns:
        The traces ``u, v, s``, each ``[T, n_out]`` int32, as Lava's ``Var.get()`` shows them
        after every step (empty for T = 0).

    Raises:
        TypeError / ValueError: weights, spikes or parameters of the wrong type, shape or range
            (the message names the argument); RuntimeError: the backend cannot run here.
    """
    prepared = PreparedDenseLIF(
        weights, weight_exp=weight_exp, num_weight_bits=num_weight_bits,
        num_message_bits=num_message_bits, du=du, dv=dv, vth=vth, bias_mant=bias_mant,
        bias_exp=bias_exp, backend=backend,
    )
    return prepared.run(in_spikes, u0=u0, v0=v0)


def _per_conv_neuron(value: IntLike, shape: tuple[int, int, int], name: str, low: int,
                     high: int) -> torch.Tensor:
    """``value`` (scalar, per channel ``[C_out]`` or per neuron ``[C_out, OH, OW]``) as ``[N]``."""
    t = torch.as_tensor(value)
    if t.dim() == 1 and t.shape[0] == shape[0]:
        t = t[:, None, None]
    if t.dim() != 0 and tuple(t.shape) not in ((shape[0], 1, 1), shape):
        raise ValueError(f"{name} must be a scalar, per channel ({shape[0]},) or per neuron "
                         f"{shape}, got {tuple(t.shape)}")
    return _per_neuron(t.expand(shape).reshape(-1) if t.dim() else t, math.prod(shape), name,
                       low, high)


def run_conv_lif(
    weights: torch.Tensor,
    in_spikes: torch.Tensor,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    weight_exp: int = 0,
    num_weight_bits: int = 8,
    num_message_bits: int = 0,
    weight_handling: str = "loihi",
    du: IntLike,
    dv: IntLike,
    vth: IntLike,
    bias_mant: IntLike = 0,
    bias_exp: IntLike = 0,
    u0: IntLike = 0,
    v0: IntLike = 0,
    backend: str = "numba",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``in_spikes`` through a Loihi Conv synapse and the fixed-point LIF, as Lava's
    RingBuffer -> Conv (or Dense on the conv matrix) -> LIF -> RingBuffer chain runs it.

    Args:
        weights: ``[C_out, C_in // groups, KH, KW]`` raw integers (torch layout, cross-correlation).
        in_spikes: ``[T, C_in, H, W]`` integers: 0/1 spikes, or payloads when
            ``num_message_bits > 0``.
        stride, padding, dilation, groups, weight_exp, num_weight_bits, num_message_bits,
            weight_handling: as :func:`neuro_emu.ops.loihi_conv.conv_input` ("loihi": Dense's
            clip/truncate/shift; "lava_conv": Lava 0.10.0's Conv model, raw weights, 24-bit wrap).
        du, dv, vth, bias_mant, bias_exp, u0, v0: as :func:`run_dense_lif`, each a scalar, one
            value per output channel ``[C_out]`` or per neuron ``[C_out, OH, OW]``.
        backend: "numba" (CPU), "triton" (CUDA, or its interpreter) or "torch" (the spec), for
            both the convolution and the LIF.

    Returns:
        The traces ``u, v, s``, each ``[T, C_out, OH, OW]`` int32, as Lava's ``Var.get()`` shows
        them after every step (Lava's (X, Y, C) arrays transposed to (C, Y, X)); empty for T = 0.

    Raises:
        TypeError / ValueError / RuntimeError: as ``conv_input``, and for neuron parameters of the
        wrong dtype, shape or range (the message names the parameter).
    """
    a_in = conv_input(weights, in_spikes, stride=stride, padding=padding, dilation=dilation,
                      groups=groups, weight_exp=weight_exp, num_weight_bits=num_weight_bits,
                      num_message_bits=num_message_bits, weight_handling=weight_handling,
                      backend=backend)
    steps, shape = a_in.shape[0], tuple(a_in.shape[1:])
    params = {
        "du": _per_conv_neuron(du, shape, "du", -1, 4095),
        "dv": _per_conv_neuron(dv, shape, "dv", 0, 4095),
        "vth": _per_conv_neuron(vth, shape, "vth", 0, 2**31 - 1),
        "u0": _per_conv_neuron(u0, shape, "u0", -(2**31), 2**31 - 1),
        "v0": _per_conv_neuron(v0, shape, "v0", -(2**31), 2**31 - 1),
    }
    mant = _per_conv_neuron(bias_mant, shape, "bias_mant", -(2**31), 2**31 - 1)
    exp = _per_conv_neuron(bias_exp, shape, "bias_exp", -31, 31)
    params["bias"] = torch.where(exp >= 0, mant << exp.clamp(min=0), mant >> (-exp).clamp(min=0))
    p = {k: t.to(a_in.device) for k, t in params.items()}
    traces = loihi_lif(a_in.flatten(1), p["u0"], p["v0"], p["du"], p["dv"], p["vth"],
                       p["bias"], backend=backend)
    return tuple(t.view(steps, *shape) for t in traces)


@dataclass(frozen=True)
class DenseLIF:
    """One Dense -> LIF layer of a stack: the arguments of :func:`run_dense_lif` but the input."""

    weights: torch.Tensor
    du: IntLike
    dv: IntLike
    vth: IntLike
    weight_exp: int = 0
    num_weight_bits: int = 8
    num_message_bits: int = 0
    bias_mant: IntLike = 0
    bias_exp: IntLike = 0
    u0: IntLike = 0
    v0: IntLike = 0


def run_dense_lif_stack(
    layers: list[DenseLIF], in_spikes: torch.Tensor, *, backend: str = "numba"
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run a feed-forward stack of Dense -> LIF layers as Lava runs the chained processes.

    Layer k + 1's Dense receives layer k's spikes of the same step and, like every Dense,
    delivers them one step later, so the stack is the composition of :func:`run_dense_lif`
    calls, each on the previous layer's spike trace.

    Returns:
        ``(u, v, s)`` per layer, each ``[T, n_out]`` int32.
    """
    if not layers:
        raise ValueError("layers must hold at least one DenseLIF")
    traces = []
    spikes = in_spikes
    for layer in layers:
        u, v, s = run_dense_lif(layer.weights, spikes, **{
            name: getattr(layer, name) for name in DenseLIF.__dataclass_fields__
            if name != "weights"
        }, backend=backend)
        traces.append((u, v, s))
        spikes = s
    return traces


# Whole networks (they import the layer functions above).
from neuro_emu.loihi.network import (  # noqa: E402
    LoihiNetwork,
    evaluate_accuracy,
    fold_network,
    quantize_network,
)
from neuro_emu.loihi.resources import resource_report  # noqa: E402

__all__ = [
    "DenseLIF", "LoihiNetwork", "PreparedDenseLIF", "evaluate_accuracy", "fold_network",
    "lava_sign_mode", "lava_weights", "quantize_network", "resource_report", "run_conv_lif",
    "run_dense_lif", "run_dense_lif_stack",
]
