"""neuro-emu: spiking-neural-network hardware emulation on CPUs and GPUs."""

__version__ = "0.1.0"
