"""Spiking layers: nn.Modules over neuro_emu.ops, multi-step [T, B, ...] by default."""

from neuro_emu.layers.network import SpikeCounts, SpikingNetwork
from neuro_emu.layers.neurons import IF, LIF
from neuro_emu.layers.scale import Scale
from neuro_emu.layers.synapses import SpikingConv2d, SpikingLinear

__all__ = ["IF", "LIF", "Scale", "SpikeCounts", "SpikingConv2d", "SpikingLinear", "SpikingNetwork"]
