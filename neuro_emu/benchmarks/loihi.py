"""The Loihi benchmark suite: :func:`neuro_emu.loihi.run_dense_lif` against Lava's own simulation.

Lava 0.10.0 needs Python < 3.11, so it is timed apart, by ``bench/lava_timing.py`` under a Python
3.10 virtualenv, which writes ``bench/results/lava-timing-<cpu>.json`` (``<cpu>``: the host's CPU
label, :func:`neuro_emu.benchmarks.device_label` of the CPU). This suite times ``run_dense_lif``
on the same shapes, inputs and parameters, and when that file exists (or the one named by
``NEURO_EMU_LAVA_TIMING``) reports, per shape:

- the speed-up over Lava's steady-state run of T steps (``Loihi2SimCfg(select_tag="fixed_pt")``,
  a second ``run`` of an already started network: no compile, no process start-up) and over a
  fresh Lava run (compile + runtime start + first run of T steps);
- the bit-accuracy check: our spike count and spike raster (sha256 of the ``[T, n_out]`` uint8
  raster) against Lava's on the same inputs, which are checked to be the same arrays first.

Our call is the whole ``run_dense_lif``: Lava's weight clip/truncate, the Dense products, the LIF
over T steps, and the ``u, v, s`` traces of every step. Lava's steady-state run does the weight
preprocessing once, before, and records only the spikes; the "numba-prepared" subject is its
counterpart: :class:`neuro_emu.loihi.PreparedDenseLIF` built outside the timed call, which times
``run`` (Dense, LIF, and still every step's ``u, v, s`` traces). Subjects: "numba",
"numba-prepared" and "torch" on CPU; on CUDA also "triton" and "torch-cuda" (Lava itself runs only
on the CPU).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuro_emu.benchmarks import bench_dir, device_label, ratio, stamp_rows, write_json
from neuro_emu.benchmarks.loihi_inputs import (
    DENSE,
    DENSITY,
    NEURON,
    QUICK_SHAPES,
    SEED,
    SHAPES,
    WEIGHT_HIGH,
    WEIGHT_LOW,
    bench_inputs,
    sha256,
)
from neuro_emu.loihi import PreparedDenseLIF, run_dense_lif
from neuro_emu.ops import available_backends

PARAMS: dict[str, object] = {
    "seed": SEED,
    "density": DENSITY,
    "weights": [WEIGHT_LOW, WEIGHT_HIGH],
    "neuron": NEURON,
    "dense": DENSE,
}
PREPARED = "numba-prepared"  # the subject that times PreparedDenseLIF.run alone
LAVA_TIMING_ENV = "NEURO_EMU_LAVA_TIMING"  # a Lava timing JSON other than the host's


@dataclass(frozen=True)
class Case:
    """One benchmark: ``run_dense_lif`` with ``backend`` on ``device``, ``n_in x n_out x T``."""

    n_in: int
    n_out: int
    steps: int
    subject: str  # the backend, "-cuda" added for torch on CUDA, or PREPARED
    backend: str
    device: str

    @property
    def shape_id(self) -> str:
        return f"{self.n_in}x{self.n_out}xT{self.steps}"

    @property
    def id(self) -> str:
        return f"{self.shape_id}-{self.subject}"

    @property
    def group(self) -> str:
        """The pytest-benchmark table this case is printed in: the subjects of one shape."""
        return self.shape_id

    def info(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "backend": self.backend,
            "tensor_device": self.device,  # "device" in a row is the run's machine (stamp_rows)
            "n_in": self.n_in,
            "n_out": self.n_out,
            "T": self.steps,
        }


def subjects(device: torch.device) -> list[tuple[str, str, str]]:
    """``(subject, backend, device)`` measurable here: the CPU backends always, Numba first, and
    on CUDA the Triton kernel and the torch spec on the GPU (Triton's CPU interpreter is for
    tests, not timing)."""
    cpu = available_backends("cpu")
    found = [(b, b, "cpu") for b in ("numba", "torch") if b in cpu]
    if "numba" in cpu:
        found.insert(1, (PREPARED, "numba", "cpu"))
    if device.type == "cuda":
        gpu = available_backends(device)
        found += [("triton", "triton", "cuda")] if "triton" in gpu else []
        found.append(("torch-cuda", "torch", "cuda"))
    return found


def cases(device: torch.device, quick: bool = False) -> list[Case]:
    """The suite's cases, grouped by shape so that compared subjects run back to back."""
    return [
        Case(n_in, n_out, steps, subject, backend, dev)
        for n_in, n_out, steps in (QUICK_SHAPES if quick else SHAPES)
        for subject, backend, dev in subjects(device)
    ]


def make_workload(case: Case) -> Callable[[], torch.Tensor]:
    """The call to time for ``case``, returning the spikes ``[T, n_out]``; inputs are made here,
    outside the timed call."""
    weights, spikes = bench_inputs(case.n_in, case.n_out, case.steps)
    device = torch.device(case.device)
    w, s = torch.from_numpy(weights).to(device), torch.from_numpy(spikes).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    if case.subject == PREPARED:
        prepared = PreparedDenseLIF(w, **DENSE, **NEURON, backend=case.backend)

        def run() -> torch.Tensor:
            return prepared.run(s)[2]

        return run

    def run() -> torch.Tensor:
        _, _, out = run_dense_lif(w, s, **DENSE, **NEURON, backend=case.backend)
        sync()
        return out

    return run


