"""Direct SNN / ANN training on CIFAR-10 (``neuro-emu train``), its reports and energy estimates."""

from neuro_emu.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    save_json,
)
from neuro_emu.train.energy import AC_PJ, MAC_PJ, count_synaptic_ops
from neuro_emu.train.trainer import TrainConfig, evaluate_loader, load_trained, train

__all__ = [
    "AC_PJ",
    "CheckpointError",
    "MAC_PJ",
    "TrainConfig",
    "count_synaptic_ops",
    "evaluate_loader",
    "load_checkpoint",
    "load_trained",
    "save_checkpoint",
    "save_json",
    "train",
]
