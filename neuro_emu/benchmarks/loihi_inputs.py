"""The Loihi benchmark's shapes, parameters and inputs, from numpy and the standard library alone:
``bench/lava_timing.py`` loads this file by path under Lava's own Python (no torch, no neuro_emu),
so both sides time the same networks on the same arrays."""

from __future__ import annotations

import hashlib

import numpy as np

SHAPES: list[tuple[int, int, int]] = [  # (n_in, n_out, T)
    (64, 64, 100),
    (256, 256, 100),
    (256, 256, 1000),
    (1024, 1024, 100),
    (4096, 1024, 50),
    # The network sizes: 1k, 100k and 1M neurons, Dense fan-in 256, 10% input activity.
    (256, 1_000, 100),
    (256, 100_000, 100),
    (256, 1_000_000, 20),
]
QUICK_SHAPES: list[tuple[int, int, int]] = SHAPES[:1]
SEED = 0
DENSITY = 0.1  # input spike probability per input and step
WEIGHT_LOW, WEIGHT_HIGH = -255, 255  # inclusive
NEURON: dict[str, int] = {"du": 1000, "dv": 1000, "vth": 100, "bias_mant": 0, "bias_exp": 0}
DENSE: dict[str, int] = {"weight_exp": 0, "num_weight_bits": 8, "num_message_bits": 0}


def bench_inputs(n_in: int, n_out: int, steps: int, seed: int = SEED):
    """``weights [n_out, n_in]`` in [WEIGHT_LOW, WEIGHT_HIGH] and 0/1 ``spikes [T, n_in]``, int64
    numpy arrays from ``numpy.random.default_rng(seed)``, weights drawn first."""
    rng = np.random.default_rng(seed)
    weights = rng.integers(WEIGHT_LOW, WEIGHT_HIGH + 1, size=(n_out, n_in), dtype=np.int64)
    spikes = (rng.random((steps, n_in)) < DENSITY).astype(np.int64)
    return weights, spikes


def sha256(array: np.ndarray) -> str:
    """sha256 of the array's bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
