"""Launch-shape sweep of the fused multi-step LIF kernels on one GPU: where the gap to a copy goes.

Run on the GPU machine, from the repository root (one run, about two minutes on an H100)::

    python3 bench/gpu_lif_tune.py --out $OUT/lif_tune.json

For each shape of ``SHAPES`` and dtype of ``DTYPES`` it

- times (``triton.testing.do_bench``, median, L2 flushed before each call) a copy of the same bytes
  (``out.copy_(x)``), the raw launchers ``multistep_lif_fwd``/``multistep_lif_bwd`` for every
  block x num_warps x prefetch variant, and the public op (its default variant) forward under
  no_grad and forward+backward;
- checks every variant's outputs bit for bit against the default variant's (and the public op's
  against the raw launchers'), on the timed shapes and on an odd-sized tail shape with v_init and
  grad_v given;
- reports the GB/s of the bytes each kernel must move (``traffic``) and their fraction of the
  copy's GB/s;
- measures the public op's host cost per call: wall time per call on a tiny tensor (launch-bound)
  and where it goes by Python function (cProfile), the per-call wall time with
  ``torch.cuda.synchronize`` on the big shapes (how the first numbers were taken), and the CUDA
  kernels a call launches with their device time (torch.profiler).

It prints a table and writes every number, with versions, device, commit, date and command, to
``--out``. ``--smoke`` runs the same bookkeeping on tiny CPU tensors in Triton's interpreter
(``TRITON_INTERPRET=1``, set by the flag), timing by wall clock, so a typo shows up before a GPU
session. The subject here is the launchers' launch shape, one level below ``neuro_emu.ops``, so
this script, unlike the benchmark suites, calls the kernel module directly.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import importlib.util
import itertools
import json
import math
import os
import pstats
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (T, N): 2^26 neuron-steps each, 256 MiB per float32 tensor: far past an H100's 50 MiB of L2.
SHAPES = [(8, 2**23), (32, 2**21)]
SMOKE_SHAPES = [(3, 2500), (4, 1000)]
# Correctness only: odd N leaves a partial last block, T not a multiple of anything.
TAIL_SHAPE, SMOKE_TAIL_SHAPE = (5, 100_003), (3, 777)
HOST_SHAPE = (8, 1024)  # so small that a call costs only its host time
DTYPE_NAMES = ["float32", "bfloat16"]
BLOCKS, WARPS, PREFETCHES = [512, 1024, 2048, 4096], [4, 8], [False, True]
NEURON = dict(beta=0.5, v_th=1.0, reset="subtract", surrogate="atan", alpha=2.0)


@dataclass(frozen=True)
class Variant:
    block: int
    num_warps: int
    prefetch: bool

    @property
    def label(self) -> str:
        return f"b{self.block}-w{self.num_warps}-pf{int(self.prefetch)}"

    def kwargs(self) -> dict:
        return {"block": self.block, "num_warps": self.num_warps, "prefetch": self.prefetch}


VARIANTS = [Variant(*v) for v in itertools.product(BLOCKS, WARPS, PREFETCHES)]


def traffic(kind: str, steps: int, n: int, elem: int, has_state: bool = False) -> int:
    """Bytes ``kind`` must move for x: [T, N] of ``elem``-byte elements (membranes float32).

    copy: read + write. fwd: read x, write s and v_final. bwd: read x, write and read back the
    float32 h scratch, read grad_s, write grad_x, write grad_v_init. ``has_state``: v_init read
    (fwd, bwd) and grad_v read (bwd).
    """
    tn = steps * n
    state = 4 * n if has_state else 0
    fwd = 2 * tn * elem + 4 * n + state
    bwd = tn * (3 * elem + 2 * 4) + 4 * n + 2 * state
    return {"copy": 2 * tn * elem, "fwd": fwd, "bwd": bwd, "op_fwd": fwd, "op_fwd_bwd": fwd + bwd}[
        kind
    ]


def mismatches(a, b) -> int:
    """Elements whose bit patterns differ (NaN-safe, unlike ``torch.equal``); numel on a shape or
    dtype mismatch."""
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return max(a.numel(), b.numel())
    bits = {4: torch.int32, 2: torch.int16, 1: torch.int8}[a.element_size()]
    return int((a.contiguous().view(bits) != b.contiguous().view(bits)).sum().item())


def import_package():
    """neuro_emu with its kernels, from this checkout: installed (pip install -e), or else laid
    out here as setup.py's package_dir does (kernels/ and reference/ inside neuro_emu)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import neuro_emu

    for name in ("kernels", "reference"):
        full = f"neuro_emu.{name}"
        if importlib.util.find_spec(full) is None:
            spec = importlib.util.spec_from_file_location(
                full, ROOT / name / "__init__.py", submodule_search_locations=[str(ROOT / name)]
            )
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            spec.loader.exec_module(module)
            setattr(neuro_emu, name, module)
    from neuro_emu import ops
    from neuro_emu.kernels import multistep_lif as kernels

    return ops, kernels


