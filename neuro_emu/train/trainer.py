"""Direct training on CIFAR-10: SGD with a cosine schedule, surrogate-gradient BPTT for SNNs.

One function, :func:`train`, serves the CLI (``neuro-emu train``), Python users and ``torchrun``
(DDP: one process per device, each on its share of every epoch; rank 0 evaluates and writes).
Every epoch writes ``best.pt`` when the test accuracy improves, ``history.json``, then ``last.pt``
(model, optimiser, scheduler, best-so-far, history: all a resumed run needs, since the data order
and augmentation are a pure function of (seed, epoch)), each atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from neuro_emu.data import BatchLoader, load_cifar10
from neuro_emu.layers import SpikingNetwork
from neuro_emu.models import MODELS, build_model
from neuro_emu.train.checkpoint import load_checkpoint, save_checkpoint, save_json

CHECKPOINT = "last.pt"
BEST = "best.pt"
HISTORY = "history.json"


@dataclass
class TrainConfig:
    """The reference recipe's defaults (SNN-VGG vs ANN-VGG on CIFAR-10); every field a CLI flag.

    ``grad_clip=None`` means the recipe's choice: 1.0 for an SNN, none for an ANN. ``amp`` and
    ``channels_last`` default (None) to on with a GPU, off on the CPU. ``max_steps`` caps the
    training batches of every epoch (smoke tests); ``data`` is a folder, "subset" for the shipped
    subset, or None for the default places (see :func:`neuro_emu.data.load_cifar10`).
    ``qcfs_levels``: train an ANN with QCFS activations of that many levels instead of ReLU (the
    recommended route to conversion, :mod:`neuro_emu.convert`).
    """

    model: str = "snn-vgg"
    width: float = 1.0
    epochs: int = 100
    timesteps: int = 4
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float | None = None
    seed: int = 42
    data: str | None = None
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    backend: str = "auto"
    tau: float = 2.0
    max_steps: int | None = None
    qcfs_levels: int | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        for name in ("epochs", "timesteps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            raise ValueError(f"max_steps must be None or an int >= 1, got {self.max_steps!r}")
        positive = ("width", "lr", "tau")
        for name in (*positive, "momentum", "weight_decay", "label_smoothing"):
            value = getattr(self, name)
            high = 1.0 if name == "label_smoothing" else math.inf
            if not (isinstance(value, (int, float)) and math.isfinite(value)
                    and (0 < value if name in positive else 0 <= value <= high)):
                bound = "> 0" if name in positive else f"in [0, {high}]"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        if self.qcfs_levels is not None and self.spiking:
            raise ValueError(f"qcfs_levels applies to ANNs, and {self.model} is an SNN")

    @property
    def spiking(self) -> bool:
        return MODELS[self.model][1]

    @property
    def clip(self) -> float | None:
        return (1.0 if self.spiking else None) if self.grad_clip is None else self.grad_clip or None


@dataclass
class _Dist:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(config: TrainConfig, ranks: _Dist) -> torch.device:
    """The config's device; "auto" and a bare "cuda" take this process's GPU (its local rank)."""
    if config.device == "auto":
        return torch.device("cuda", ranks.local_rank) if torch.cuda.is_available() else \
            torch.device("cpu")
    try:
        device = torch.device(config.device)
    except RuntimeError as error:
        raise ValueError(f"device {config.device!r}: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r}: no CUDA GPU is available here "
                             "(use --device cpu or auto)")
        if device.index is None:
            device = torch.device("cuda", ranks.local_rank)
    return device


def _run_folder(out: Path) -> Path:
    """``out``, created if need be, checked before any training: a path that cannot hold the
    run's files is an error now, not after the first epoch."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise ValueError(f"out: {out} cannot be a run folder: {error.filename} exists and is not "
                         "a folder") from None
    except PermissionError as error:
        raise ValueError(f"out: cannot create {out} ({error.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"out: {out} is not writable")
    return out


def _spike_context(model: nn.Module):
    """Count spikes per layer for an SNN; for an ANN a context that yields None."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if isinstance(inner, SpikingNetwork):
        return inner.record_spikes()
    return contextlib.nullcontext()


def _rates(counts) -> tuple[float | None, dict[str, float]]:
    if counts is None:
        return None, {}
    return counts.overall(), counts.rates()


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader, amp: bool) -> dict:
    """Accuracy, mean loss and spike rates of ``model`` over ``loader``."""
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    with _spike_context(model) as counts:
        for images, labels in loader:
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                logits = model(images)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.numel()
    rate, layers = _rates(counts)
    return {"acc": int(correct) / seen, "loss": float(loss_sum) / seen, "spike_rate": rate,
            "layer_rates": layers}


def _train_epoch(model, loader, optimizer, config: TrainConfig, amp: bool, ranks: _Dist,
                 epoch: int) -> dict:
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    steps = len(loader) if config.max_steps is None else min(len(loader), config.max_steps)
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not ranks.main, unit="batch")
    with _spike_context(model) as counts:
        for step, (images, labels) in enumerate(loader):
            if step == steps:
                break
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                logits = model(images)
                loss = F.cross_entropy(logits.float(), labels,
                                       label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: lower --lr or "
                    "keep gradient clipping on"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            loss_sum += loss.detach() * labels.numel()
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.numel()
            bar.update()
    bar.close()
    rate, layers = _rates(counts)
    return {"acc": int(correct) / seen, "loss": float(loss_sum) / seen, "spike_rate": rate,
            "layer_rates": layers}


def model_from_config(config: TrainConfig) -> nn.Module:
    """The untrained model a config describes (the architecture a checkpoint's weights fit)."""
    model = build_model(config.model, width=config.width, timesteps=config.timesteps,
                        backend=config.backend, tau=config.tau)
    if config.qcfs_levels is not None:
        from neuro_emu.convert import qcfs_model

        model = qcfs_model(model, levels=config.qcfs_levels)
    return model


def _build(config: TrainConfig, device: torch.device, channels_last: bool):
    torch.manual_seed(config.seed)
    model = model_from_config(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # The recipe decays every parameter, BatchNorm's included, as the reference does.
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return model, optimizer, scheduler


def train(config: TrainConfig, out: str | Path, *, resume: bool = False,
          progress: bool = True) -> dict:
    """Train ``config.model`` on CIFAR-10 and return the history (also in ``out/history.json``).

    Args:
        config: the recipe (see :class:`TrainConfig`).
        out: the run's folder: ``last.pt``, ``best.pt``, ``history.json``.
        resume: continue from ``out/last.pt`` exactly where it stopped (same config required;
            a finished run returns its history). Without it, an existing ``last.pt`` is an error
            rather than silently overwritten.
        progress: print a line per epoch (tqdm bars show within an epoch either way on a TTY).

    Returns:
        ``{"config": ..., "epochs": [per-epoch dicts], "best_acc", "best_epoch", "params"}``.

    Raises:
        FileExistsError: ``out/last.pt`` exists and ``resume`` is False.
        ValueError: resuming with a different config; an ``out`` that cannot be a folder or a
            device that is not there; a batch size larger than the training split.
        CheckpointError: ``out/last.pt`` is not a readable checkpoint.
        DataError: the data is missing or corrupt (see :func:`neuro_emu.data.load_cifar10`).
        FloatingPointError: the loss became NaN or infinite.
    """
    ranks = _init_distributed()
    device = _device(config, ranks)
    out = _run_folder(Path(out))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    on_gpu = device.type == "cuda"
    amp = on_gpu if config.amp is None else config.amp
    channels_last = on_gpu if config.channels_last is None else config.channels_last

    model, optimizer, scheduler = _build(config, device, channels_last)
    history = {"config": dataclasses.asdict(config), "epochs": [], "best_acc": 0.0,
               "best_epoch": None, "params": sum(p.numel() for p in model.parameters()),
               "device": str(device), "world_size": ranks.world, "amp": amp,
               "channels_last": channels_last}
    last = out / CHECKPOINT
    if last.exists() and not resume:
        raise FileExistsError(f"{last} exists: pass resume=True (--resume) or use another --out")
    if resume and last.exists():
        state = load_checkpoint(last, map_location=device)
        if state["config"] != dataclasses.asdict(config):
            changed = {k: (state["config"].get(k), v) for k, v in dataclasses.asdict(config).items()
                       if state["config"].get(k) != v}
            raise ValueError(f"cannot resume {last} with a different config: {changed}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        if ranks.main:  # last.pt is written last: history.json may lag it, or be cut short
            save_json(history, out / HISTORY)
    elif resume and ranks.main:
        print(f"no {CHECKPOINT} in {out}: starting a new run", file=sys.stderr)
    start_epoch = len(history["epochs"])

    train_images, train_labels = load_cifar10("train", config.data, progress=ranks.main)
    test_images, test_labels = load_cifar10("test", config.data, progress=ranks.main)
    train_loader = BatchLoader(train_images, train_labels, config.batch_size, train=True,
                               device=device, seed=config.seed, rank=ranks.rank,
                               world_size=ranks.world, channels_last=channels_last)
    test_loader = BatchLoader(test_images, test_labels, 500, train=False, device=device,
                              channels_last=channels_last)
    if len(train_loader) == 0:
        raise ValueError(
            f"batch_size {config.batch_size} x {ranks.world} process(es) is more than the "
            f"{len(train_labels)} training images: no full batch (a partial one is dropped)"
        )
    net = model
    if ranks.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if on_gpu else None)

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        train_loader.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        fit = _train_epoch(net, train_loader, optimizer, config, amp, ranks, epoch)
        scheduler.step()
        if on_gpu:
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - started
        if ranks.main:
            test = evaluate_loader(model, test_loader, amp)
            record = {"epoch": epoch + 1, "lr": lr, "train_s": train_s,
                      "epoch_s": time.perf_counter() - started,
                      **{f"train_{k}": v for k, v in fit.items()},
                      **{f"test_{k}": v for k, v in test.items()}}
            history["epochs"].append(record)
            improved = test["acc"] > history["best_acc"]
            if improved:
                history["best_acc"], history["best_epoch"] = test["acc"], epoch + 1
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "config": dataclasses.asdict(config),
                     "history": history}
            # last.pt last: a run killed in between redoes this epoch from the previous one,
            # and best.pt and history.json are never behind the last.pt a resume starts from.
            if improved:
                save_checkpoint(state, out / BEST)
            save_json(history, out / HISTORY)
            save_checkpoint(state, last)
            if progress:
                print(_log_line(config, record, history), flush=True)
        if ranks.world > 1:
            dist.barrier()
    return history


def _log_line(config: TrainConfig, record: dict, history: dict) -> str:
    rate = record["test_spike_rate"]
    spikes = "" if rate is None else f" | spike rate {rate:.4f}"
    return (f"[{config.model}] epoch {record['epoch']:>3}/{config.epochs} | "
            f"lr {record['lr']:.4f} | train loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:.4f} | test acc "
            f"{record['test_acc']:.4f} (best {history['best_acc']:.4f}){spikes} | "
            f"{record['epoch_s']:.1f} s")


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a training checkpoint (``last.pt`` or ``best.pt``) with its weights."""
    state = load_checkpoint(path, map_location=device)
    config = TrainConfig(**state["config"])
    model = model_from_config(config)
    model.load_state_dict(state["model"])
    return model.to(device).eval()

