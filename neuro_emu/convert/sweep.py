"""``neuro-emu convert``: a trained checkpoint converted, then its accuracy and sparsity per T."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from neuro_emu.convert.api import compile, evaluate, evaluate_timesteps
from neuro_emu.convert.convert import convert
from neuro_emu.convert.sparse import sparsify
from neuro_emu.data import BatchLoader, evenly_spaced, load_cifar10
from neuro_emu.train.checkpoint import load_checkpoint, save_json
from neuro_emu.train.report import finish_plot
from neuro_emu.train.trainer import TrainConfig, load_trained


def timestep_sweep(
    checkpoint: str | Path,
    timesteps: Sequence[int],
    *,
    model: str | None = None,
    data: str | None = None,
    device: str = "auto",
    target: str | None = None,
    batch_size: int = 200,
    max_images: int | None = None,
    calibration_batches: int = 10,
    out: str | Path | None = None,
    sparse: bool = False,
    progress: bool = True,
) -> dict:
    """Convert the model of a training checkpoint and measure it at every T of ``timesteps``.

    A QCFS-trained model converts with its own thresholds; a plain ReLU model is calibrated on
    ``calibration_batches`` training batches first. One run of ``max(timesteps)`` steps gives the
    whole sweep (:func:`neuro_emu.convert.evaluate_timesteps`).

    Args:
        checkpoint: ``best.pt`` / ``last.pt`` of ``neuro-emu train`` (an ANN).
        timesteps: the T values to report.
        model: the architecture the caller expects (``resnet18``, ...); a checkpoint of another
            is refused. None: whatever the checkpoint holds.
        data: the CIFAR-10 folder (see :func:`neuro_emu.data.load_cifar10`); "subset" works too.
        device: "auto" (CUDA if present), "cpu" or "cuda[:N]".
        target: the SNN's compile target ("gpu", "cpu", "torch"); default by device.
        batch_size: test batch size.
        max_images: evaluate on this many test images only, evenly spaced over the split (it
            is stored sorted by class).
        calibration_batches: training batches for a ReLU model's thresholds.
        out: folder for ``sweep.json`` and ``sweep.png`` (none when None).
        sparse: also run the largest T with spike-sparse convolutions
            (:func:`neuro_emu.convert.sparsify`) and report its accuracy and wall time beside the
            dense run's.

    Returns:
        ``{"ann_acc", "rows": [{"T", "acc", "gap_points", "sparsity"}], "convert_s", "eval_s",
        ...}``.

    Raises:
        ValueError: ``checkpoint`` holds an SNN or not ``model``, or ``out`` cannot be made a
            folder (checked before any conversion).
    """
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)
    target = target or ("gpu" if device.type == "cuda" else "cpu")
    config = TrainConfig(**load_checkpoint(checkpoint)["config"])
    if config.spiking:
        raise ValueError(f"{checkpoint} holds an SNN ({config.model}); convert takes an ANN")
    if model is not None and model != config.model:
        raise ValueError(f"{checkpoint} holds the model {config.model!r}, not {model!r} as asked")
    if out is not None:
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file in the way, no permission, ...
            raise ValueError(f"cannot make the out folder {str(out)!r}: "
                             f"{error.strerror or error}") from error
    ann = load_trained(checkpoint, device)
    images, labels = load_cifar10("test", config.data if data is None else data,
                                  progress=progress)
    images, labels = evenly_spaced(images, labels, max_images)
    test = BatchLoader(images, labels, batch_size, train=False, device=device)
    started = time.perf_counter()
    ann_acc = evaluate(ann, test, progress=progress)
    ann_s = time.perf_counter() - started

    calibration = None
    if config.qcfs_levels is None:
        train_images, train_labels = load_cifar10(
            "train", config.data if data is None else data, progress=progress)
        calibration = BatchLoader(train_images, train_labels, batch_size, train=False,
                                  device=device)
    started = time.perf_counter()
    snn = convert(ann, calibration, timesteps=max(timesteps), device=device, progress=progress)
    compile(snn, target)
    convert_s = time.perf_counter() - started
    started = time.perf_counter()
    sweep = evaluate_timesteps(snn, test, timesteps, progress=progress)
    eval_s = time.perf_counter() - started
    sparse_run = None
    if sparse:
        sparse_snn = sparsify(snn)
        started = time.perf_counter()
        (row,) = evaluate_timesteps(sparse_snn, test, [max(timesteps)], progress=progress).values()
        sparse_run = {"T": max(timesteps), "acc": row["acc"],
                      "eval_s": time.perf_counter() - started}
    results = {
        "checkpoint": str(checkpoint),
        "model": config.model,
        "width": config.width,
        "qcfs_levels": config.qcfs_levels,
        "images": len(labels),
        "device": str(device),
        "target": target,
        "ann_acc": ann_acc,
        "ann_eval_s": ann_s,
        "convert_s": convert_s,
        "eval_s": eval_s,
        "sparse": sparse_run,
        "rows": [
            {"T": t, "acc": row["acc"], "gap_points": 100 * (ann_acc - row["acc"]),
             "sparsity": row["sparsity"]}
            for t, row in sorted(sweep.items())
        ],
    }
    if out is not None:
        save_json(results, out / "sweep.json")
        _plot(results, out / "sweep.png")
    return results


def format_sweep(results: dict) -> str:
    """The sweep as a markdown table."""
    lines = [
        f"{results['model']} (width {results['width']}, QCFS L = {results['qcfs_levels']}), "
        f"{results['images']} test images, ANN accuracy {100 * results['ann_acc']:.2f}%; "
        f"conversion {results['convert_s']:.1f} s, T sweep {results['eval_s']:.1f} s "
        f"({results['target']})",
        "",
        "| T | SNN accuracy | gap (points) | sparsity |",
        "|--:|--:|--:|--:|",
    ]
    for row in results["rows"]:
        lines.append(f"| {row['T']} | {100 * row['acc']:.2f}% | {row['gap_points']:.2f} | "
                     f"{100 * row['sparsity']:.2f}% |")
    sparse = results.get("sparse")
    if sparse:
        lines += ["", f"Spike-sparse convolutions at T = {sparse['T']}: accuracy "
                      f"{100 * sparse['acc']:.2f}%, {sparse['eval_s']:.1f} s (dense convolutions, "
                      f"the whole sweep: {results['eval_s']:.1f} s)"]
    return "\n".join(lines) + "\n"


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["T"] for row in results["rows"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [100 * row["acc"] for row in results["rows"]], "o-", label="SNN")
    ax.axhline(100 * results["ann_acc"], color="gray", linestyle="--", label="ANN")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="time steps T", ylabel="test accuracy (%)",
           title=f"{results['model']} converted: accuracy vs T")
    finish_plot(fig, ax, path)
