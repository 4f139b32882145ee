"""The one table of multi-step neuron cases that every backend is tested on, and its comparisons."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_emu.conformance import compare_tensors
from neuro_emu.ops import available_backends

# With a GPU the Triton kernels run natively on CUDA copies of the inputs; without one, in Triton's
# interpreter on the CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1).
BACKENDS = ["torch", "numba", "triton"]


def device_for(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "triton" and torch.cuda.is_available() else "cpu")


# The Triton interpreter runs kernels in numpy, slowly: it gets the small cases only.
INTERPRETED_MAX_ELEMENTS = 50_000


@dataclass(frozen=True)
class NeuronCase:
    name: str
    steps: int
    shape: tuple[int, ...]
    beta: float = 0.5
    reset: str = "subtract"
    v_init: bool = False
    surrogate: str = "atan"
    detach_reset: bool = False
    dtype: torch.dtype = torch.float32
    inputs: str = "uniform"  # | "threshold" (on v_th and one ulp either side) | "nonfinite"
    v_th: float = 1.0
    v_reset: float = 0.0

    @property
    def numel(self) -> int:
        return self.steps * math.prod(self.shape)

    def op_kwargs(self) -> dict:
        return dict(
            beta=self.beta, v_th=self.v_th, reset=self.reset, v_reset=self.v_reset,
            surrogate=self.surrogate, detach_reset=self.detach_reset,
        )

    def make_inputs(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [T, *shape] and v_init: [*shape] (or None), deterministic per case."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand((self.steps, *self.shape), generator=gen) * 1.6 - 0.3
        if self.inputs == "threshold":
            # On v_th, one ulp below, one ulp above, and the same around v_th - v (later steps).
            v_th = torch.tensor(self.v_th)
            below, above = torch.nextafter(v_th, -v_th), torch.nextafter(v_th, 2 * v_th)
            edge = torch.stack([v_th, below, above])
            flat = x.view(self.steps, -1)
            flat[:, : flat.shape[1]] = edge.repeat(flat.shape[1] // 3 + 1)[: flat.shape[1]]
        if self.inputs == "nonfinite":
            flat = x.view(self.steps, -1)
            specials = torch.tensor([float("nan"), float("inf"), -float("inf")])
            flat[1 % self.steps, :3] = specials
        v_init = None
        if self.v_init:
            v_init = torch.rand(self.shape, generator=gen) * self.v_th
        return x.to(self.dtype), v_init


def _cases() -> list[NeuronCase]:
    cases = []
    shapes = [(1,), (31,), (4, 33), (3, 5, 7)]
    for (neuron, beta), reset, v_init in itertools.product(
        [("if", 1.0), ("lif", 0.5)], ["subtract", "zero", "none"], [False, True]
    ):
        for steps, shape in zip([1, 2, 7, 32], shapes, strict=True):
            vi = "-vinit" if v_init else ""
            cases.append(
                NeuronCase(f"{neuron}-{reset}{vi}-T{steps}-{'x'.join(map(str, shape))}",
                           steps, shape, beta=beta, reset=reset, v_init=v_init)
            )
    for surrogate, detach, reset in itertools.product(
        ["atan", "sigmoid", "triangle", "rectangle"], [False, True], ["subtract", "zero"]
    ):
        d = "-detach" if detach else ""
        cases.append(
            NeuronCase(f"lif-{surrogate}-{reset}{d}-T7", 7, (2, 50), beta=0.9, reset=reset,
                       v_init=True, surrogate=surrogate, detach_reset=detach, v_reset=-0.25)
        )
    cases += [
        NeuronCase("if-threshold-ulp-T7", 7, (301,), beta=1.0, inputs="threshold"),
        NeuronCase("lif-threshold-ulp-vth0.3-T7", 7, (301,), beta=0.75, v_th=0.3,
                   inputs="threshold"),
        NeuronCase("lif-nan-inf-T7", 7, (5,), inputs="nonfinite"),
        NeuronCase("lif-nan-inf-zero-T7", 7, (5,), reset="zero", inputs="nonfinite", v_init=True),
        NeuronCase("lif-bf16-T7", 7, (3, 101), dtype=torch.bfloat16, v_init=True),
        NeuronCase("lif-fp16-zero-T7", 7, (3, 101), dtype=torch.float16, reset="zero"),
        NeuronCase("lif-odd-1000003-T7", 7, (1000003,), beta=0.9, v_init=True),
    ]
    return cases


CASES = _cases()
CASE_PARAMS = [pytest.param(case, id=case.name) for case in CASES]


def runnable_backends(names: tuple[str, ...] | list[str] = tuple(BACKENDS)) -> list[str]:
    """Those of ``names`` that can run here, each on the device :func:`device_for` gives it."""
    return [b for b in names if b in available_backends(device_for(b))]


def backend_pairs(case: NeuronCase) -> list[tuple[str, str]]:
    """Every pair of backends that can run ``case`` here, for an all-against-all comparison."""
    backends = runnable_backends()
    if os.environ.get("TRITON_INTERPRET") == "1" and case.numel > INTERPRETED_MAX_ELEMENTS:
        backends = [b for b in backends if b != "triton"]
    return list(itertools.combinations(backends, 2))


def assert_identical(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit-for-bit equality of values (NaN matches NaN), with a report of where it fails."""
    assert_close(name, a, b, atol=0.0)


def assert_close(name: str, a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} vs {b.dtype}"
    mismatch = compare_tensors(a, b, atol)
    assert mismatch.count == 0, f"{name} (atol {atol:g}): {mismatch.describe()}"


# Lava's golden vectors (tests/golden): the configs a file holds, and recording them live.
GOLDEN_DIR = Path(__file__).parent / "golden"


def golden_configs(path: Path) -> list[str]:
    """The config names a golden file holds (none when it is absent)."""
    if not path.exists():
        return []
    with np.load(path) as data:
        return sorted({key.split(".")[0] for key in data.files if not key.startswith("_meta")})


LIVE_LAVA = pytest.mark.skipif(
    not os.environ.get("NEURO_EMU_LAVA_PYTHON"),
    reason="set NEURO_EMU_LAVA_PYTHON to a Python with lava-nc (3.10) to run Lava",
)


def record_live_golden(script: str, out: Path) -> list[str]:
    """Run ``tests/golden/<script>`` under Lava's Python into ``out``; the configs it wrote."""
    subprocess.run(
        [os.environ["NEURO_EMU_LAVA_PYTHON"], str(GOLDEN_DIR / script)],
        env={**os.environ, "NEURO_EMU_GOLDEN_OUT": str(out)}, check=True, capture_output=True,
    )
    configs = golden_configs(out)
    assert configs
    return configs
