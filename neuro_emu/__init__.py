"""neuro-emu: spiking-neural-network hardware emulation on CPUs and GPUs."""

__version__ = "0.1.0"

import importlib

# The public API, imported on first use so that `import neuro_emu` (and `neuro-emu --help`) stays
# cheap: name -> the module that defines it.
_LAZY = {
    "convert": "neuro_emu.convert",  # the package, callable as the conversion function
    "compile": "neuro_emu.convert.api",
    "evaluate": "neuro_emu.convert.api",
    "measure_sparsity": "neuro_emu.convert.api",
    "evaluate_timesteps": "neuro_emu.convert.api",
    "to_nir": "neuro_emu.nir",
    "from_nir": "neuro_emu.nir",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'neuro_emu' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__ == f"neuro_emu.{name}" else getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
