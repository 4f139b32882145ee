"""The ``neuro-emu`` command line: ``conform``, ``bench``, ``train``, ``convert``, ``loihi`` and
``demo``.

Exit status: 0 success, 1 a deviation from the numerics contract (or a failed benchmark run),
2 bad usage (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence

from neuro_emu.benchmarks import SUITES
from neuro_emu.nir.cli import add_nir_commands


def _use_triton_interpreter_without_gpu() -> None:
    """Without CUDA, run Triton kernels in Triton's CPU interpreter. Must happen before any kernel
    module is imported, so it runs first in every subcommand."""
    import torch

    if not torch.cuda.is_available() and importlib.util.find_spec("triton") is not None:
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _backend_list(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip()]
    from neuro_emu.ops import BACKENDS

    unknown = [b for b in names if b not in BACKENDS]
    if unknown or len(names) < 2:
        raise argparse.ArgumentTypeError(
            f"give at least two of {','.join(BACKENDS)} separated by commas, got {text!r}"
        )
    return names


def cmd_conform(args: argparse.Namespace) -> int:
    import torch

    from neuro_emu.conformance import default_suite, run_suite
    from neuro_emu.ops import available_backends, backend_unavailable_reason

    backends = args.backends or available_backends("cpu")
    for backend in backends:
        reason = backend_unavailable_reason(backend, torch.device("cpu"))
        if reason:
            print(f"neuro-emu conform: backend {backend} is not available: {reason}",
                  file=sys.stderr)
            return 2
    if os.environ.get("TRITON_INTERPRET") == "1" and "triton" in backends:
        print("note: no GPU here, so Triton runs in its CPU interpreter (slow, same numerics)")
    cases = default_suite(steps=args.steps, size=args.size)
    reports = run_suite(cases, backends=backends, seed=args.seed, progress=not args.quiet)
    failed = [r for r in reports if not r.ok]
    for report in reports:
        if args.verbose or not report.ok:
            print(report.format())
    checks = sum(r.checks for r in reports)
    deviations = sum(d.mismatch.count for r in reports for d in r.deviations)
    print(
        f"conformance: {len(reports)} cases x {len(backends)} backends ({', '.join(backends)}), "
        f"T={args.steps}, N={args.size}: {checks} element checks, {deviations} deviations "
        f"beyond the contract, {len(failed)} failing cases"
    )
    if args.json:
        rows = [
            {"case": r.case, "backends": list(d.backends), "quantity": d.quantity,
             "mismatches": d.mismatch.count, "total": d.mismatch.total,
             "max_abs_diff": d.mismatch.max_abs_diff, "atol": d.atol, "ok": d.ok}
            for r in reports for d in r.deviations
        ]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {args.json}")
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from neuro_emu.benchmarks import run_suite

    return run_suite(args.suite, quick=args.quick, pytest_args=args.pytest_args)


def cmd_demo(args: argparse.Namespace) -> int:
    print("== neuro-emu demo ==\n")
    print("-- 1. Fused IF/LIF neurons: do the backends agree, spike for spike? --")
    statuses = [cmd_conform(
        argparse.Namespace(backends=None, steps=16, size=10_007, seed=0, verbose=False,
                           quiet=False, json=None)
    )]
    sections = [
        ("neurons", args.quick, "2. How fast is each neuron backend, against the peers?"),
        ("sparse_conv", True, "3. Spike-sparse convolution against dense (small shapes)"),
        ("loihi", True, "4. The Loihi emulator against Lava's own timings (smallest shape)"),
    ]
    for suite, quick, title in sections:
        print(f"\n-- {title} --")
        statuses.append(cmd_bench(argparse.Namespace(suite=suite, quick=quick, pytest_args=[])))
    statuses.append(_demo_train_and_convert())
    return max(statuses)


def _demo_train_and_convert() -> int:
    """Sections 5 to 7 of the demo: SNN vs ANN training, conversion, then the converted network
    on the Loihi emulator, on the shipped subset (3,000 training images: a smoke run of the
    workflows, not of their accuracy)."""
    import tempfile

    common = ["--width", "0.25", "--batch-size", "64", "--data", "subset"]
    with tempfile.TemporaryDirectory(prefix="neuro-emu-demo-") as out:
        print("\n-- 5. SNN-VGG vs ANN-VGG, 2 epochs each on the shipped CIFAR-10 subset --")
        status = main(["train", "--model", "snn-vgg", "ann-vgg", "--epochs", "2", *common,
                       "--out", f"{out}/vgg"])
        print("\n-- 6. A QCFS ANN (2 epochs on the subset) converted to IF neurons, T sweep --")
        status = max(status, main(["train", "--model", "ann-vgg", "--qcfs-levels", "4",
                                   "--epochs", "2", *common, "--out", f"{out}/qcfs"]))
        status = max(status, main(["convert", "--checkpoint", f"{out}/qcfs/best.pt",
                                   "--timesteps", "1", "2", "4", "8", "16", "32", "-q"]))
        print("\n-- 7. The converted network on the bit-accurate Loihi emulator (T = 16, 100 "
              "test images): what quantization and Loihi's reset to 0 cost, and its resources --")
        return max(status, main(["loihi", "--checkpoint", f"{out}/qcfs/best.pt", "-T", "16",
                                 "--max-images", "100", "-q"]))


def comparison_pair(models: Sequence[str]) -> tuple[str, str] | None:
    """The (SNN, ANN) that ``neuro-emu train`` compares among ``models``: the first SNN and the
    ANN of its architecture (snn-vgg: ann-vgg), else the first ANN; None without one of each."""
    from neuro_emu.models import MODELS

    spiking = [m for m in models if MODELS[m][1]]
    dense = [m for m in models if not MODELS[m][1]]
    if not (spiking and dense):
        return None
    same_arch = [m for m in dense if MODELS[m][0] == MODELS[spiking[0]][0]]
    return spiking[0], (same_arch or dense)[0]


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neuro_emu.data import DataError
    from neuro_emu.train import CheckpointError, TrainConfig, train
    from neuro_emu.train.report import compare_runs

    out = Path(args.out)
    histories = {}
    for model in args.model:
        run = out / model if len(args.model) > 1 else out
        try:
            config = TrainConfig(
                model=model, width=args.width, epochs=args.epochs, timesteps=args.timesteps,
                batch_size=args.batch_size, lr=args.lr, seed=args.seed, data=args.data,
                device=args.device, amp=args.amp, channels_last=args.channels_last,
                backend=args.backend, max_steps=args.max_steps, qcfs_levels=args.qcfs_levels,
                label_smoothing=args.label_smoothing,
            )
            histories[model] = train(config, run, resume=args.resume)
        except (FileExistsError, FileNotFoundError, ValueError, DataError,
                CheckpointError) as error:
            print(f"neuro-emu train: error: {error}", file=sys.stderr)
            return 2
        except FloatingPointError as error:  # diverged: the message says what to change
            print(f"neuro-emu train: error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"\nneuro-emu train: interrupted; the last finished epoch is in {run} "
                  "(--resume continues from it)", file=sys.stderr)
            return 130
        print(f"[{model}] best test accuracy {histories[model]['best_acc']:.4f} "
              f"(epoch {histories[model]['best_epoch']}); run in {run}")
    pair = comparison_pair(args.model)
    if pair is not None and int(os.environ.get("RANK", "0")) == 0:
        results = compare_runs(out / pair[0], out / pair[1], out)
        print((out / "results.md").read_text())
        print(f"results: {out / 'results.json'}, plots: {out}/*.png "
              f"(gap {results['gap_points']:.2f} points)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from neuro_emu.convert.sweep import format_sweep, timestep_sweep

    try:
        results = timestep_sweep(
            args.checkpoint, args.timesteps, model=args.model, data=args.data, device=args.device,
            target=args.target, batch_size=args.batch_size, max_images=args.max_images,
            out=args.out, sparse=args.sparse, progress=not args.quiet,
        )
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        print(f"neuro-emu convert: error: {error}", file=sys.stderr)
        return 2
    print(format_sweep(results))
    if args.out:
        print(f"results: {args.out}/sweep.json, plot: {args.out}/sweep.png")
    return 0


def cmd_loihi(args: argparse.Namespace) -> int:
    """Quantize a checkpoint's network onto the Loihi emulator and print what it cost."""
    import json as json_module
    from pathlib import Path

    from neuro_emu.convert import compile as compile_net
    from neuro_emu.convert import convert
    from neuro_emu.data import BatchLoader, DataError, evenly_spaced, load_cifar10
    from neuro_emu.loihi.network import evaluate_accuracy
    from neuro_emu.loihi.resources import resource_report
    from neuro_emu.train import CheckpointError
    from neuro_emu.train.checkpoint import load_checkpoint
    from neuro_emu.train.trainer import TrainConfig, load_trained

    def fail(message: object) -> int:
        print(f"neuro-emu loihi: error: {message}", file=sys.stderr)
        return 2

    if args.json:  # checked now: a path it cannot write would fail only after the whole run
        json_path = Path(args.json)
        if json_path.is_dir():
            return fail(f"--json {args.json} is a folder, not a file path")
        if not json_path.parent.is_dir():
            return fail(f"--json {args.json}: the folder {json_path.parent} does not exist")
        if not os.access(json_path if json_path.exists() else json_path.parent, os.W_OK):
            return fail(f"--json {args.json} is not writable")
    try:
        config = TrainConfig(**load_checkpoint(args.checkpoint)["config"])
        model = load_trained(args.checkpoint, "cpu")
    except (FileNotFoundError, TypeError, ValueError, CheckpointError) as error:
        return fail(error)
    except RuntimeError as error:  # load_state_dict: a header, then a line per mismatch
        lines = [line.strip() for line in str(error).splitlines()]
        more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
        return fail(f"{args.checkpoint}: {' '.join(lines[:2])}{more}")
    try:
        data = config.data if args.data is None else args.data
        images, labels = evenly_spaced(*load_cifar10("test", data, progress=not args.quiet),
                                       args.max_images)
        test = BatchLoader(images, labels, args.batch_size, train=False)
        if config.spiking:
            snn = model
            snn.timesteps = args.timesteps
        else:
            calibration = None
            if config.qcfs_levels is None:
                train_images, train_labels = load_cifar10("train", data, progress=not args.quiet)
                calibration = BatchLoader(train_images, train_labels, args.batch_size,
                                          train=False)
            snn = convert(model, calibration, timesteps=args.timesteps, device="cpu",
                          progress=not args.quiet)
        net = compile_net(snn, target="loihi2_sim")
        accuracy = evaluate_accuracy(net, test, progress=not args.quiet)
    except (FileNotFoundError, TypeError, ValueError, DataError) as error:
        return fail(error)
    resources = resource_report(net)
    print(net.report.format())
    print(f"\naccuracy on {accuracy['samples']} test images (T={args.timesteps}): float "
          f"{100 * accuracy['float']:.2f}%, float with Loihi's hard reset "
          f"{100 * accuracy['float_hard_reset']:.2f}%, Loihi integer "
          f"{100 * accuracy['loihi']:.2f}%; input values clipped: {net.stats.input_clipped}")
    print(f"{'layer':<28}{'u wraps':>9}{'v sat':>9}{'a_in ovf':>9}{'early':>8}{'readout spk':>12}")
    for name, counts in net.stats.layers.items():
        print(f"{name[:27]:<28}{counts.u_wraps:>9}{counts.v_saturations:>9}"
              f"{counts.a_in_overflows:>9}{counts.early_spikes:>8}{counts.readout_spikes:>12}")
    print()
    print(resources.format())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json_module.dump({"accuracy": accuracy, "resources": resources.as_dict(),
                              "stats": {k: vars(v) for k, v in net.stats.layers.items()}},
                             f, indent=1, default=float)
        print(f"wrote {args.json}")
    return 0


