"""Multi-step LIF neurons: our backends, the installed peers and a copy of the same bytes.

Run: ``python -m pytest bench/test_neurons.py`` (``NEURO_EMU_BENCH_QUICK=1`` for the small shapes)
or ``neuro-emu bench --suite neurons``. Shapes, subjects and the report are in
:mod:`neuro_emu.benchmarks.neurons`; ``conftest.py`` writes ``results/neurons-<device>.*``.
"""

import pytest
import torch

from neuro_emu.benchmarks import bench_device, quick_mode
from neuro_emu.benchmarks import neurons as nb

DEVICE = bench_device()
CASES = nb.cases(DEVICE, quick_mode())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_neurons(case: nb.Case, benchmark, bench_results) -> None:
    run = nb.make_workload(case, DEVICE)
    try:
        call_s = nb.time_call(run)
    except Exception as err:
        # Peers are promised float32 only; where one cannot run a 16-bit dtype, say so and go on.
        if case.kind != "peer" or case.dtype == torch.float32:
            raise
        bench_results.skip(case.id, f"{case.subject} failed: {type(err).__name__}: {err}")
    info = {**case.info(), "spike_deviations": nb.case_deviations(case, DEVICE)}
    benchmark.group = case.group
    benchmark.extra_info.update(info)
    benchmark.pedantic(run, rounds=nb.rounds_for(call_s), iterations=1, warmup_rounds=1)
    bench_results.add(info, benchmark)
