"""The neuron benchmark suite: shapes, neuron parameters, subjects, timed workloads and the report.

Every subject maps the same input current ``x: [T, N]`` to spikes ``[T, N]`` with the LIF of
DESIGN.md section 2 (``beta = 0.5``, ``v_th = 1``, soft reset, ATan surrogate with ``alpha = 2``:
the configuration every peer can come closest to). Subjects, all measured in the same run:

- our backends (``neuro_emu.ops.available_backends``; "torch" is the PyTorch loop, the baseline of
  every speed-up), and "numba-nocache", the Numba backend with its CPU output-buffer cache off
  (what the cache buys);
- the peers of :mod:`neuro_emu.benchmarks.peers` that are installed, with their spike deviations
  from our semantics counted on the benchmark input;
- two copies of the same bytes as the forward (read T*N values, write T*N values), the measured
  bandwidth limit: ``copy-alloc`` (``x.clone()``: a fresh output each call, which on large tensors
  pays the first-touch page faults an op without a buffer cache pays too) and ``copy-inplace``
  (``out.copy_(x)`` into a reused buffer: pure bandwidth, the baseline for an op that reuses its
  output buffers, as the Numba backend does).

Modes: "forward" (under ``torch.no_grad()``) and "forward+backward" (spikes, then ``backward`` of a
pre-made contiguous random gradient).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from neuro_emu.benchmarks import ratio, stamp_rows, write_json
from neuro_emu.benchmarks.peers import SEMANTICS_NOTES, available_peers, make_peer_lif
from neuro_emu.ops import BACKENDS, available_backends, multistep_lif, set_cpu_buffer_cache

# [(T, N)]: 8 M neuron-steps each, 32 MiB of float32: far beyond the caches, so memory-bound.
SHAPES: list[tuple[int, int]] = [(8, 2**20), (32, 2**18)]
# On a GPU 32 MiB would sit in L2 (50 MB on an H100): 64 M neuron-steps, 256 MiB of float32.
GPU_SHAPES: list[tuple[int, int]] = [(8, 2**23), (32, 2**21)]
QUICK_SHAPES: list[tuple[int, int]] = [(4, 4096)]
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
MODES: tuple[str, ...] = ("forward", "forward+backward")
COPY_SUBJECTS: tuple[str, ...] = ("copy-alloc", "copy-inplace")

BETA = 0.5
V_TH = 1.0
LIF_KWARGS: dict[str, object] = {
    "beta": BETA,
    "v_th": V_TH,
    "reset": "subtract",
    "surrogate": "atan",
    "alpha": 2.0,
}
INPUT_SCALE = 1.5  # x = rand * 1.5: about a third of the neuron-steps spike
INPUT_SEED = 0
GRAD_SEED = 1

# Rounds per test: about TARGET_S of timed calls, at least MIN_ROUNDS for a median, at most
# MAX_ROUNDS; the full CPU suite then takes a few minutes.
TARGET_S = 1.0
MIN_ROUNDS = 5
MAX_ROUNDS = 50

SpikeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Case:
    """One benchmark: ``subject`` in ``mode`` on ``x: [steps, n]`` of ``dtype``."""

    steps: int
    n: int
    dtype: torch.dtype
    mode: str
    subject: str
    kind: str  # "ours" | "peer" | "copy"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def shape_id(self) -> str:
        n = f"2^{self.n.bit_length() - 1}" if self.n & (self.n - 1) == 0 else str(self.n)
        return f"T{self.steps}-N{n}"

    @property
    def id(self) -> str:
        return f"{self.shape_id}-{self.dtype_name}-{self.mode}-{self.subject}"

    @property
    def group(self) -> str:
        """The pytest-benchmark table this case is printed in: the subjects to compare."""
        return f"{self.shape_id} {self.dtype_name} {self.mode}"

    def info(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "mode": self.mode,
            "dtype": self.dtype_name,
            "T": self.steps,
            "N": self.n,
        }


def subjects(device: torch.device) -> dict[str, str]:
    """``{subject: kind}`` of the neuron subjects measurable on ``device``, ours first."""
    # Triton is a GPU subject: its CPU interpreter (TRITON_INTERPRET=1) is for tests, not timing.
    ours = [b for b in available_backends(device) if b != "triton" or device.type == "cuda"]
    if "numba" in ours:
        ours.insert(ours.index("numba") + 1, "numba-nocache")
    return {**dict.fromkeys(ours, "ours"), **dict.fromkeys(available_peers(), "peer")}


def cases(device: torch.device, quick: bool = False) -> list[Case]:
    """The suite's cases, grouped by shape and dtype so that compared subjects run back to back."""
    neurons = subjects(device)
    found = []
    shapes = GPU_SHAPES if device.type == "cuda" else SHAPES
    for steps, n in QUICK_SHAPES if quick else shapes:
        for dtype in DTYPES:
            found += [Case(steps, n, dtype, "forward", s, "copy") for s in COPY_SUBJECTS]
            for mode in MODES:
                found += [Case(steps, n, dtype, mode, s, kind) for s, kind in neurons.items()]
    return found


