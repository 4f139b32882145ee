"""ANN-to-SNN conversion (QCFS, BatchNorm folding, IF neurons) and its evaluation API.

``neuro_emu.convert`` is both this package (``neuro_emu.convert.qcfs_model``, ...) and callable as
the conversion function itself, so that ``neuro_emu.convert(model, loader, timesteps=32)`` works as
the published tutorials write it.
"""

import sys
import types

from neuro_emu.convert.api import compile, evaluate, evaluate_timesteps, measure_sparsity
from neuro_emu.convert.convert import calibrate_thresholds, convert, fold_batchnorm
from neuro_emu.convert.qcfs import QCFS, qcfs_model, replace_activations
from neuro_emu.convert.sparse import sparsify

__all__ = [
    "QCFS",
    "calibrate_thresholds",
    "compile",
    "convert",
    "evaluate",
    "evaluate_timesteps",
    "fold_batchnorm",
    "measure_sparsity",
    "qcfs_model",
    "replace_activations",
    "sparsify",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
