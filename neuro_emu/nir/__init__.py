"""NIR export and import: :func:`to_nir` writes a SpikingNetwork as a NIR graph (BatchNorm folded,
residual additions as edges), :func:`from_nir` builds an executable SpikingNetwork from one, on any
backend. Our own round trip is exact; the time-constant mapping is in :mod:`neuro_emu.nir.export`.
"""

from neuro_emu.nir.export import (
    NIRExportError,
    NIRExportWarning,
    fold_batchnorm,
    to_nir,
)
from neuro_emu.nir.importer import NIRImportError, NIRImportWarning, from_nir, read_nir

__all__ = [
    "NIRExportError",
    "NIRExportWarning",
    "NIRImportError",
    "NIRImportWarning",
    "fold_batchnorm",
    "from_nir",
    "read_nir",
    "to_nir",
]
