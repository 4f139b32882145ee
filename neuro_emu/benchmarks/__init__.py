"""Benchmark suites shared by `bench/` and `neuro-emu bench`.

Each suite ``<name>`` is ``bench/test_<name>.py`` (pytest-benchmark) with its tables and report
writer in ``neuro_emu.benchmarks.<name>``; ``bench/conftest.py`` collects the timings and writes
``bench/results/<name>-<device>.json`` and ``.md`` at the end of the run.

Importing this package is cheap: torch, pytest and the peer libraries are imported on use, so
``neuro-emu --help`` does not pay for them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import neuro_emu
from neuro_emu.benchmarks.cpu import cpu_label, slug

if TYPE_CHECKING:
    import torch

SUITES: tuple[str, ...] = ("neurons", "sparse_conv", "loihi", "train_step")
QUICK_ENV = "NEURO_EMU_BENCH_QUICK"  # "1": small shapes, for smoke tests and CI


def quick_mode() -> bool:
    """Whether the suites run their small smoke-test shapes (``NEURO_EMU_BENCH_QUICK=1``)."""
    return os.environ.get(QUICK_ENV) == "1"


def bench_device() -> torch.device:
    """The device the suites measure: the current CUDA device if there is one, else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def device_label(device: torch.device) -> str:
    """A file-name-safe name for ``device``: :func:`neuro_emu.benchmarks.cpu.cpu_label` for the
    CPU (e.g. ``cpu-amd-epyc-7763-64-core-avx2-2cores``), or e.g. ``cuda-nvidia-h100-80gb-hbm3``."""
    import torch

    if device.type == "cuda":
        return "cuda-" + slug(torch.cuda.get_device_name(device))
    return cpu_label()


def bench_dir() -> Path:
    """The source checkout's ``bench/`` folder.

    Raises:
        FileNotFoundError: neuro-emu is not installed from a source checkout (editable install).
    """
    bench = Path(neuro_emu.__file__).resolve().parents[1] / "bench"
    if not bench.is_dir():
        raise FileNotFoundError(
            f"the benchmarks run from a source checkout of neuro-emu, and {bench} does not exist "
            "(this is an installed copy): clone the repository, `pip install -e .[test,peers]`, "
            "and run `neuro-emu bench` from there"
        )
    return bench


def run_suite(suite: str, quick: bool = False, pytest_args: list[str] | None = None) -> int:
    """Run ``bench/test_<suite>.py`` under pytest-benchmark, then print the markdown report.

    Args:
        suite: one of :data:`SUITES`.
        quick: run the small smoke-test shapes (sets ``NEURO_EMU_BENCH_QUICK`` for the run); the
            report then goes to ``<suite>-<device>-quick.*`` and leaves the full results alone.
        pytest_args: extra pytest arguments, e.g. ``["-k", "numba"]``.

    Returns:
        pytest's exit code.

    Raises:
        ValueError: an unknown suite.
        FileNotFoundError: no ``bench/`` folder (not a source checkout).
    """
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {list(SUITES)}, got {suite!r}")
    import pytest

    bench = bench_dir()
    args = [
        str(bench / f"test_{suite}.py"),
        "-q",
        "-p",
        "no:xdist",  # timings need one process; xdist would also switch the benchmarks off
        "--benchmark-only",
        "--benchmark-columns=min,median,rounds",
        *(pytest_args or []),
    ]
    previous = os.environ.get(QUICK_ENV)
    os.environ[QUICK_ENV] = "1" if quick else "0"
    started = time.time()
    try:
        exit_code = int(pytest.main(args))
    finally:
        if previous is None:
            del os.environ[QUICK_ENV]
        else:
            os.environ[QUICK_ENV] = previous
    # The reports this run wrote (their names depend on the device and on quick/partial runs).
    for report in sorted((bench / "results").glob(f"{suite}-*.md")):
        if report.stat().st_mtime >= started:
            print(f"\n{report}\n")
            sys.stdout.write(report.read_text())
    return exit_code


RUN_FIELDS: tuple[str, ...] = ("device", "commit", "date", "command")


def stamp_rows(rows: list[dict], meta: dict) -> list[dict]:
    """Every result row carries the run's device, commit, date and command (STYLE.md)."""
    run = {k: meta[k] for k in RUN_FIELDS}
    return [{**row, **run} for row in rows]


def write_json(path: Path, report: dict) -> Path:
    """Write ``report`` as indented JSON at ``path`` (folders created), return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def ratio(numerator: float | None, denominator: float) -> float | None:
    """numerator / denominator, or None when the numerator (a baseline) was not measured."""
    return None if numerator is None else numerator / denominator