def bench_input(steps: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The benchmark input current ``x: [steps, n] = rand * INPUT_SCALE`` (fixed seed)."""
    gen = torch.Generator().manual_seed(INPUT_SEED)
    return (torch.rand(steps, n, generator=gen) * INPUT_SCALE).to(device=device, dtype=dtype)


def neuron_fn(subject: str) -> SpikeFn:
    """``x: [T, N] -> spikes: [T, N]`` for one of our backends or a peer."""
    backend = subject.removesuffix("-nocache")
    if backend in BACKENDS:
        return functools.partial(multistep_lif, backend=backend, **LIF_KWARGS)
    return make_peer_lif(subject, BETA, V_TH)


def _without_buffer_cache(call: Callable[[], None]) -> Callable[[], None]:
    """``call`` with the CPU output-buffer cache off for all of it, backward included."""

    def uncached() -> None:
        previous = set_cpu_buffer_cache(0)
        try:
            call()
        finally:
            set_cpu_buffer_cache(previous)

    return uncached


def make_workload(case: Case, device: torch.device) -> Callable[[], None]:
    """The call to time for ``case``: inputs are made here, outside the timed call."""
    x = bench_input(case.steps, case.n, case.dtype, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    if case.subject == "copy-alloc":
        return lambda: (x.clone(), sync())
    if case.subject == "copy-inplace":
        out = torch.empty_like(x)
        return lambda: (out.copy_(x), sync())
    spike_fn = neuron_fn(case.subject)
    if case.mode == "forward":

        def forward() -> None:
            with torch.no_grad():
                spike_fn(x)
            sync()

        return _without_buffer_cache(forward) if case.subject.endswith("-nocache") else forward

    x.requires_grad_(True)
    gen = torch.Generator().manual_seed(GRAD_SEED)
    # A contiguous gradient: `.sum().backward()` would hand the op a stride-0 one to materialise.
    grad = torch.randn(case.steps, case.n, generator=gen).to(device=device, dtype=case.dtype)

    def forward_backward() -> None:
        x.grad = None
        spike_fn(x).backward(grad)
        sync()

    if case.subject.endswith("-nocache"):
        return _without_buffer_cache(forward_backward)
    return forward_backward


def time_call(fn: Callable[[], None]) -> float:
    """Seconds a warm call of ``fn`` takes, timed after a first call that compiles and warms up."""
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds_for(call_s: float) -> int:
    """Timed rounds for a call of ``call_s`` seconds: see ``TARGET_S``."""
    return max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(TARGET_S / max(call_s, 1e-9))))


@functools.lru_cache(maxsize=1)  # cases come grouped by shape and dtype: one reference at a time
def _reference_spikes(steps: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return neuron_fn("torch")(bench_input(steps, n, dtype, device))


@functools.cache
def spike_deviations(
    subject: str, steps: int, n: int, dtype: torch.dtype, device: torch.device
) -> int:
    """Spikes of ``subject`` that differ from our torch backend's on the benchmark input, out of
    ``steps * n``."""
    with torch.no_grad():
        spikes = neuron_fn(subject)(bench_input(steps, n, dtype, device))
    reference = _reference_spikes(steps, n, dtype, device)
    return int((spikes.to(reference.dtype) != reference).sum())


def case_deviations(case: Case, device: torch.device) -> int | None:
    """:func:`spike_deviations` for a neuron subject other than the reference, else None."""
    if case.kind == "copy" or case.subject == "torch":
        return None
    return spike_deviations(case.subject, case.steps, case.n, case.dtype, device)


def derive(rows: list[dict]) -> list[dict]:
    """Add throughput, speed-up and copy-bandwidth fractions to the measured ``rows``.

    Each row has subject, mode, dtype, T, N, min_s, median_s, rounds, spike_deviations. Derived
    figures use the medians; the baselines are the rows of the same shape and dtype in this run.
    """
    median = {(r["subject"], r["mode"], r["dtype"], r["T"], r["N"]): r["median_s"] for r in rows}
    derived = []
    for row in rows:
        key = (row["mode"], row["dtype"], row["T"], row["N"])
        forward = row["mode"] == "forward"
        copy = {s: median.get((s, "forward", *key[1:])) if forward else None for s in COPY_SUBJECTS}
        derived.append(
            {
                **row,
                "neuron_steps_per_s": row["T"] * row["N"] / row["median_s"],
                "speedup_vs_torch": ratio(median.get(("torch", *key)), row["median_s"]),
                "fraction_of_copy_alloc": ratio(copy["copy-alloc"], row["median_s"]),
                "fraction_of_copy_inplace": ratio(copy["copy-inplace"], row["median_s"]),
                "semantics_note": SEMANTICS_NOTES.get(row["subject"]),
            }
        )
    return derived


def write_report(rows: list[dict], skipped: list[dict], meta: dict, stem: Path) -> list[Path]:
    """Write ``<stem>.json`` (rows, skips, parameters, run metadata) and ``<stem>.md``.

    Args:
        rows: measured cases, see :func:`derive`.
        skipped: ``{"case": id, "reason": ...}`` of the cases that could not run.
        meta: the run's device, commit, date, command and versions; device, commit, date and
            command are also copied into every row.

    Returns:
        The two paths written.
    """
    table = stamp_rows(derive(rows), meta)
    params = {**LIF_KWARGS, "input": f"rand(T, N) * {INPUT_SCALE}, seed {INPUT_SEED}"}
    report = {"suite": "neurons", "meta": meta, "params": params, "rows": table, "skipped": skipped}
    json_path, md_path = write_json(stem.with_suffix(".json"), report), stem.with_suffix(".md")
    md_path.write_text(_markdown(table, skipped, meta))
    return [json_path, md_path]


def _markdown(table: list[dict], skipped: list[dict], meta: dict) -> str:
    def num(value: float | None, fmt: str, scale: float = 1.0) -> str:
        return "" if value is None else format(value * scale, fmt)

    peers = ", ".join(f"{name} {version}" for name, version in meta["peers"].items()) or "none"
    lines = [
        f"# Neuron benchmark: {meta['device']}",
        "",
        f"Commit `{meta['commit']}`, {meta['date']}, `{meta['command']}`.",
        f"torch {meta['torch']} ({meta['torch_threads']} threads), numba {meta['numba']}, "
        f"triton {meta['triton']}; peers: {peers}.",
        "",
        "Multi-step LIF, beta = 0.5, v_th = 1, soft reset, ATan surrogate (alpha = 2), on "
        f"x = rand(T, N) * {INPUT_SCALE}. Times are the median and min over the rounds; "
        'throughput and ratios use the medians. "x torch loop" is the speed-up over our PyTorch '
        'loop in the same mode; "% copy" is the copy time over the subject\'s time (forward '
        "only): copy-alloc = `x.clone()` (a fresh output each call, paying first-touch page "
        "faults on large tensors), copy-inplace = `out.copy_(x)` into a reused buffer (pure "
        "bandwidth; the baseline for a backend that reuses its output buffers, as the Numba "
        "backend does). Deviations: spikes differing from our "
        "torch backend, out of T * N. Timings on a shared machine are noisy: compare within a "
        "shape.",
        "",
        "| T x N | dtype | mode | subject | median ms | min ms | rounds | M neuron-steps/s "
        "| x torch loop | % copy-alloc | % copy-inplace | spike deviations |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in table:
        steps = r["T"] * r["N"]
        deviations = "" if r["spike_deviations"] is None else f"{r['spike_deviations']} / {steps}"
        lines.append(
            f"| {r['T']} x {r['N']} | {r['dtype']} | {r['mode']} | {r['subject']} "
            f"| {r['median_s'] * 1e3:.3g} | {r['min_s'] * 1e3:.3g} | {r['rounds']} "
            f"| {r['neuron_steps_per_s'] / 1e6:.0f} | {num(r['speedup_vs_torch'], '.2f')} "
            f"| {num(r['fraction_of_copy_alloc'], '.0f', 100)} "
            f"| {num(r['fraction_of_copy_inplace'], '.0f', 100)} | {deviations} |"
        )
    if skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- `{s['case']}`: {s['reason']}" for s in skipped]
    measured_peers = [p for p in meta["peers"] if any(r["subject"] == p for r in table)]
    if measured_peers:
        lines += ["", "## Where the peers' semantics differ from ours", ""]
        lines += [f"- **{p} {meta['peers'][p]}**: {SEMANTICS_NOTES[p]}" for p in measured_peers]
        lines.append(
            "- In bfloat16 every peer computes in the dtypes its own code picks, whereas ours "
            "keeps the membrane in float32 on every backend; so bfloat16 deviations also count "
            "the rounding of a bfloat16 membrane, and the more frequent exact ties with v_th "
            "where a peer fires on h > v_th."
        )
    return "\n".join(lines) + "\n"
