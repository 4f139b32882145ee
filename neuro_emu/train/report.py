"""The SNN-vs-ANN results table, energy estimates and plots of finished training runs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from neuro_emu.data import BatchLoader, evenly_spaced, load_cifar10
from neuro_emu.train.checkpoint import save_json
from neuro_emu.train.energy import AC_PJ, MAC_PJ, count_synaptic_ops
from neuro_emu.train.trainer import BEST, HISTORY, load_trained

ENERGY_IMAGES = 500  # test images (evenly spaced) the operation counts are averaged over


def _history(run: Path) -> dict:
    path = run / HISTORY
    if not path.is_file():
        raise FileNotFoundError(f"no {HISTORY} in {run}: is it a `neuro-emu train` output folder?")
    return json.loads(path.read_text())


def _energy(run: Path, history: dict, device: torch.device) -> dict:
    """Per-layer synaptic operations of the best checkpoint on test images of every class."""
    model = load_trained(run / BEST, device)
    config = history["config"]
    images, labels = evenly_spaced(*load_cifar10("test", config["data"], progress=False),
                                   ENERGY_IMAGES)
    loader = BatchLoader(images, labels, len(labels), train=False, device=device)
    batch, _ = next(iter(loader))
    spiking = history["epochs"][0]["test_spike_rate"] is not None
    steps = config["timesteps"] if spiking else 1
    report = count_synaptic_ops(model, batch, timesteps=steps, skip_zeros=spiking)
    return report.as_dict() | {"timesteps": steps}


def compare_runs(snn_run: str | Path, ann_run: str | Path, out: str | Path,
                 device: str | torch.device = "cpu") -> dict:
    """Write ``results.json``, ``results.md`` and three PNG plots comparing two finished runs.

    Returns the results dict: per model its best accuracy, spike rate (test, at the best epoch),
    parameters and energy per image; the accuracy gap; the rough energy ratio of the reference
    (``spike_rate * 0.9 / (0.5 * 4.6)``) and the ratio from per-layer operation counts.
    """
    snn_run, ann_run, out = Path(snn_run), Path(ann_run), Path(out)
    device = torch.device(device)
    rows = {}
    histories = [_history(snn_run), _history(ann_run)]
    for run, history in zip((snn_run, ann_run), histories, strict=True):
        best = history["epochs"][history["best_epoch"] - 1]
        energy = _energy(run, history, device)
        rows[history["config"]["model"]] = {
            "run": str(run),
            "best_acc": history["best_acc"],
            "best_epoch": history["best_epoch"],
            "epochs": len(history["epochs"]),
            "spike_rate": best["test_spike_rate"],
            "layer_rates": best["test_layer_rates"],
            "params": history["params"],
            "epoch_s": sum(e["epoch_s"] for e in history["epochs"]) / len(history["epochs"]),
            "energy": energy,
            "config": history["config"],
            "device": history["device"],
        }
    snn, ann = (rows[history["config"]["model"]] for history in histories)
    if snn["spike_rate"] is None or ann["spike_rate"] is not None:
        raise ValueError(f"expected an SNN run then an ANN run, got {snn_run} and {ann_run}")
    results = {
        "models": rows,
        "gap_points": 100 * (ann["best_acc"] - snn["best_acc"]),
        "rough_energy_ratio": snn["spike_rate"] * AC_PJ / (0.5 * MAC_PJ),
        "layer_energy_ratio": snn["energy"]["energy_per_image_uj"]
        / ann["energy"]["energy_per_image_uj"],
    }
    save_json(results, out / "results.json")
    (out / "results.md").write_text(_markdown(results))
    _plots(histories, snn, out)
    return results


def _markdown(results: dict) -> str:
    lines = [
        "| model | best test acc | epochs | spike rate (test) | parameters | s / epoch | "
        "energy / image (µJ) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, row in results["models"].items():
        rate = "-" if row["spike_rate"] is None else f"{row['spike_rate']:.4f}"
        lines.append(
            f"| {name} | {100 * row['best_acc']:.2f}% | {row['epochs']} | {rate} | "
            f"{row['params']:,} | {row['epoch_s']:.1f} | "
            f"{row['energy']['energy_per_image_uj']:.2f} |"
        )
    lines += [
        "",
        f"Accuracy gap (ANN - SNN): {results['gap_points']:.2f} points.",
        "",
        f"Energy, SNN / ANN: {results['layer_energy_ratio']:.3f} from per-layer synaptic "
        f"operation counts: the SNN event-driven (work only for nonzero inputs: accumulates at "
        f"{AC_PJ} pJ where a layer's input is binary spikes, multiply-accumulates at {MAC_PJ} pJ "
        "where it is not: the first, analog-input convolution at every time step and the layers "
        f"after average pooling), the ANN dense (every synapse a {MAC_PJ} pJ MAC); and "
        f"{results['rough_energy_ratio']:.3f} by the reference's rough formula spike_rate * "
        f"{AC_PJ} / (0.5 * {MAC_PJ}), a rough estimate only. Per-operation energies: 45 nm "
        "figures of M. Horowitz, ISSCC 2014 (arithmetic only, no memory access).",
        "",
    ]
    return "\n".join(lines)


def _plots(histories: list[dict], snn: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for history in histories:
        epochs = [e["epoch"] for e in history["epochs"]]
        ax.plot(epochs, [100 * e["test_acc"] for e in history["epochs"]],
                label=history["config"]["model"])
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="CIFAR-10 test accuracy")
    finish_plot(fig, ax, out / "accuracy.png")

    spiking = next(h for h in histories if h["epochs"][0]["test_spike_rate"] is not None)
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [e["epoch"] for e in spiking["epochs"]]
    for split in ("train", "test"):
        ax.plot(epochs, [e[f"{split}_spike_rate"] for e in spiking["epochs"]], label=split)
    ax.set(xlabel="epoch", ylabel="spike rate", title="SNN spike rate per epoch")
    finish_plot(fig, ax, out / "spike_rate.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(snn["layer_rates"])
    ax.bar(range(len(names)), [snn["layer_rates"][n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel="spike rate (test)",
           title=f"SNN spike rate per layer (epoch {snn['best_epoch']})")
    finish_plot(fig, ax, out / "layer_rates.png", legend=False)


def finish_plot(fig, ax, path: Path, legend: bool = True) -> None:
    """Grid, legend, tight layout, save as PNG at ``path`` and close: every report plot's end."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    if legend:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