@functools.cache
def spike_summary(case: Case) -> dict[str, object]:
    """``case``'s spikes on the benchmark input: ``spikes_sum``, ``spikes_sha256`` of the uint8
    raster ``[T, n_out]`` and the input arrays' sha256, the fields Lava's timing file has too."""
    weights, spikes = bench_inputs(case.n_in, case.n_out, case.steps)
    raster = make_workload(case)().cpu().numpy().astype(np.uint8)
    return {
        "spikes_sum": int(raster.sum()),
        "spikes_sha256": sha256(raster),
        "weights_sha256": sha256(weights),
        "spikes_sha256_in": sha256(spikes),
    }


def lava_timing_path(results: Path | None = None) -> Path:
    """``NEURO_EMU_LAVA_TIMING`` if set, else ``<results>/lava-timing-<cpu label>.json``, or where
    Lava was not timed on this CPU, another CPU's file there (the last by name; the report then
    says which CPU it came from)."""
    if os.environ.get(LAVA_TIMING_ENV):
        return Path(os.environ[LAVA_TIMING_ENV])
    results = bench_dir() / "results" if results is None else results
    own = results / f"lava-timing-{device_label(torch.device('cpu'))}.json"
    others = sorted(results.glob("lava-timing-*.json"))
    return own if own.is_file() or not others else others[-1]


def load_lava(path: Path) -> dict | None:
    """The Lava timing report at ``path`` (see ``bench/lava_timing.py``), or None if absent."""
    return json.loads(path.read_text()) if path.is_file() else None


def derive(rows: list[dict], lava: dict | None) -> list[dict]:
    """Add Lava's figures for the same shape, the speed-ups over them and the spike agreement.

    Each row has subject, backend, tensor_device, n_in, n_out, T, min_s, median_s, rounds and the
    fields of :func:`spike_summary`. Speed-ups use the medians. ``inputs_match``: the Lava file
    used the same parameters and built the same input arrays (else no spike comparison).
    """
    by_shape = {(r["n_in"], r["n_out"], r["T"]): r for r in (lava or {}).get("rows", [])}
    lava_params = (lava or {}).get("params", {})
    same_params = lava is not None and all(lava_params.get(k) == v for k, v in PARAMS.items())
    derived = []
    for row in rows:
        ref = by_shape.get((row["n_in"], row["n_out"], row["T"]))
        inputs_match = (
            ref is not None
            and same_params
            and ref["weights_sha256"] == row["weights_sha256"]
            and ref["spikes_sha256_in"] == row["spikes_sha256_in"]
        )

        def get(key: str, ref: dict | None = ref) -> float | int | None:
            return None if ref is None else ref[key]

        derived.append(
            {
                **row,
                "neuron_steps_per_s": row["T"] * row["n_out"] / row["median_s"],
                "lava_run_s_median": get("lava_run_s_median"),
                "lava_run_s_min": get("lava_run_s_min"),
                "lava_first_call_s": get("lava_first_call_s"),
                "speedup_vs_lava_run": ratio(get("lava_run_s_median"), row["median_s"]),
                "speedup_vs_lava_first_call": ratio(get("lava_first_call_s"), row["median_s"]),
                "inputs_match": inputs_match,
                "lava_spikes_sum": get("spikes_sum"),
                "spikes_match": inputs_match and ref["spikes_sha256"] == row["spikes_sha256"],
            }
        )
    return derived


def write_report(rows: list[dict], skipped: list[dict], meta: dict, stem: Path) -> list[Path]:
    """Write ``<stem>.json`` (rows, skips, parameters, Lava's file, run metadata) and ``.md``.

    Args:
        rows: measured cases, see :func:`derive`.
        skipped: ``{"case": id, "reason": ...}`` of the cases that could not run.
        meta: the run's device, commit, date, command and versions; device, commit, date and
            command are also copied into every row.
        stem: ``bench/results/loihi-<device>[-quick][-partial]``; the Lava timing file is looked
            up next to it (:func:`lava_timing_path`).

    Returns:
        The two paths written.
    """
    path = lava_timing_path(stem.parent)
    lava = load_lava(path)
    table = stamp_rows(derive(rows, lava), meta)
    lava_meta = None
    if lava is not None:
        lava_meta = {k: v for k, v in lava.items() if k != "rows"}
        lava_meta["path"] = str(path)
    report = {
        "suite": "loihi",
        "meta": meta,
        "params": PARAMS,
        "lava": lava_meta,
        "lava_rows": None if lava is None else lava["rows"],
        "rows": table,
        "skipped": skipped,
    }
    json_path, md_path = write_json(stem.with_suffix(".json"), report), stem.with_suffix(".md")
    md_path.write_text(_markdown(table, skipped, meta, lava, path))
    return [json_path, md_path]


