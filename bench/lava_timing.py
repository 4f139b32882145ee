"""Time Lava's own CPU simulation of Dense -> LIF, the baseline of ``bench/test_loihi.py``.

Runs under a Python 3.10 virtualenv with Lava, never under neuro-emu's (Lava 0.10.0 needs Python
< 3.11; this script imports neither torch nor neuro_emu)::

    PYENV_VERSION=3.10.13 python3.10 -m venv /tmp/lava310
    /tmp/lava310/bin/pip install --prefer-binary lava-nc==0.10.0
    /tmp/lava310/bin/python bench/lava_timing.py   # -> bench/results/lava-timing-<cpu>.json

``<cpu>`` is the CPU label of ``neuro_emu.benchmarks.device_label`` (its stdlib-only module
``neuro_emu/benchmarks/cpu.py``, loaded here by path), which is the
name ``neuro_emu.benchmarks.loihi`` looks for. Pass a path to write elsewhere, ``--quick`` for the
smallest shape only, ``--repeats N`` for the networks built per shape.

Per shape ``n_in x n_out x T`` it builds ``RingBuffer source -> Dense -> LIF -> RingBuffer sink``
``repeats`` times, each a fresh network, and times, with ``Loihi2SimCfg(select_tag="fixed_pt")``
(Lava's bit-accurate CPU models, its fastest fixed-point mode):

- ``compile``: ``lif.compile(run_cfg)``;
- ``create_runtime``: starting Lava's runtime (one OS process per Lava process, plus the runtime
  service) on that executable;
- ``first_run``: the first ``lif.run(condition=RunSteps(num_steps=T))``, all T steps in one call;
- ``get``: ``sink.data.get()``, reading the recorded spikes back;
- ``run``: a second ``run`` of T more steps, continuing the same network (the source ring buffer
  wraps around to step 0): Lava's steady-state cost for T steps, the headline figure;
- ``first_call`` = compile + create_runtime + first_run: what a user pays for one fresh run.

The spikes of the first run (``[T, n_out]``, step-major) give ``spikes_sum``, ``spikes_per_step``
and ``spikes_sha256`` (sha256 of the uint8 raster in C order), for neuro-emu's bit-accuracy check.

Shapes, parameters and inputs come from ``neuro_emu/benchmarks/loihi_inputs.py`` (numpy only,
loaded by path), the module the suite uses too. Inputs are drawn with
``rng = numpy.random.default_rng(seed)``, in this order::

    weights = rng.integers(-255, 256, size=(n_out, n_in), dtype=np.int64)   # [n_out, n_in]
    spikes = (rng.random((T, n_in)) < DENSITY).astype(np.int64)            # [T, n_in], 0/1

``weights_sha256`` / ``spikes_sha256_in`` (int64, C order) let the other side check it built the
same arrays (numpy's Generator streams are stable in practice, not guaranteed across versions).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPEATS = 5


def _load_benchmark_module(name: str):
    """``neuro_emu/benchmarks/<name>.py`` of this checkout, loaded by path: it needs neither torch
    nor neuro_emu, which Lava's Python lacks."""
    path = Path(__file__).resolve().parents[1] / "neuro_emu" / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"neuro_emu_benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The suite's shapes, parameters and inputs (neuro_emu.benchmarks.loihi uses the same module).
_INPUTS = _load_benchmark_module("loihi_inputs")
SHAPES, QUICK_SHAPES = _INPUTS.SHAPES, _INPUTS.QUICK_SHAPES
SEED, DENSITY = _INPUTS.SEED, _INPUTS.DENSITY
WEIGHT_LOW, WEIGHT_HIGH = _INPUTS.WEIGHT_LOW, _INPUTS.WEIGHT_HIGH
NEURON, DENSE = _INPUTS.NEURON, _INPUTS.DENSE
bench_inputs, sha256 = _INPUTS.bench_inputs, _INPUTS.sha256


def cpu_label() -> str:
    """``neuro_emu.benchmarks.device_label(torch.device("cpu"))``, without torch or neuro_emu."""
    return _load_benchmark_module("cpu").cpu_label()


