"""The sparse convolution benchmark suite: layer shapes, subjects, timed workloads and the report.

Every subject computes ``F.conv2d(spikes, weight, padding=kernel // 2, stride=stride)`` (or
``F.linear``) of the same binary spikes through :func:`neuro_emu.ops.spike_conv2d` /
:func:`neuro_emu.ops.spike_linear`, timed as users call them (the sparse backends return their
channels-last output as is, no copy to contiguous). Subjects, all measured in the same run:

- "dense": ``backend="dense"``, ``F.conv2d`` / ``F.linear`` in float32 (oneDNN on CPU, cuDNN on
  CUDA): the baseline of every speed-up;
- "numba" (CPU) and "triton" (CUDA only: Triton's CPU interpreter is for tests, not timing): the
  event-driven sparse backends;
- "numba+check": the Numba backend with ``check=True``, which adds a pass over the input verifying
  that it is binary. Every other subject runs with ``check=False``, so their times hold no check.

Shapes are the convolution and linear layers of the seed networks at batch 32 x T 4 (``N = 128``
samples, T folded into the batch as the layers do): the CIFAR VGG (64/128/256 channels at
32/16/8 px, the first convolution of each stage, the 4096 -> 512 classifier) and the CIFAR
ResNet-18 stages (their stride-2 transitions and 1x1 stride-2 shortcuts included), each at the
sparsities of ``SPARSITIES``. The input is ``spikes = (rand(shape) >= sparsity).float()`` with one
seed for every sparsity, so the spikes at a higher sparsity are a subset of those at a lower one;
weights are ``randn`` float32, no bias. The workloads first make glibc's malloc keep the memory
it frees (:func:`keep_freed_memory`), so that no subject's time holds first-touch page faults.

:func:`crossover` turns measured rows (or those of a ``bench/results/sparse_conv-*.json``) into the
sparsity above which the sparse path beats the dense one, per shape.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from neuro_emu.benchmarks import stamp_rows, write_json
from neuro_emu.ops import backend_unavailable_reason, spike_conv2d, spike_linear

BATCH = 32
STEPS = 4
N = BATCH * STEPS  # samples per call: the time steps are folded into the batch

SPARSITIES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99)
QUICK_SPARSITIES: tuple[float, ...] = (0.9, 0.99)
INPUT_SEED = 0
WEIGHT_SEED = 1

# Subject -> (backend, check). Only "numba+check" pays for the binary-input check.
SUBJECTS: dict[str, tuple[str, bool]] = {
    "dense": ("dense", False),
    "numba": ("numba", False),
    "numba+check": ("numba", True),
    "triton": ("triton", False),
}
BASELINE = "dense"

# glibc's mallopt parameters (<malloc.h>) and the value that makes malloc keep what it frees.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREED_BYTES = 2**30

SpikeOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (spikes, weight) -> out


@dataclass(frozen=True)
class Layer:
    """One layer shape: a ``kernel x kernel`` convolution of ``[N, cin, size, size]`` spikes into
    ``cout`` channels (padding ``kernel // 2``, so "same" at stride 1), or, with ``kernel=0``, a
    linear layer ``[N, cin] -> [N, cout]``. ``nets`` names the networks that have it."""

    cin: int
    cout: int
    size: int
    kernel: int = 3
    stride: int = 1
    nets: str = ""

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def id(self) -> str:
        """``conv3x3-128-128-16px``, ``conv1x1-64-128-32px-s2``, ``linear-4096-512``."""
        if self.kernel == 0:
            return f"linear-{self.cin}-{self.cout}"
        stride = f"-s{self.stride}" if self.stride != 1 else ""
        return f"conv{self.kernel}x{self.kernel}-{self.cin}-{self.cout}-{self.size}px{stride}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (N, self.cin) if self.kernel == 0 else (N, self.cin, self.size, self.size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kernel == 0:
            return (self.cout, self.cin)
        return (self.cout, self.cin, self.kernel, self.kernel)

    def info(self) -> dict[str, object]:
        return {
            "shape": self.id,
            "nets": self.nets,
            "N": N,
            "in_channels": self.cin,
            "out_channels": self.cout,
            "size": self.size,
            "kernel": self.kernel,
            "stride": self.stride,
            "padding": self.padding,
        }


# The CIFAR VGG and ResNet-18 layer shapes; each shape once, with every network that has it.
LAYERS: list[Layer] = [
    Layer(64, 64, 32, nets="VGG, ResNet-18"),
    Layer(128, 128, 16, nets="VGG, ResNet-18"),
    Layer(256, 256, 8, nets="VGG, ResNet-18"),
    Layer(64, 128, 16, nets="VGG stage entry"),
    Layer(128, 256, 8, nets="VGG stage entry"),
    Layer(512, 512, 4, nets="ResNet-18"),
    Layer(64, 128, 32, stride=2, nets="ResNet-18 transition"),
    Layer(128, 256, 16, stride=2, nets="ResNet-18 transition"),
    Layer(256, 512, 8, stride=2, nets="ResNet-18 transition"),
    Layer(64, 128, 32, kernel=1, stride=2, nets="ResNet-18 shortcut"),
    Layer(128, 256, 16, kernel=1, stride=2, nets="ResNet-18 shortcut"),
    Layer(256, 512, 8, kernel=1, stride=2, nets="ResNet-18 shortcut"),
    Layer(256 * 4 * 4, 512, 0, kernel=0, nets="VGG classifier"),
]
QUICK_LAYERS: list[Layer] = [Layer(16, 32, 8, nets="smoke test")]


def _percent(sparsity: float) -> str:
    return format(sparsity * 100, "g")


@dataclass(frozen=True)
class Case:
    """One benchmark: ``subject`` on ``layer`` with inputs of ``sparsity`` (fraction of zeros)."""

    layer: Layer
    sparsity: float
    subject: str

    @property
    def shape_id(self) -> str:
        return self.layer.id

    @property
    def id(self) -> str:
        return f"{self.shape_id}-sp{_percent(self.sparsity)}-{self.subject}"

    @property
    def group(self) -> str:
        """The pytest-benchmark table this case is printed in: the subjects to compare."""
        return f"{self.shape_id} sparsity {_percent(self.sparsity)}%"

    def info(self) -> dict[str, object]:
        return {**self.layer.info(), "sparsity": self.sparsity, "subject": self.subject}


def subjects(device: torch.device) -> list[str]:
    """The subjects measurable on ``device``, the dense baseline first."""
    found = [BASELINE]
    for subject, (backend, _) in SUBJECTS.items():
        # Triton is a GPU subject: its CPU interpreter (TRITON_INTERPRET=1) is for tests.
        usable = backend != "triton" or device.type == "cuda"
        if subject != BASELINE and usable and backend_unavailable_reason(backend, device) is None:
            found.append(subject)
    return found


def cases(device: torch.device, quick: bool = False) -> list[Case]:
    """The suite's cases, grouped by shape and sparsity so that compared subjects run back to
    back."""
    names = subjects(device)
    return [
        Case(layer, sparsity, subject)
        for layer in (QUICK_LAYERS if quick else LAYERS)
        for sparsity in (QUICK_SPARSITIES if quick else SPARSITIES)
        for subject in names
    ]


def bench_spikes(layer: Layer, sparsity: float, device: torch.device) -> torch.Tensor:
    """The benchmark input ``(rand(layer.input_shape) >= sparsity).float()`` (fixed seed)."""
    gen = torch.Generator().manual_seed(INPUT_SEED)
    return (torch.rand(layer.input_shape, generator=gen) >= sparsity).float().to(device)


def bench_weight(layer: Layer, device: torch.device) -> torch.Tensor:
    """The benchmark weight: ``randn`` float32 of ``layer.weight_shape`` (fixed seed)."""
    gen = torch.Generator().manual_seed(WEIGHT_SEED)
    return torch.randn(layer.weight_shape, generator=gen).to(device)


def layer_op(layer: Layer, subject: str) -> SpikeOp:
    """``(spikes, weight) -> out`` for ``subject`` with the geometry of ``layer``."""
    backend, check = SUBJECTS[subject]
    if layer.kernel == 0:
        return functools.partial(spike_linear, backend=backend, check=check)
    return functools.partial(
        spike_conv2d, stride=layer.stride, padding=layer.padding, backend=backend, check=check
    )


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory it frees, for the rest of the process; True if done.

    Why: a dense CPU convolution allocates its output and oneDNN's reordered copies (48 MB a call
    on the 128-channel 16 px layer) afresh on each call. With glibc's default, dynamic mmap and
    trim thresholds, whether those come back from the heap or from fresh pages depends on how the
    heap happened to be laid out when the case started: measured on that layer, 0 or 12,000 page
    faults a call, 22 or 37 ms, for the same tensors. The sparse backends reuse their output
    buffers and never pay this, so a dense baseline that sometimes does would inflate the
    speed-ups at random. With both thresholds at 1 GiB every subject runs without first-touch
    page faults: the dense baseline at its best. It stays so for the rest of the process (glibc
    has no way back to the dynamic thresholds); suites that measure page faults on purpose (the
    neuron suite's copy-alloc) run before this one, or in their own process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)
            and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
        )
    except (OSError, AttributeError):  # not glibc: the allocator's own behaviour is measured
        return False


def make_workload(case: Case, device: torch.device) -> Callable[[], None]:
    """The call to time for ``case``: inputs are made here, outside the timed call. Applies
    :func:`keep_freed_memory` first."""
    keep_freed_memory()
    spikes = bench_spikes(case.layer, case.sparsity, device)
    weight = bench_weight(case.layer, device)
    op = layer_op(case.layer, case.subject)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def call() -> None:
        with torch.no_grad():
            op(spikes, weight)
        sync()

    return call


@functools.lru_cache(maxsize=1)  # cases come grouped by shape and sparsity: one at a time
def _dense_output(layer: Layer, sparsity: float, device: torch.device) -> torch.Tensor:
    spikes, weight = bench_spikes(layer, sparsity, device), bench_weight(layer, device)
    with torch.no_grad():
        return layer_op(layer, BASELINE)(spikes, weight)


def max_abs_diff(case: Case, device: torch.device) -> float | None:
    """``max |out - dense out|`` of a sparse subject on the benchmark input, a sanity check that
    the timed path computes the convolution (the numerics contract itself is tested in
    ``tests/test_spike_conv.py``, against a float64 reference); None for the baseline."""
    if case.subject == BASELINE:
        return None
    spikes = bench_spikes(case.layer, case.sparsity, device)
    weight = bench_weight(case.layer, device)
    with torch.no_grad():
        out = layer_op(case.layer, case.subject)(spikes, weight)
    return float((out - _dense_output(case.layer, case.sparsity, device)).abs().max())


def sparse_subject(rows: list[dict]) -> str:
    """The sparse subject whose speed-ups the report plots: "triton" if measured, else "numba"."""
    return "triton" if any(r["subject"] == "triton" for r in rows) else "numba"


def speedups(rows: list[dict], subject: str) -> dict[str, list[tuple[float, float]]]:
    """``{shape: [(sparsity, dense median / subject median), ...]}`` by increasing sparsity, for
    the (shape, sparsity) pairs where both ``subject`` and the dense baseline were measured."""
    median = {(r["shape"], r["sparsity"], r["subject"]): r["median_s"] for r in rows}
    found: dict[str, list[tuple[float, float]]] = {}
    for (shape, sparsity, name), seconds in median.items():
        dense = median.get((shape, sparsity, BASELINE))
        if name == subject and dense is not None:
            found.setdefault(shape, []).append((sparsity, dense / seconds))
    return {shape: sorted(points) for shape, points in found.items()}


def _crossing(points: list[tuple[float, float]]) -> tuple[float | None, str]:
    """The crossover of one shape's ``(sparsity, speed-up)`` points and its label: see
    :func:`crossover`."""
    slower = [i for i, (_, speedup) in enumerate(points) if speedup < 1]
    if not slower:
        return points[0][0], f"<{_percent(points[0][0])}%"
    last = slower[-1]
    if last == len(points) - 1:
        return None, f">{_percent(points[-1][0])}%"
    (s0, r0), (s1, r1) = points[last], points[last + 1]
    sparsity = s0 + (1 - r0) * (s1 - s0) / (r1 - r0)
    return sparsity, f"{sparsity * 100:.1f}%"


def crossover(rows: list[dict], subject: str | None = None) -> dict[str, float | None]:
    """The sparsity from which the sparse path is faster than the dense one, per shape.

    Args:
        rows: benchmark rows, as measured by ``bench/test_sparse_conv.py`` or as stored under
            ``"rows"`` in ``bench/results/sparse_conv-<device>.json``; each needs ``shape``,
            ``sparsity``, ``subject`` and ``median_s``. Speed-ups are dense median / sparse median
            at the same shape and sparsity.
        subject: the sparse subject; None picks "triton" if the rows have it, else "numba".

    Returns:
        ``{shape id: sparsity}``: above the highest measured sparsity where the sparse path is
        slower, the speed-up interpolated linearly to 1 between that sparsity and the next one
        (so a noisy dip at a high sparsity moves the crossover up, never down). Where the sparse
        path is faster at every measured sparsity, the lowest measured one (a conservative
        threshold: the crossover lies below it; the report prints "<50%"); where it is slower
        at the highest one, None (never worth it in the measured range; the report prints
        ">99%"). Shapes without both subjects measured are absent.
    """
    subject = subject or sparse_subject(rows)
    return {shape: _crossing(points)[0] for shape, points in speedups(rows, subject).items()}


def derive(rows: list[dict]) -> list[dict]:
    """Add ``speedup_vs_dense`` (dense median / median at the same shape and sparsity, this run)
    to the measured ``rows`` (each: the case info, min_s, median_s, rounds, max_abs_diff)."""
    median = {(r["shape"], r["sparsity"], r["subject"]): r["median_s"] for r in rows}
    derived = []
    for row in rows:
        dense = median.get((row["shape"], row["sparsity"], BASELINE))
        speedup = None if dense is None else dense / row["median_s"]
        derived.append({**row, "speedup_vs_dense": speedup})
    return derived


def write_report(rows: list[dict], skipped: list[dict], meta: dict, stem: Path) -> list[Path]:
    """Write ``<stem>.json`` (rows, crossovers, skips, parameters, run metadata), ``<stem>.md``
    and ``<stem>.png`` (speed-up against sparsity, one line per shape).

    Args:
        rows: measured cases, see :func:`derive`.
        skipped: ``{"case": id, "reason": ...}`` of the cases that could not run.
        meta: the run's device, commit, date, command and versions; device, commit, date and
            command are also copied into every row.

    Returns:
        The three paths written.
    """
    table = stamp_rows(derive(rows), meta)
    subject = sparse_subject(table)
    params = {
        "N": f"{N} (batch {BATCH} x T {STEPS})",
        "input": f"(rand(N, C, H, W) >= sparsity).float(), seed {INPUT_SEED}",
        "weight": f"randn float32, seed {WEIGHT_SEED}; no bias",
        "padding": "kernel // 2",
        "check": "False on every subject but numba+check",
        "allocator": _allocator_note(table),
        # On CUDA, torch's default lets cuDNN convolve in TF32: a dense baseline of less than
        # float32 precision. Recorded, not changed: the suite measures torch as configured.
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    report = {
        "suite": "sparse_conv",
        "meta": meta,
        "params": params,
        "crossover_subject": subject,
        "crossover": crossover(table, subject),
        "rows": table,
        "skipped": skipped,
    }
    json_path = write_json(stem.with_suffix(".json"), report)
    md_path, png_path = stem.with_suffix(".md"), stem.with_suffix(".png")
    md_path.write_text(_markdown(table, skipped, meta, subject, png_path.name))
    _plot(table, meta, subject, png_path)
    return [json_path, md_path, png_path]


def _allocator_note(table: list[dict]) -> str:
    if all(r.get("malloc_keeps_freed") for r in table):
        return "glibc malloc keeps freed memory (keep_freed_memory): no first-touch page faults"
    return "the default allocator (keep_freed_memory not applied): may include page faults"


def _markdown(table: list[dict], skipped: list[dict], meta: dict, subject: str, png: str) -> str:
    names = [s for s in SUBJECTS if any(r["subject"] == s for r in table)]
    sparse = [s for s in names if s != BASELINE]
    row_of = {(r["shape"], r["sparsity"], r["subject"]): r for r in table}
    layers = {r["shape"]: r for r in table}  # shape -> a row with its geometry
    sparsities = sorted({r["sparsity"] for r in table})
    lines = [
        f"# Sparse convolution benchmark: {meta['device']}",
        "",
        f"Commit `{meta['commit']}`, {meta['date']}, `{meta['command']}`.",
        f"torch {meta['torch']} ({meta['torch_threads']} threads), numba {meta['numba']}, "
        f"triton {meta['triton']}.",
        "",
        f"`spike_conv2d` / `spike_linear` on N = {N} samples (batch {BATCH} x T {STEPS}) of "
        "binary spikes `(rand >= sparsity).float()`, float32 `randn` weights, no bias, padding "
        'kernel // 2. dense = `backend="dense"` (`F.conv2d` / `F.linear` in float32), the '
        'baseline of every speed-up ("x dense": dense median / subject median, same shape and '
        "sparsity, measured back to back in this run). Every subject runs with `check=False` "
        "except numba+check, which adds the pass verifying that the input is binary. The sparse "
        "times include what each call does besides the scatter (the scan of the spikes, the "
        "weight to its transposed layout, the output buffer filled); their output is "
        "channels-last, returned without a copy. Times are medians over the rounds (min in the "
        "JSON). max |diff|: the largest |sparse - dense| output difference, a sanity check (the "
        "float32 error bound is tested in `tests/`). Allocator: "
        f"{_allocator_note(table)}. Timings on a shared machine are noisy: compare within a "
        "shape.",
        "",
        f"## Crossover sparsity ({subject} vs dense)",
        "",
        f"The sparsity from which {subject} is faster than dense: its speed-up interpolated "
        "linearly to 1 between the highest measured sparsity where it is slower and the next "
        "one; `<` or `>` when outside the measured range. Plot: "
        f"[`{png}`]({png}).",
        "",
        "| shape | networks | crossover | "
        + " | ".join(f"x dense at {_percent(s)}%" for s in sparsities)
        + " |",
        "|---|---|--:|" + "--:|" * len(sparsities),
    ]
    curves = speedups(table, subject)
    for shape, points in curves.items():
        at = dict(points)
        cells = " | ".join(_num(at.get(s), ".2f") for s in sparsities)
        lines.append(f"| {shape} | {layers[shape]['nets']} | {_crossing(points)[1]} | {cells} |")

    for shape, layer in layers.items():
        geometry = (
            f"[{N}, {layer['in_channels']}] -> [{N}, {layer['out_channels']}]"
            if layer["kernel"] == 0
            else f"[{N}, {layer['in_channels']}, {layer['size']}, {layer['size']}], "
            f"{layer['kernel']}x{layer['kernel']} to {layer['out_channels']} channels, "
            f"stride {layer['stride']}, padding {layer['padding']}"
        )
        header = ["sparsity", *(f"{s} ms" for s in names), *(f"{s} x dense" for s in sparse)]
        lines += [
            "",
            f"## {shape} ({layer['nets']})",
            "",
            geometry + ".",
            "",
            "| " + " | ".join([*header, "max \\|diff\\|"]) + " |",
            "|--:|" + "--:|" * (len(header) - 1) + "--:|",
        ]
        for sparsity in sparsities:
            measured = [row_of.get((shape, sparsity, s)) for s in names]
            if not any(measured):
                continue
            times = [_num(r and r["median_s"], ".3g", 1e3) for r in measured]
            ratios = [_num(r and r["speedup_vs_dense"], ".2f") for r in measured[1:]]
            diffs = [r["max_abs_diff"] for r in measured[1:] if r and r["max_abs_diff"] is not None]
            diff = _num(max(diffs) if diffs else None, ".2g")
            lines.append(f"| {_percent(sparsity)}% | " + " | ".join([*times, *ratios, diff]) + " |")
    if skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- `{s['case']}`: {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"


def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "" if value is None else format(value * scale, fmt)


def _plot(table: list[dict], meta: dict, subject: str, path: Path) -> None:
    """Speed-up of ``subject`` over dense against sparsity, a line per shape, log y axis."""
    # Matplotlib's object API with the Agg canvas: no pyplot, no global backend switch, and the
    # import only when a report is written.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    curves = speedups(table, subject)
    sparsities = sorted({s for points in curves.values() for s, _ in points})
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(curves))]
    styles = ["-", "--", ":"]
    for i, (shape, points) in enumerate(curves.items()):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", color=colors[i], linestyle=styles[i // 10 % 3], label=shape)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    # Logit x axis: spreads 90, 95 and 99% apart, where the crossovers and the targets lie.
    if sparsities and all(0 < s < 1 for s in sparsities):
        ax.set_xscale("logit")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sparsities, labels=[f"{_percent(s)}%" for s in sparsities])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("input sparsity (fraction of zeros)")
    ax.set_ylabel(f"speed-up of {subject} over dense (median times)")
    ax.set_title(
        f"spike_conv2d / spike_linear, {subject} vs dense, N = {N}\n"
        f"{meta['device']}, commit {meta['commit']}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    fig.savefig(path, dpi=110)
