"""Loihi Dense -> LIF (``neuro_emu.loihi.run_dense_lif``) per backend, against Lava's own timing.

Run: ``bash
/tmp/lava310/bin/python bench/lava_timing.py      # Lava's side, Python 3.10 (its docstring)
python -m pytest bench/test_loihi.py --benchmark-only
``
(``NEURO_EMU_BENCH_QUICK=1`` for the smallest shape) or ``neuro-emu bench --suite loihi``.
Shapes, inputs and the report are in :mod:`neuro_emu.benchmarks.loihi`; ``conftest.py`` writes
``results/loihi-<device>.*``, with the speed-up over Lava and the spike check where
``results/lava-timing-<cpu>.json`` exists.
"""

import pytest

from neuro_emu.benchmarks import bench_device, quick_mode
from neuro_emu.benchmarks import loihi as lb
from neuro_emu.benchmarks.neurons import rounds_for, time_call

DEVICE = bench_device()
CASES = lb.cases(DEVICE, quick_mode())
LAVA = lb.load_lava(lb.lava_timing_path())
LAVA_ROWS = {(r["n_in"], r["n_out"], r["T"]): r for r in (LAVA or {}).get("rows", [])}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_loihi(case: lb.Case, benchmark, bench_results) -> None:
    run = lb.make_workload(case)
    call_s = time_call(run)
    info = {**case.info(), **lb.spike_summary(case)}
    benchmark.group = case.group
    benchmark.extra_info.update(info)
    benchmark.pedantic(run, rounds=rounds_for(call_s), iterations=1, warmup_rounds=1)
    bench_results.add(info, benchmark)
    # Recorded first, so a mismatch still shows in the report; then the run fails on it.
    lava = LAVA_ROWS.get((case.n_in, case.n_out, case.steps))
    if lava is not None and lava["weights_sha256"] == info["weights_sha256"] and (
        lava["spikes_sha256_in"] == info["spikes_sha256_in"]
    ):
        assert info["spikes_sum"] == lava["spikes_sum"]
        assert info["spikes_sha256"] == lava["spikes_sha256"], "spike raster differs from Lava's"