def time_once(n_in: int, n_out: int, steps: int) -> dict:
    """Build a fresh network and time its phases (see the module docstring)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    weights, spikes = bench_inputs(n_in, n_out, steps)
    source = Source(data=spikes.T.astype(np.int32))  # [n_in, T]: the last axis is time
    dense = Dense(weights=weights.astype(np.int32), **DENSE)
    lif = LIF(shape=(n_out,), **NEURON)
    sink = Sink(shape=(n_out,), buffer=steps)
    source.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)

    run_cfg = Loihi2SimCfg(select_tag="fixed_pt")
    times = {}
    start = time.perf_counter()
    executable = lif.compile(run_cfg)
    times["compile"] = time.perf_counter() - start
    start = time.perf_counter()
    lif.create_runtime(executable=executable)
    times["create_runtime"] = time.perf_counter() - start
    try:
        start = time.perf_counter()
        lif.run(condition=RunSteps(num_steps=steps))
        times["first_run"] = time.perf_counter() - start
        start = time.perf_counter()
        recorded = sink.data.get()  # [n_out, T]; column k = step k (0-based)
        times["get"] = time.perf_counter() - start
        start = time.perf_counter()
        lif.run(condition=RunSteps(num_steps=steps))
        times["run"] = time.perf_counter() - start
    finally:
        start = time.perf_counter()
        lif.stop()
        times["stop"] = time.perf_counter() - start
    raster = np.asarray(recorded).T.astype(np.uint8)  # [T, n_out]
    return {"times": times, "raster": raster}


def time_shape(n_in: int, n_out: int, steps: int, repeats: int) -> dict:
    weights, spikes = bench_inputs(n_in, n_out, steps)
    runs = [time_once(n_in, n_out, steps) for _ in range(repeats)]
    rasters = {sha256(r["raster"]) for r in runs}
    if len(rasters) != 1:
        raise RuntimeError(f"{n_in}x{n_out}x{steps}: Lava gave different spikes across repeats")
    raster = runs[0]["raster"]

    def phase(name: str) -> list[float]:
        return [r["times"][name] for r in runs]

    first_call = [
        r["times"]["compile"] + r["times"]["create_runtime"] + r["times"]["first_run"] for r in runs
    ]
    row = {"n_in": n_in, "n_out": n_out, "T": steps, "repeats": repeats}
    row["lava_run_s_min"] = min(phase("run"))
    row["lava_run_s_median"] = statistics.median(phase("run"))
    row["lava_first_call_s"] = statistics.median(first_call)
    row["lava_first_call_s_min"] = min(first_call)
    for name in ("compile", "create_runtime", "first_run", "get", "stop"):
        row[f"lava_{name}_s_median"] = statistics.median(phase(name))
    row["lava_run_s_all"] = phase("run")
    row["spikes_sum"] = int(raster.sum())
    row["spikes_per_step"] = raster.sum(axis=1).tolist()
    row["spikes_sha256"] = sha256(raster)
    row["weights_sha256"] = sha256(weights)
    row["spikes_sha256_in"] = sha256(spikes)
    row["input_spikes_sum"] = int(spikes.sum())
    return row


def _shape(text: str) -> tuple[int, int, int]:
    try:
        n_in, n_out, steps = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N_IN,N_OUT,T, got {text!r}") from None
    return n_in, n_out, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent / "results" / f"lava-timing-{cpu_label()}.json"
    parser.add_argument("out", nargs="?", type=Path, default=default, help=f"default: {default}")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="fresh networks per shape")
    parser.add_argument("--quick", action="store_true", help="the smallest shape only")
    parser.add_argument("--shapes", nargs="+", metavar="N_IN,N_OUT,T", type=_shape,
                        help="time these shapes only and merge them into the out file's rows")
    args = parser.parse_args(argv)

    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    rows = []
    for n_in, n_out, steps in shapes:
        started = time.perf_counter()
        row = time_shape(n_in, n_out, steps, args.repeats)
        rows.append(row)
        print(
            f"{n_in}x{n_out}x{steps}: run median {row['lava_run_s_median']:.4f} s "
            f"(min {row['lava_run_s_min']:.4f}), first call {row['lava_first_call_s']:.3f} s, "
            f"spikes {row['spikes_sum']} ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    report = {
        "suite": "lava-timing",
        "lava": metadata.version("lava-nc"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": cpu_label(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "run_cfg": 'Loihi2SimCfg(select_tag="fixed_pt")',
        "params": {
            "seed": SEED,
            "density": DENSITY,
            "weights": [WEIGHT_LOW, WEIGHT_HIGH],
            "neuron": NEURON,
            "dense": DENSE,
            "generation": "rng = np.random.default_rng(seed); "
            "weights = rng.integers(-255, 256, size=(n_out, n_in), dtype=np.int64); "
            "spikes = (rng.random((T, n_in)) < density).astype(np.int64)",
        },
        "rows": rows,
    }
    if args.shapes and args.out.is_file():  # keep the other shapes' rows, replace these
        timed = {(r["n_in"], r["n_out"], r["T"]) for r in rows}
        kept = [r for r in json.loads(args.out.read_text())["rows"]
                if (r["n_in"], r["n_out"], r["T"]) not in timed]
        report["rows"] = sorted(kept + rows, key=lambda r: SHAPES.index(
            (r["n_in"], r["n_out"], r["T"])) if (r["n_in"], r["n_out"], r["T"]) in SHAPES else 99)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
