"""Shared by the benchmark suites: collect each test's timings, write the reports at the end.

A suite ``bench/test_<name>.py`` defines ``CASES`` and records its results through the
``bench_results`` fixture; at the end of the session ``neuro_emu.benchmarks.<name>.write_report``
writes ``bench/results/<name>-<device>.json`` and ``.md``. A quick run (``NEURO_EMU_BENCH_QUICK=1``)
writes ``-quick`` files, and a run that did not measure or skip every case (``-k``, ``-x``, a
failure) writes ``-partial`` ones, so neither overwrites the full results.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from neuro_emu.benchmarks import QUICK_ENV, bench_device, device_label, quick_mode
from neuro_emu.benchmarks.peers import available_peers

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass
class SuiteResults:
    """What one suite measured: a row per case, and the cases that could not run."""

    expected: int  # len(CASES): a complete run measures or skips each of them
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def add(self, info: dict, benchmark) -> None:
        """Record a finished ``benchmark`` (nothing under ``--benchmark-disable``)."""
        if benchmark.stats is not None:
            stats = benchmark.stats.stats
            self.rows.append(
                {**info, "min_s": stats.min, "median_s": stats.median, "rounds": stats.rounds}
            )

    def skip(self, case_id: str, reason: str) -> None:
        """Record why ``case_id`` did not run, then skip the test."""
        self.skipped.append({"case": case_id, "reason": reason})
        pytest.skip(reason)


_RESULTS = pytest.StashKey[dict[str, SuiteResults]]()
_WRITTEN = pytest.StashKey[list[Path]]()


@pytest.fixture
def bench_results(request: pytest.FixtureRequest) -> SuiteResults:
    """The results of the calling suite, named after its module ``test_<suite>.py``."""
    suite = Path(request.module.__file__).stem.removeprefix("test_")
    suites = request.config.stash.setdefault(_RESULTS, {})
    return suites.setdefault(suite, SuiteResults(expected=len(request.module.CASES)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    suites = session.config.stash.get(_RESULTS, {})
    if not any(results.rows for results in suites.values()):
        return
    meta = run_metadata()
    written = session.config.stash.setdefault(_WRITTEN, [])
    for suite, results in suites.items():
        if not results.rows:
            continue
        complete = len(results.rows) + len(results.skipped) == results.expected
        name = f"{suite}-{meta['device']}" + ("-quick" if quick_mode() else "")
        name += "" if complete else "-partial"
        module = importlib.import_module(f"neuro_emu.benchmarks.{suite}")
        written += module.write_report(results.rows, results.skipped, meta, RESULTS_DIR / name)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for path in config.stash.get(_WRITTEN, []):
        terminalreporter.write_line(f"benchmark report: {path}")


def run_metadata() -> dict:
    """Device, versions, commit (``+dirty`` with uncommitted changes), UTC date and command."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # A copy of the tree on another machine (the GPU one) may carry no or a stale .git: there
    # the caller names the commit it sent.
    commit = os.environ.get("NEURO_EMU_COMMIT") or git("rev-parse", "--short", "HEAD")
    if commit is None:
        commit = "unknown"
    elif "NEURO_EMU_COMMIT" not in os.environ and git("status", "--porcelain"):
        commit += "+dirty"
    return {
        "device": device_label(bench_device()),
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": _command_line(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numba": _version("numba"),
        "triton": _version("triton"),
        "pytest_benchmark": _version("pytest-benchmark"),
        "peers": available_peers(),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _command_line() -> str:
    """The command as typed: ``python -m pytest ...`` or ``neuro-emu bench ...``, with the quick
    switch if set."""
    program = Path(sys.argv[0])
    if program.name == "__main__.py":  # python -m <package>
        argv = [Path(sys.executable).name, "-m", program.parent.name, *sys.argv[1:]]
    elif program.name.startswith("-"):  # python -c
        argv = [Path(sys.executable).name, *sys.argv]
    else:
        argv = [program.name, *sys.argv[1:]]
    env = [f"{QUICK_ENV}=1"] if quick_mode() else []
    return shlex.join(env + argv)