def _on_off(text: str) -> bool:
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuro-emu", description="Spiking-neural-network hardware emulation on CPUs and GPUs."
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__import__('neuro_emu').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conform = sub.add_parser(
        "conform", help="run every backend on the same inputs and count deviations",
        description="Runs IF/LIF neurons (every reset mode and surrogate) forward and backward on "
        "each backend and compares them pairwise. Exits 1 on any deviation the numerics contract "
        "forbids. Without a GPU, Triton runs in its CPU interpreter.",
    )
    conform.add_argument("--backends", type=_backend_list, default=None,
                         help="comma-separated, e.g. torch,numba (default: all available)")
    conform.add_argument("--steps", type=int, default=16, help="time steps T (default 16)")
    conform.add_argument("--size", type=int, default=10_007, help="neurons N (default 10007)")
    conform.add_argument("--seed", type=int, default=0)
    conform.add_argument("-v", "--verbose", action="store_true",
                         help="print every case's table, not only failing ones")
    conform.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    conform.add_argument("--json", metavar="PATH", help="also write the deviations as JSON")
    conform.set_defaults(func=cmd_conform)

    bench = sub.add_parser(
        "bench", help="run a benchmark suite (pytest-benchmark) and write bench/results/",
        description="Runs bench/test_<suite>.py from a source checkout; extra arguments after "
        "'--' go to pytest.",
    )
    bench.add_argument("--suite", required=True, choices=SUITES)
    bench.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    bench.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    bench.set_defaults(func=cmd_bench)

    train = sub.add_parser(
        "train", help="train SNN-VGG / ANN-VGG on CIFAR-10 (one run per --model)",
        description="Trains each --model with SGD and a cosine schedule (the reference recipe by "
        "default), writing last.pt, best.pt and history.json per model; with an SNN and an ANN, "
        "also results.md/json and plots comparing them. Under torchrun, one process per device "
        "(DDP).",
    )
    train.add_argument("--model", nargs="+", default=["snn-vgg", "ann-vgg"],
                       choices=["snn-vgg", "ann-vgg", "vgg16", "resnet18"],
                       help="one or more models (default: snn-vgg ann-vgg)")
    train.add_argument("--width", type=float, default=1.0, help="channel multiplier (default 1)")
    train.add_argument("--epochs", type=int, default=100, help="epochs, also the cosine length")
    train.add_argument("--timesteps", "-T", type=int, default=4, help="SNN time steps (default 4)")
    train.add_argument("--batch-size", type=int, default=128, help="per process (default 128)")
    train.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--data", default=None,
                       help="CIFAR-10 folder (zips or python batches) or 'subset'; default "
                       "$NEURO_EMU_CIFAR10, then ../shared/data/cifar10-jpeg")
    train.add_argument("--out", required=True, help="output folder (one subfolder per model)")
    train.add_argument("--resume", action="store_true", help="continue the runs in --out")
    train.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:N")
    train.add_argument("--amp", type=_on_off, default=None, metavar="on|off",
                       help="bfloat16 autocast (default: on with a GPU)")
    train.add_argument("--channels-last", type=_on_off, default=None, metavar="on|off",
                       help="channels-last memory format (default: on with a GPU)")
    train.add_argument("--backend", default="auto", choices=["auto", "torch", "numba", "triton"],
                       help="LIF backend (default auto: Triton on CUDA, Numba on CPU)")
    train.add_argument("--qcfs-levels", type=int, default=None, metavar="L",
                       help="ANN with L-level QCFS activations instead of ReLU (for conversion)")
    train.add_argument("--label-smoothing", type=float, default=0.0)
    train.add_argument("--max-steps", type=int, default=None,
                       help="cap on training batches per epoch (smoke runs)")
    train.set_defaults(func=cmd_train)

    conv = sub.add_parser(
        "convert", help="convert a trained ANN checkpoint to an SNN and sweep T",
        description="Converts the ANN of a `neuro-emu train` checkpoint (QCFS-trained: its own "
        "thresholds; ReLU: thresholds calibrated on training batches) to IF neurons and prints "
        "accuracy, gap and spike sparsity at each T, from one run of the largest T.",
    )
    conv.add_argument("--checkpoint", required=True, help="best.pt or last.pt of neuro-emu train")
    conv.add_argument("--model", default=None,
                      help="the architecture expected (default: the checkpoint's); another is "
                      "an error")
    conv.add_argument("--timesteps", "-T", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    conv.add_argument("--data", default=None, help="CIFAR-10 folder or 'subset' (default: the "
                      "checkpoint's)")
    conv.add_argument("--device", default="auto")
    conv.add_argument("--target", default=None, choices=["gpu", "cpu", "torch"],
                      help="backend of the IF neurons (default: gpu with CUDA, else cpu)")
    conv.add_argument("--batch-size", type=int, default=200)
    conv.add_argument("--max-images", type=int, default=None,
                      help="this many test images, evenly spaced over the split")
    conv.add_argument("--out", default=None, help="folder for sweep.json and sweep.png")
    conv.add_argument("--sparse", action="store_true",
                      help="also time the largest T with spike-sparse convolutions")
    conv.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    conv.set_defaults(func=cmd_convert)

    loihi = sub.add_parser(
        "loihi", help="quantize a trained network onto the Loihi 2 emulator and report",
        description="Converts an ANN checkpoint (or takes an SNN one), quantizes it for the "
        "bit-accurate Loihi emulator (compile target loihi2_sim) and prints the quantization "
        "report, accuracy float vs integer, saturation counts and the resource estimate.",
    )
    loihi.add_argument("--checkpoint", required=True, help="best.pt or last.pt of neuro-emu train")
    loihi.add_argument("--timesteps", "-T", type=int, default=32)
    loihi.add_argument("--data", default=None, help="CIFAR-10 folder or 'subset' (default: the "
                       "checkpoint's)")
    loihi.add_argument("--batch-size", type=int, default=50)
    loihi.add_argument("--max-images", type=int, default=None,
                       help="this many test images, evenly spaced over the split")
    loihi.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    loihi.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    loihi.set_defaults(func=cmd_loihi)

    demo = sub.add_parser(
        "demo", help="neuron conformance and throughput, quick sparse-conv and Loihi runs, then "
        "training and conversion smoke runs on the shipped CIFAR-10 subset"
    )
    demo.add_argument("--quick", action="store_true", help="small neuron benchmark shapes too")
    demo.set_defaults(func=cmd_demo)
    add_nir_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("steps", "size", "epochs", "timesteps", "batch_size", "max_images",
                 "max_steps"):
        value = getattr(args, name, 1)
        values = value if isinstance(value, list) else [value]
        if any(v is not None and v < 1 for v in values):
            flag = "--" + name.replace("_", "-")
            print(f"neuro-emu: error: {flag} must be >= 1, got {value}", file=sys.stderr)
            return 2
    _use_triton_interpreter_without_gpu()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
