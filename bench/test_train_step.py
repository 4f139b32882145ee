"""One SGD step of SNN-VGG per LIF backend, the neurons' share of it, and the ANN's step.

Run: ``python -m pytest bench/test_train_step.py`` or ``neuro-emu bench --suite train_step``;
cases and the report are in :mod:`neuro_emu.benchmarks.train_step`.
"""

import pytest

from neuro_emu.benchmarks import bench_device, quick_mode
from neuro_emu.benchmarks import train_step as tb

DEVICE = bench_device()
CASES = tb.cases(DEVICE, quick_mode())
ROUNDS = 3 if quick_mode() else 10


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_train_step(case: tb.Case, benchmark, bench_results) -> None:
    run = tb.make_workload(case, DEVICE)
    benchmark.group = f"width {case.width} batch {case.batch}"
    benchmark.extra_info.update(case.info())
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=2)
    bench_results.add(case.info(), benchmark)
