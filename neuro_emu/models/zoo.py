"""Models by name, as the CLI and the trainer build them."""

from __future__ import annotations

import functools

from torch import nn

from neuro_emu.layers import LIF, SpikingNetwork
from neuro_emu.models.resnet import resnet18
from neuro_emu.models.vgg import SNN_VGG_CONFIG, VGG16_CONFIG, vgg

# name -> (architecture, spiking). "snn-*" are trained directly with surrogate gradients.
MODELS: dict[str, tuple[str, bool]] = {
    "snn-vgg": ("vgg", True),
    "ann-vgg": ("vgg", False),
    "vgg16": ("vgg16", False),
    "resnet18": ("resnet18", False),
}


def lif_neuron(
    tau: float = 2.0, v_th: float = 1.0, surrogate: str = "atan", alpha: float = 2.0,
    detach_reset: bool = False, backend: str = "auto",
) -> functools.partial:
    """A factory of folded-mode LIF layers: the training recipe's neuron (tau = 2, i.e. beta =
    0.5; v_th = 1; soft reset; ATan surrogate, alpha = 2; reset kept in the gradient)."""
    return functools.partial(
        LIF, tau=tau, v_th=v_th, reset="subtract", surrogate=surrogate, alpha=alpha,
        detach_reset=detach_reset, backend=backend, step_mode="folded",
    )


def build_model(
    name: str, *, width: float = 1.0, timesteps: int = 4, num_classes: int = 10,
    backend: str = "auto", tau: float = 2.0,
) -> nn.Module:
    """Build model ``name`` (a key of :data:`MODELS`): ``x: [B, 3, 32, 32] -> [B, num_classes]``.

    Spiking models come wrapped in :class:`SpikingNetwork` over ``timesteps`` steps, their LIF
    layers on ``backend``; ANNs use ReLU and ignore ``timesteps`` and ``backend``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    arch, spiking = MODELS[name]
    activation = lif_neuron(tau=tau, backend=backend) if spiking else nn.ReLU
    if arch == "resnet18":
        body = resnet18(activation, width=width, num_classes=num_classes)
    else:
        config = SNN_VGG_CONFIG if arch == "vgg" else VGG16_CONFIG
        body = vgg(config, activation, width=width, num_classes=num_classes)
    return SpikingNetwork(body, timesteps) if spiking else body