def commit_label() -> str:
    """NEURO_EMU_COMMIT (the caller names the commit it sent) or git's HEAD, +dirty if edited."""
    if os.environ.get("NEURO_EMU_COMMIT"):
        return os.environ["NEURO_EMU_COMMIT"]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


class Tuner:
    def __init__(self, args: argparse.Namespace):
        import torch
        import triton

        self.torch, self.triton = torch, triton
        self.ops, self.kernels = import_package()
        self.smoke = args.smoke
        self.device = torch.device("cpu" if args.smoke else "cuda")
        self.warmup, self.rep = args.warmup, args.rep
        k = self.kernels
        self.default = Variant(k.BLOCK, k.NUM_WARPS, k.PREFETCH)
        self.p = self.ops.lif_params(
            NEURON["beta"],
            NEURON["v_th"],
            NEURON["reset"],
            0.0,
            NEURON["surrogate"],
            NEURON["alpha"],
            False,
        )
        self.rows: list[dict] = []
        self.started = time.perf_counter()
        self.load_at_start = list(os.getloadavg())

    def log(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {text}", flush=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def bench_ms(self, fn: Callable[[], object]) -> float:
        """Median ms per call: do_bench on a GPU, a few wall-clock calls in the interpreter."""
        if self.smoke:
            fn()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return 1e3 * statistics.median(times)
        from triton.testing import do_bench

        try:
            return float(do_bench(fn, warmup=self.warmup, rep=self.rep, return_mode="median"))
        except TypeError:  # a Triton without return_mode
            return float(do_bench(fn, warmup=self.warmup, rep=self.rep, quantiles=[0.5])[0])

    def wall_ms(self, fn: Callable[[], object], calls: int) -> float:
        """Median wall ms of ``fn(); synchronize()``, one call at a time."""
        fn()
        self.sync()
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    def host_us(self, fn: Callable[[], object], calls: int, batches: int) -> dict:
        """Wall µs per call over ``batches`` batches of ``calls`` back-to-back calls (launch-bound
        on tiny tensors): the median batch, and the fastest (the least disturbed by other work)."""
        for _ in range(3):
            fn()
        self.sync()
        per_call = []
        for _ in range(batches):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            self.sync()
            per_call.append(1e6 * (time.perf_counter() - start) / calls)
        return {"median": statistics.median(per_call), "min": min(per_call)}

    # The four things timed, as functions of a variant.
    def fwd(self, x, variant: Variant, v_init=None):
        p = self.p
        return self.kernels.multistep_lif_fwd(
            x, v_init, p.beta, p.v_th, p.v_reset, p.reset, **variant.kwargs()
        )

    def bwd(self, grad_s, x, variant: Variant, v_init=None, grad_v=None):
        p = self.p
        return self.kernels.multistep_lif_bwd(
            grad_s,
            grad_v,
            x,
            v_init,
            p.beta,
            p.v_th,
            p.v_reset,
            p.reset,
            p.surrogate,
            p.sg_a,
            p.sg_b,
            p.detach_reset,
            **variant.kwargs(),
        )

    def op_fwd(self, x):
        with self.torch.no_grad():
            return self.ops.multistep_lif(x, **NEURON, backend="triton", return_state=True)

    def op_fwd_bwd(self, x, grad_s):
        x = x.detach().requires_grad_()
        spikes = self.ops.multistep_lif(x, **NEURON, backend="triton")
        return self.torch.autograd.grad(spikes, x, grad_s)[0]

    def inputs(self, steps: int, n: int, dtype, seed: int = 0):
        """x around the threshold (about a third of the steps spike) and a random grad_s."""
        torch = self.torch
        gen = torch.Generator(device=self.device).manual_seed(seed)
        x = torch.randn(steps, n, generator=gen, device=self.device) * 0.8 + 0.4
        grad_s = torch.randn(steps, n, generator=gen, device=self.device)
        return x.to(dtype), grad_s.to(dtype)

    def row(self, kind: str, steps: int, n: int, dtype_name: str, **fields) -> dict:
        row = {"kind": kind, "T": steps, "N": n, "dtype": dtype_name, **fields}
        self.rows.append(row)
        return row

    def timed(
        self,
        kind: str,
        steps: int,
        n: int,
        dtype_name: str,
        elem: int,
        fn: Callable[[], object],
        copy_gbps: float | None,
        **fields,
    ) -> dict:
        """Time ``fn`` into a row with its GB/s; a failure (compile error, ...) is recorded."""
        nbytes = traffic(kind, steps, n, elem)
        try:
            ms = self.bench_ms(fn)
        except Exception as error:  # a failed variant is a result, not a crash
            return self.row(kind, steps, n, dtype_name, error=_short(error), **fields)
        gbps = nbytes / (ms * 1e-3) / 1e9
        frac = None if copy_gbps is None else gbps / copy_gbps
        return self.row(
            kind, steps, n, dtype_name, ms=ms, bytes=nbytes, gbps=gbps, frac_copy=frac, **fields
        )

    def sweep(self, steps: int, n: int, dtype_name: str) -> None:
        """Copy, every variant of both launchers, and the public op, on one shape and dtype."""
        torch = self.torch
        dtype = getattr(torch, dtype_name)
        x, grad_s = self.inputs(steps, n, dtype)
        elem = x.element_size()
        copy_gbps = self.timed(
            "copy",
            steps,
            n,
            dtype_name,
            elem,
            functools.partial(torch.empty_like(x).copy_, x),
            None,
        ).get("gbps")
        refs = {}  # the default variant's outputs, which runs first
        for variant in sorted(VARIANTS, key=lambda v: v != self.default):
            for kind, run in [
                ("fwd", lambda v=variant: self.fwd(x, v)),
                ("bwd", lambda v=variant: self.bwd(grad_s, x, v)),
            ]:
                fields = {
                    "variant": variant.label,
                    **variant.kwargs(),
                    "default": variant == self.default,
                }
                fn = getattr(self.kernels, f"_multistep_lif_{kind}_kernel")
                before = set(_compiled(fn))
                try:
                    got = run()
                    self.sync()
                except Exception as error:
                    self.row(kind, steps, n, dtype_name, error=_short(error), **fields)
                    continue
                compiled = _compiled(fn)
                fields["compiled"] = [
                    _kernel_stats(compiled[key]) for key in set(compiled) - before
                ]
                if variant == self.default:
                    refs[kind] = got
                if kind in refs:  # else the default failed: nothing to compare with
                    fields["mismatches"] = sum(map(mismatches, got, refs[kind]))
                del got
                self.timed(kind, steps, n, dtype_name, elem, run, copy_gbps, **fields)
        try:
            spikes, v_final = self.op_fwd(x)
            grad_x = self.op_fwd_bwd(x, grad_s)
            op_mismatches = {
                "op_fwd": mismatches(spikes, refs["fwd"][0]) + mismatches(v_final, refs["fwd"][1]),
                "op_fwd_bwd": mismatches(grad_x, refs["bwd"][0]),
            }
        except Exception as error:
            self.row("op_fwd", steps, n, dtype_name, error=_short(error))
            return
        del spikes, v_final, grad_x, refs
        for kind, fn in [
            ("op_fwd", lambda: self.op_fwd(x)),
            ("op_fwd_bwd", lambda: self.op_fwd_bwd(x, grad_s)),
        ]:
            self.timed(
                kind,
                steps,
                n,
                dtype_name,
                elem,
                fn,
                copy_gbps,
                variant=self.default.label,
                mismatches=op_mismatches[kind],
            )
        # Per call with a synchronize after each, as the first measurements were taken.
        calls = 3 if self.smoke else 20
        for kind, fn in [
            ("copy", lambda: x.clone()),
            ("fwd", lambda: self.fwd(x, self.default)),
            ("op_fwd", lambda: self.op_fwd(x)),
            ("bwd", lambda: self.bwd(grad_s, x, self.default)),
            ("op_fwd_bwd", lambda: self.op_fwd_bwd(x, grad_s)),
        ]:
            self.row("sync_wall", steps, n, dtype_name, of=kind, ms=self.wall_ms(fn, calls))
        if not self.smoke:
            torch.cuda.empty_cache()

    def check_tail(self, steps: int, n: int, dtype_name: str) -> None:
        """Every variant against the default on a partial last block, with v_init and grad_v."""
        torch = self.torch
        x, grad_s = self.inputs(steps, n, getattr(torch, dtype_name), seed=1)
        gen = torch.Generator(device=self.device).manual_seed(2)
        v_init = torch.rand(n, generator=gen, device=self.device)
        grad_v = torch.randn(n, generator=gen, device=self.device)
        ref_fwd = self.fwd(x, self.default, v_init)
        ref_bwd = self.bwd(grad_s, x, self.default, v_init, grad_v)
        for variant in VARIANTS:
            fields = {"variant": variant.label, **variant.kwargs()}
            try:
                fwd = self.fwd(x, variant, v_init)
                bwd = self.bwd(grad_s, x, variant, v_init, grad_v)
                fields["mismatches"] = sum(map(mismatches, fwd + bwd, ref_fwd + ref_bwd))
            except Exception as error:
                fields["error"] = _short(error)
            self.row("tail_check", steps, n, dtype_name, **fields)

    def host_overhead(self) -> dict:
        """Per-call wall µs on a tiny float32 tensor: what a call costs the host."""
        torch = self.torch
        steps, n = HOST_SHAPE
        x, grad_s = self.inputs(steps, n, torch.float32)
        calls, batches = (5, 2) if self.smoke else (50, 10)
        fns = {
            "clone (one torch op)": lambda: x.clone(),
            "raw fwd launcher": lambda: self.fwd(x, self.default),
            "raw bwd launcher": lambda: self.bwd(grad_s, x, self.default),
            "op fwd, no_grad": lambda: self.op_fwd(x),
            "op fwd, x requires grad": lambda: self.ops.multistep_lif(
                x.detach().requires_grad_(), **NEURON, backend="triton"
            ),
            "op fwd+bwd (autograd.grad)": lambda: self.op_fwd_bwd(x, grad_s),
        }
        us = {name: self.host_us(fn, calls, batches) for name, fn in fns.items()}
        # Where the public op's forward+backward spends its host time, by Python function.
        fn = fns["op fwd+bwd (autograd.grad)"]
        profiler = cProfile.Profile()
        # Backward on this thread, not autograd's device thread, which cProfile would not see.
        with torch.autograd.set_multithreading_enabled(False):
            profiler.enable()
            for _ in range(calls):
                fn()
            self.sync()
            profiler.disable()
        stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
        top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:20]
        python = [
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls_per_op_call": nc / calls,
                "self_us_per_op_call": 1e6 * tt / calls,
                "cumulative_us_per_op_call": 1e6 * ct / calls,
            }
            for (file, line, name), (_, nc, tt, ct, _) in top
        ]
        return {
            "T": steps,
            "N": n,
            "calls": calls,
            "batches": batches,
            "us_per_call": us,
            "op_fwd_bwd_python_profile": python,
        }

    def profile(self, steps: int, n: int) -> dict:
        """The kernels one public-op call launches and their device time, next to its wall time."""
        torch = self.torch
        x, grad_s = self.inputs(steps, n, torch.float32)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if not self.smoke:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        result = {"T": steps, "N": n, "dtype": "float32"}
        calls = 2 if self.smoke else 5
        for kind, fn in [
            ("op_fwd", lambda: self.op_fwd(x)),
            ("op_fwd_bwd", lambda: self.op_fwd_bwd(x, grad_s)),
        ]:
            fn()
            self.sync()
            with torch.profiler.profile(activities=activities) as prof:
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                self.sync()
                wall = time.perf_counter() - start
            kernels = {}
            for event in prof.key_averages():
                if str(getattr(event, "device_type", "")).endswith("CUDA"):
                    us = getattr(event, "self_device_time_total", None)
                    if us is None:
                        us = getattr(event, "self_cuda_time_total", 0)
                    kernels[event.key] = {
                        "count_per_call": event.count / calls,
                        "device_us_per_call": us / calls,
                    }
            result[kind] = {
                "wall_us_per_call_profiled": 1e6 * wall / calls,
                "kernels": kernels,
                "device_us_per_call": sum(k["device_us_per_call"] for k in kernels.values()),
            }
        return result

    def summary(self) -> dict:
        """Per launcher, each variant's geometric-mean time relative to the default over every
        timed shape and dtype; the best variant among those that always ran and matched."""
        out = {}
        for kind in ("fwd", "bwd"):
            rows = [r for r in self.rows if r["kind"] == kind]
            default_ms = {
                (r["T"], r["N"], r["dtype"]): r["ms"]
                for r in rows
                if r.get("default") and "ms" in r
            }
            scores = {}
            for variant in VARIANTS:
                mine = [r for r in rows if r["variant"] == variant.label]
                ok = mine and all("ms" in r and r.get("mismatches") == 0 for r in mine)
                ratios = [
                    r["ms"] / default_ms[(r["T"], r["N"], r["dtype"])]
                    for r in mine
                    if "ms" in r and (r["T"], r["N"], r["dtype"]) in default_ms
                ]
                scores[variant.label] = {
                    "geomean_vs_default": _geomean(ratios) if ratios else None,
                    "all_ran_and_identical": bool(ok),
                }
            eligible = {
                k: v["geomean_vs_default"]
                for k, v in scores.items()
                if v["all_ran_and_identical"] and v["geomean_vs_default"] is not None
            }
            best = min(eligible, key=eligible.get) if eligible else None
            out[kind] = {"default": self.default.label, "best": best, "variants": scores}
        return out

    def metadata(self) -> dict:
        torch, triton = self.torch, self.triton
        gpu = None if self.smoke else torch.cuda.get_device_name()
        return {
            "device": gpu or "cpu (Triton interpreter)",
            "device_capability": None if self.smoke else list(torch.cuda.get_device_capability()),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "triton": triton.__version__,
            "python": sys.version.split()[0],
            "commit": commit_label(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "smoke": self.smoke,
            "cpus": os.cpu_count(),
            # Other work on the machine skews the host times: the load before and after.
            "load_average_1_5_15_min": {"start": self.load_at_start, "end": list(os.getloadavg())},
            "default_variant": self.default.label,
            "do_bench": {"warmup_ms": self.warmup, "rep_ms": self.rep, "stat": "median"},
            "neuron": NEURON,
        }


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[-600:]}"


