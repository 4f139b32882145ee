"""NIR export and import: :func:`to_nir` writes a SpikingNetwork as a NIR graph (BatchNorm folded,
residual additions as edges), :func:`from_nir` builds an executable SpikingNetwork from one, on any
backend. Our own round trip is exact; the time-constant mapping is in :mod:`neuro_emu.nir.export`.

The names below are imported on first use, so that ``neuro_emu.nir.cli`` (and ``neuro-emu
--help``) does not pull in torch.
"""

import importlib

_LAZY = {
    "NIRExportError": "neuro_emu.nir.export",
    "NIRExportWarning": "neuro_emu.nir.export",
    "fold_batchnorm": "neuro_emu.nir.export",
    "to_nir": "neuro_emu.nir.export",
    "NIRImportError": "neuro_emu.nir.importer",
    "NIRImportWarning": "neuro_emu.nir.importer",
    "from_nir": "neuro_emu.nir.importer",
    "read_nir": "neuro_emu.nir.importer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'neuro_emu.nir' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
