"""Spiking layers: nn.Modules over neuro_emu.ops, multi-step [T, B, ...] by default."""

from neuro_emu.layers.neurons import IF, LIF

__all__ = ["IF", "LIF"]
