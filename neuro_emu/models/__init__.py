"""CIFAR-10 networks: the SNN/ANN VGG of the training benchmark, VGG-16 and ResNet-18.

Each builder takes ``activation``: a factory of the module placed after every BatchNorm (and
after the hidden classifier layer), ``nn.ReLU`` for the ANN, a folded-mode ``LIF``/``IF`` for an
SNN, which :func:`build_model` wraps in a :class:`~neuro_emu.layers.SpikingNetwork`.
"""

from neuro_emu.models.resnet import BasicBlock, ResNet, resnet18
from neuro_emu.models.vgg import SNN_VGG_CONFIG, VGG, VGG16_CONFIG, vgg
from neuro_emu.models.zoo import MODELS, build_model, lif_neuron

__all__ = [
    "MODELS",
    "SNN_VGG_CONFIG",
    "VGG",
    "VGG16_CONFIG",
    "BasicBlock",
    "ResNet",
    "build_model",
    "lif_neuron",
    "resnet18",
    "vgg",
]