def _markdown(
    table: list[dict], skipped: list[dict], meta: dict, lava: dict | None, path: Path
) -> str:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value * 1e3:.3g}"

    def times(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}"

    lines = [
        f"# Loihi benchmark: {meta['device']}",
        "",
        f"Commit `{meta['commit']}`, {meta['date']}, `{meta['command']}`.",
        f"torch {meta['torch']} ({meta['torch_threads']} threads), numba {meta['numba']}, "
        f"triton {meta['triton']}.",
        "",
        "`neuro_emu.loihi.run_dense_lif` (Lava's bit-accurate Dense -> fixed-point CUBA LIF) on "
        f"random weights in [{WEIGHT_LOW}, {WEIGHT_HIGH}] and 0/1 input spikes of density "
        f"{DENSITY} (numpy `default_rng({SEED})`, as `bench/lava_timing.py` draws them), "
        f"du = {NEURON['du']}, dv = {NEURON['dv']}, vth = {NEURON['vth']}, no bias. Our time: "
        "one whole `run_dense_lif` call (weight clip/truncate, Dense, LIF over T steps, the u, "
        "v, s traces of every step), median and min over the rounds; for "
        f'"{PREPARED}", `PreparedDenseLIF.run` alone (the weights clipped, truncated and '
        "transposed once, before, as Lava's steady-state run has them; still every step's "
        "u, v, s traces).",
    ]
    if lava is None:
        lines += [
            "",
            f"No Lava timing file at `{path}`: run `bench/lava_timing.py` under a Python 3.10 "
            "virtualenv with lava-nc 0.10.0 (see its docstring) for the comparison.",
        ]
    else:
        repeats = ", ".join(f"{r['n_in']} x {r['n_out']} x {r['T']}: {r['repeats']}"
                            for r in lava["rows"])
        lines += [
            "",
            f"Lava {lava['lava']} (Python {lava['python']}, numpy {lava['numpy']}) on "
            f"`{lava['cpu']}`, {lava['date']}, `{lava['command']}` (`{path.name}`), "
            f"`{lava['run_cfg']}`, the median over each shape's fresh networks ({repeats}; the "
            "file's rows may come from several runs, the command above being the last). "
            '"Lava run": a second `run(RunSteps(T))` of a started network (steady state: no '
            'compile, no process start-up, weights already preprocessed); "Lava fresh": compile '
            '+ runtime start + the first `run` of T steps. "x Lava" divides Lava\'s median by '
            'ours. "Spikes": our spike count / Lava\'s; "raster": the whole `[T, n_out]` spike '
            "raster is identical (sha256), checked only where the inputs are the same arrays.",
        ]
        if lava.get("cpu") != device_label(torch.device("cpu")):
            lines += ["", f"**Lava was timed on another CPU (`{lava['cpu']}`).**"]
    lines += [
        "Timings on a shared machine are noisy.",
        "",
        "| n_in x n_out x T | subject | median ms | min ms | rounds | M neuron-steps/s "
        "| Lava run ms | Lava fresh ms | x Lava run | x Lava fresh | spikes ours / Lava "
        "| raster |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in table:
        if r["lava_spikes_sum"] is None:
            spikes, raster = f"{r['spikes_sum']} / -", ""
        elif not r["inputs_match"]:
            spikes, raster = f"{r['spikes_sum']} / {r['lava_spikes_sum']}", "other inputs"
        else:
            spikes = f"{r['spikes_sum']} / {r['lava_spikes_sum']}"
            raster = "identical" if r["spikes_match"] else "**DIFFERENT**"
        lines.append(
            f"| {r['n_in']} x {r['n_out']} x {r['T']} | {r['subject']} | {ms(r['median_s'])} "
            f"| {ms(r['min_s'])} | {r['rounds']} | {r['neuron_steps_per_s'] / 1e6:.1f} "
            f"| {ms(r['lava_run_s_median'])} | {ms(r['lava_first_call_s'])} "
            f"| {times(r['speedup_vs_lava_run'])} | {times(r['speedup_vs_lava_first_call'])} "
            f"| {spikes} | {raster} |"
        )
    if lava is not None:
        lines += [
            "",
            "## Lava's time, phase by phase (medians, ms)",
            "",
            "| n_in x n_out x T | compile | runtime start | first run | spikes get | run "
            "(min) | run per step | stop |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        measured = {(r["n_in"], r["n_out"], r["T"]) for r in table}
        for r in lava["rows"]:
            if (r["n_in"], r["n_out"], r["T"]) not in measured:
                continue
            lines.append(
                f"| {r['n_in']} x {r['n_out']} x {r['T']} | {ms(r['lava_compile_s_median'])} "
                f"| {ms(r['lava_create_runtime_s_median'])} | {ms(r['lava_first_run_s_median'])} "
                f"| {ms(r['lava_get_s_median'])} | {ms(r['lava_run_s_median'])} "
                f"({ms(r['lava_run_s_min'])}) | {ms(r['lava_run_s_median'] / r['T'])} "
                f"| {ms(r['lava_stop_s_median'])} |"
            )
    if skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- `{s['case']}`: {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"
