"""Convolution and linear layers over binary spikes: the sparse backends against the dense path.

Run: ``python -m pytest bench/test_sparse_conv.py --benchmark-only`` (``NEURO_EMU_BENCH_QUICK=1``
for one small shape at two sparsities) or ``neuro-emu bench --suite sparse_conv``. Shapes,
sparsities, subjects and the report are in :mod:`neuro_emu.benchmarks.sparse_conv`;
``conftest.py`` writes ``results/sparse_conv-<device>.*`` (JSON, markdown and the speed-up plot).
"""

import pytest

from neuro_emu.benchmarks import bench_device, quick_mode
from neuro_emu.benchmarks import sparse_conv as sc
from neuro_emu.benchmarks.neurons import rounds_for, time_call

DEVICE = bench_device()
CASES = sc.cases(DEVICE, quick_mode())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_sparse_conv(case: sc.Case, benchmark, bench_results) -> None:
    run = sc.make_workload(case, DEVICE)
    call_s = time_call(run)
    info = {
        **case.info(),
        "max_abs_diff": sc.max_abs_diff(case, DEVICE),
        "malloc_keeps_freed": sc.keep_freed_memory(),
    }
    benchmark.group = case.group
    benchmark.extra_info.update(info)
    benchmark.pedantic(run, rounds=rounds_for(call_s), iterations=1, warmup_rounds=1)
    bench_results.add(info, benchmark)