def _geomean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def _compiled(jit_fn) -> dict:
    """Best effort: the compiled kernels a JITFunction caches, by key ({} in the interpreter or a
    Triton that keeps them elsewhere)."""
    found = {}
    for cache in getattr(jit_fn, "device_caches", {}).values():
        kernel_cache = cache[0] if isinstance(cache, tuple) else cache
        if isinstance(kernel_cache, dict):
            found.update(kernel_cache)
    return found


def _kernel_stats(kernel) -> dict:
    meta = getattr(kernel, "metadata", None)
    return {
        "n_regs": getattr(kernel, "n_regs", None),
        "n_spills": getattr(kernel, "n_spills", None),
        "num_warps": getattr(meta, "num_warps", None),
        "shared": getattr(meta, "shared", None),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(report: dict) -> None:
    rows = report["rows"]
    combos = sorted({(r["T"], r["N"], r["dtype"]) for r in rows if r["kind"] == "copy"})
    for steps, n, dtype in combos:
        here = [r for r in rows if (r["T"], r["N"], r["dtype"]) == (steps, n, dtype)]
        copy = next(r for r in here if r["kind"] == "copy")
        print(
            f"\nT={steps} N={n} {dtype}: copy {_fmt(copy.get('ms'), '.3f')} ms "
            f"{_fmt(copy.get('gbps'), '.0f')} GB/s"
        )
        print(
            f"  {'variant':<14} {'fwd ms':>8} {'GB/s':>6} {'%copy':>6} {'bwd ms':>8} "
            f"{'GB/s':>6} {'%copy':>6} {'mism':>5}  regs/spills fwd,bwd"
        )
        for variant in VARIANTS:
            cells = []
            mism = 0
            regs = []
            for kind in ("fwd", "bwd"):
                r = next(
                    (r for r in here if r["kind"] == kind and r["variant"] == variant.label), {}
                )
                if "error" in r:
                    cells.append(f"{'FAILED':>8} {'':>6} {'':>6}")
                else:
                    frac = r.get("frac_copy")
                    cells.append(
                        f"{_fmt(r.get('ms'), '8.3f')} {_fmt(r.get('gbps'), '6.0f')} "
                        f"{_fmt(None if frac is None else 100 * frac, '6.1f')}"
                    )
                mism += r.get("mismatches") or 0
                regs += [f"{c['n_regs']}/{c['n_spills']}" for c in r.get("compiled", [])]
            mark = "*" if variant.label == report["default_variant"] else " "
            print(f" {mark}{variant.label:<14} {cells[0]} {cells[1]} {mism:>5}  {','.join(regs)}")
        for kind in ("op_fwd", "op_fwd_bwd"):
            r = next((r for r in here if r["kind"] == kind), {})
            frac = r.get("frac_copy")
            print(
                f"  public {kind:<10} {_fmt(r.get('ms'), '.3f')} ms "
                f"{_fmt(r.get('gbps'), '.0f')} GB/s "
                f"{_fmt(None if frac is None else 100 * frac, '.1f')}% of copy, "
                f"mismatches vs raw {r.get('mismatches')}"
            )
        walls = {r["of"]: r["ms"] for r in here if r["kind"] == "sync_wall"}
        print(
            "  per call with synchronize (ms): "
            + ", ".join(f"{k} {v:.3f}" for k, v in walls.items())
        )
    tails = [r for r in rows if r["kind"] == "tail_check"]
    bad = [r for r in tails if "error" in r or r["mismatches"]]
    print(
        f"\ntail shape checks: {len(tails)} runs, {len(bad)} failed or mismatched "
        + ", ".join(f"{r['dtype']} {r['variant']}" for r in bad)
    )
    print(
        "\nhost cost per call, tiny tensor "
        f"T={report['host_overhead']['T']} N={report['host_overhead']['N']} (µs):"
    )
    print(f"  {'':<28} {'median':>8} {'min':>8}")
    for name, us in report["host_overhead"]["us_per_call"].items():
        print(f"  {name:<28} {us['median']:8.1f} {us['min']:8.1f}")
    print("  op fwd+bwd host time by Python function (self µs per call, top 8):")
    for row in report["host_overhead"]["op_fwd_bwd_python_profile"][:8]:
        print(f"    {row['self_us_per_op_call']:8.1f}  {row['function']}")
    prof = report.get("profile", {})
    for kind in ("op_fwd", "op_fwd_bwd"):
        if kind in prof:
            p = prof[kind]
            names = ", ".join(
                f"{k[:40]} x{v['count_per_call']:g} {v['device_us_per_call']:.0f} us"
                for k, v in p["kernels"].items()
            )
            print(
                f"profile {kind}: wall {p['wall_us_per_call_profiled']:.0f} us/call, device "
                f"{p['device_us_per_call']:.0f} us/call: {names}"
            )
    for kind, s in report["summary"].items():
        best = s["best"]
        score = s["variants"][best]["geomean_vs_default"] if best else None
        print(
            f"{kind}: best variant {best} ({_fmt(score, '.3f')} x the default's time, "
            f"geomean over shapes and dtypes); default {s['default']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("lif_tune.json"), help="JSON to write")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CPU tensors in Triton's interpreter (no GPU)"
    )
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warmup, ms")
    parser.add_argument("--rep", type=int, default=100, help="do_bench repetition time, ms")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel is defined
    tuner = Tuner(args)
    if not args.smoke and not tuner.torch.cuda.is_available():
        parser.error("no CUDA device here: run on the GPU machine, or pass --smoke")
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    tail = SMOKE_TAIL_SHAPE if args.smoke else TAIL_SHAPE
    tuner.log(f"default variant {tuner.default.label}; {len(VARIANTS)} variants")
    for (steps, n), dtype_name in itertools.product(shapes, DTYPE_NAMES):
        tuner.sweep(steps, n, dtype_name)
        tuner.log(f"swept T={steps} N={n} {dtype_name}")
    for dtype_name in DTYPE_NAMES:
        tuner.check_tail(*tail, dtype_name)
    tuner.log("tail checks done")
    meta = tuner.metadata()
    report = dict(meta)
    report["host_overhead"] = tuner.host_overhead()
    tuner.log("host overhead measured")
    try:
        report["profile"] = tuner.profile(*shapes[0])
    except Exception as error:  # the profiler is a nice-to-have
        report["profile"] = {"error": _short(error)}
    tuner.log("profiled")
    report["summary"] = tuner.summary()
    run = {k: meta[k] for k in ("device", "commit", "date", "command")}
    report["rows"] = [{**row, **run} for row in tuner.rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print_table(report)
    tuner.log(f"wrote {args.out}")
    failed = [r for r in tuner.rows if "error" in r]
    mismatched = [r for r in tuner.rows if r.get("mismatches")]
    print(f"{len(failed)} failed runs, {len(mismatched)} runs with mismatching bits")
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
