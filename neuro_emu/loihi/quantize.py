"""Map float Linear -> LIF layers onto Loihi fixed-point Dense -> CUBA LIF layers, and say what
the mapping loses.

The float layer is ``x[t] = W @ s[t] + b`` into :func:`neuro_emu.ops.multistep_lif` with
``reset="zero"`` (Loihi resets v to 0) and ``v_reset = 0``. The Loihi layer holds ``v`` in integer
units of ``1 / scale`` of the float membrane::

    W_int  = round(W * scale / 64 / 2^weight_exp)     # Dense weights, then Lava's clip/truncation
    dv     = round((1 - beta) * 4096)                 # voltage decay
    du     = 4095                                     # u = a_in << 6 each step: no current memory
    vth    = round(v_th * scale / 64)                 # compared as vth << 6
    bias   = bias_mant << bias_exp ~= b * scale

with ``scale`` chosen so that the largest weight lands on the top of the weight range. Two things
differ by construction and are reported rather than hidden: every Loihi layer delivers its input one
step later (Dense's delay: layer k's spikes at step t are the float layer's at step t - k), and
Loihi fires on ``v > vth << 6`` where the float neuron fires on ``h >= v_th``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neuro_emu.loihi import DenseLIF, lava_weights
from neuro_emu.loihi.network import BIAS_EXP_RANGE, VTH_MAX

WEIGHT_TOP = 254  # largest magnitude every sign mode keeps after Lava's 8-bit clip and truncation
BIAS_MANT_LIMIT = 4095  # bias_mant is 13-bit signed on Loihi (loihi2_spec.md section 1)


@dataclass(frozen=True)
class LayerQuantization:
    """What mapping one layer cost."""

    scale: float  # integer membrane units per float unit
    weight_max_abs_error: float  # in float weight units, after Lava's clip and truncation
    weight_clipped: int  # weights Lava's clip changed
    beta_error: float  # (4096 - dv) / 4096 - beta
    v_th_error: float  # vth << 6 / scale - v_th
    bias_max_abs_error: float


def quantize_linear_lif(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    beta: float,
    v_th: float,
    num_weight_bits: int = 8,
) -> tuple[DenseLIF, LayerQuantization]:
    """Loihi parameters for one float Linear -> LIF layer (see the module docstring).

    Args:
        weight: ``[n_out, n_in]`` float; bias: ``[n_out]`` float or None.
        beta: the float LIF's decay (1 - 1/tau); v_th: its threshold (> 0).
        num_weight_bits: Loihi weight precision, 1..8.

    Returns:
        The :class:`~neuro_emu.loihi.DenseLIF` layer and its :class:`LayerQuantization`.

    Raises:
        ValueError: beta or v_th out of range, all weights zero, or a layer Loihi cannot hold at
            this scale: a v_th more than ~516 times the largest |weight| (vth beyond its 17 bits)
            or a |bias| more than ~32 times it (bias_exp beyond its 3 bits).
    """
    if not (0.0 <= beta <= 1.0) or not v_th > 0:
        raise ValueError(f"need 0 <= beta <= 1 and v_th > 0, got beta={beta}, v_th={v_th}")
    w = weight.detach().to(torch.float64)
    top = float(w.abs().max())
    if top == 0:
        raise ValueError("all weights are zero: nothing to scale")
    scale = WEIGHT_TOP * 64 / top  # weight_exp 0: the largest weight becomes +-WEIGHT_TOP
    w_int = torch.round(w * scale / 64).to(torch.int64)
    w_lava = lava_weights(w_int, num_weight_bits).to(torch.float64)
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().double()
    # The smallest shift that keeps every bias mantissa within 13 bits.
    largest_bias = float((b * scale).abs().max())
    bias_exp = max(0, math.ceil(math.log2(largest_bias / BIAS_MANT_LIMIT))) if largest_bias else 0
    if bias_exp > BIAS_EXP_RANGE[1]:
        raise ValueError(
            f"the largest |bias| ({largest_bias / scale:g}) needs bias_exp = {bias_exp} for a "
            f"13-bit bias_mant, beyond Loihi's 3-bit bias_exp (0..{BIAS_EXP_RANGE[1]}): it is "
            f"{largest_bias / scale / top:g} times the largest |weight|, which sets the scale"
        )
    bias_mant = torch.round(b * scale / 2**bias_exp).to(torch.int64)
    dv = round((1.0 - beta) * 4096)
    vth = round(v_th * scale / 64)
    if vth > VTH_MAX:
        raise ValueError(
            f"v_th={v_th} maps to vth = {vth}, beyond Loihi's 17-bit threshold (0..{VTH_MAX}): "
            f"it is {v_th / top:g} times the largest |weight|, which sets the scale"
        )
    layer = DenseLIF(weights=w_int, du=4095, dv=min(dv, 4095), vth=vth, bias_mant=bias_mant,
                     bias_exp=bias_exp, num_weight_bits=num_weight_bits)
    report = LayerQuantization(
        scale=scale,
        weight_max_abs_error=float((w_lava * 64 / scale - w).abs().max()),
        weight_clipped=int((w_int.clamp(-256, 255) != w_int).sum()),
        beta_error=(4096 - min(dv, 4095)) / 4096 - beta,
        v_th_error=vth * 64 / scale - v_th,
        bias_max_abs_error=float(((bias_mant << bias_exp).double() / scale - b).abs().max()),
    )
    return layer, report


def spike_agreement(float_spikes: torch.Tensor, loihi_spikes: torch.Tensor, depth: int) -> float:
    """Fraction of neuron-steps where the Loihi layer at ``depth`` (1 = first) spikes as the
    float layer did ``depth`` steps earlier (the Dense delays), over the steps both cover."""
    steps = float_spikes.shape[0] - depth
    if steps <= 0:
        raise ValueError(f"need more than {depth} steps to compare a layer at depth {depth}")
    same = float_spikes[:steps].bool() == loihi_spikes[depth:].bool()
    return float(same.double().mean())
