"""Synaptic-operation counts per layer, and the energy estimate they give.

Event-driven (``skip_zeros=True``, the SNN's convention): a layer does work only for its nonzero
inputs, one operation per (nonzero input, synapse it feeds) pair; it is an accumulate (AC) where
the input is binary spikes, a multiply-accumulate (MAC) where it is not (the first convolution's
analog image under direct encoding, and layers fed by average pooling, whose inputs are spike
counts / 4). Dense (``skip_zeros=False``, the ANN's convention): every synapse of every input is a
MAC, zeros included, as a GPU or ANN accelerator computes it. The per-operation energies are the
45 nm figures of M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC
2014: a 32-bit float add 0.9 pJ, a 32-bit float multiply 3.7 pJ, so a MAC 0.9 + 3.7 = 4.6 pJ.
These are arithmetic only (no memory traffic, which dominates on real chips): the estimate ranks
models, it does not predict a chip's power.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

AC_PJ = 0.9  # 32-bit float add, 45 nm (Horowitz, ISSCC 2014)
MAC_PJ = 4.6  # 32-bit float multiply (3.7 pJ) + add (0.9 pJ), 45 nm (Horowitz, ISSCC 2014)


@dataclass
class LayerOps:
    """Operations one conv/linear layer performed over the counted samples."""

    name: str
    kind: str  # "AC" (binary input) or "MAC" (analog input)
    ops: float = 0.0  # synaptic operations actually performed
    dense_macs: float = 0.0  # what the same layer costs as an ANN layer

    @property
    def energy_pj(self) -> float:
        return self.ops * (AC_PJ if self.kind == "AC" else MAC_PJ)


@dataclass
class OpsReport:
    """Per-layer counts over ``samples`` input images; ``per_image`` figures divide by them."""

    layers: list[LayerOps] = field(default_factory=list)
    samples: int = 0

    def energy_per_image_uj(self) -> float:
        return sum(layer.energy_pj for layer in self.layers) / max(self.samples, 1) * 1e-6

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "ac_pj": AC_PJ,
            "mac_pj": MAC_PJ,
            "energy_per_image_uj": self.energy_per_image_uj(),
            "layers": [
                {"name": layer.name, "kind": layer.kind, "ops_per_image": layer.ops / max(
                    self.samples, 1), "energy_per_image_uj": layer.energy_pj / max(
                    self.samples, 1) * 1e-6}
                for layer in self.layers
            ],
        }


def _performed_ops(module: nn.Module, x: torch.Tensor, skip_zeros: bool) -> tuple[bool, float,
                                                                                  float]:
    """(input is binary, ops performed, dense MACs) of one call of a Conv2d or Linear.

    Ops performed, skipping zeros: every (nonzero input, synapse it feeds) pair, counted exactly
    (padding and stride included) by convolving the nonzero map with a ones kernel. Dense MACs:
    output elements times fan-in.
    """
    x = x.detach()
    binary = bool(((x == 0) | (x == 1)).all())
    if isinstance(module, nn.Linear):
        dense = x.numel() / x.shape[-1] * module.in_features * module.out_features
        ops = float((x != 0).sum()) * module.out_features if skip_zeros else dense
        return binary, ops, dense
    conv: nn.Conv2d = module
    k_h, k_w = conv.kernel_size
    active = (x != 0).to(torch.float32)
    groups = conv.groups
    cin_group = conv.in_channels // groups
    out_per_group = conv.out_channels // groups
    # nonzero inputs per group, then how many output positions each one reaches
    per_group = active.unflatten(1, (groups, cin_group)).sum(2)  # [N, groups, H, W]
    reach = F.conv2d(per_group, torch.ones(groups, 1, k_h, k_w, device=x.device),
                     stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                     groups=groups)
    out_positions = reach.shape[-1] * reach.shape[-2] * x.shape[0]
    dense = float(out_positions * conv.out_channels * cin_group * k_h * k_w)
    ops = float(reach.sum()) * out_per_group if skip_zeros else dense
    return binary, ops, dense


@torch.no_grad()
def count_synaptic_ops(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                       timesteps: int = 1, skip_zeros: bool = True) -> OpsReport:
    """Count the synaptic operations of every Conv2d/Linear of ``model`` on ``images: [N, 3, H,
    W]`` (already normalised, on the model's device).

    ``timesteps``: the steps the model folds into its batch (a SpikingNetwork's T), so that
    ``dense_macs`` is per image, not per image-step (an ANN computes each layer once per image).
    ``skip_zeros``: the event-driven count (SNNs) or the dense one (ANNs); see the module doc.
    """
    report = OpsReport()
    by_name: dict[str, LayerOps] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):

            def hook(mod, inputs, _out, name=name) -> None:
                binary, ops, dense = _performed_ops(mod, inputs[0], skip_zeros)
                kind = "AC" if binary and skip_zeros else "MAC"
                layer = by_name.setdefault(name, LayerOps(name, kind))
                if kind == "MAC":
                    layer.kind = "MAC"
                layer.ops += ops
                layer.dense_macs += dense / timesteps

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            model(images[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    report.layers = list(by_name.values())
    report.samples = images.shape[0]
    return report
