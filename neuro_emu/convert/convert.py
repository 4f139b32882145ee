"""ANN-to-SNN conversion: BatchNorm folding, QCFS thresholds, IF neurons in a torch.fx graph.

``convert`` turns a trained ANN into a :class:`~neuro_emu.layers.SpikingNetwork` whose body is the
ANN's own fx graph with every ReLU / QCFS call site replaced by an IF neuron (threshold lambda,
initial membrane lambda / 2, soft reset) followed by a ``Scale(lambda)``, so that a spike carries
the value the activation would have had. Convolutions, pooling, residual additions, flatten and the
classifier stay as they are and run on all T steps at once (time folded into the batch); spikes
from two branches sum at an addition as the activations did.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from neuro_emu.convert.batchnorm import fold_graph
from neuro_emu.convert.qcfs import (
    ACTIVATION_FUNCTIONS,
    ACTIVATIONS,
    QCFS,
    is_activation,
    replace_activations,
    trace,
)
from neuro_emu.layers import IF, Scale, SpikingNetwork
from neuro_emu.ops import BACKENDS

# Modules that pass rates through unchanged in meaning: linear maps, pooling by averaging, shape.
_LINEAR_MODULES = (
    nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.Flatten, nn.Identity, nn.Dropout, Scale,
)
_LINEAR_FUNCTIONS = (
    operator.add, torch.add, operator.iadd, torch.flatten, operator.getitem, getattr,
    F.avg_pool2d, F.adaptive_avg_pool2d, torch.cat, F.dropout,
)
_LINEAR_METHODS = ("view", "reshape", "flatten", "size", "add", "add_", "contiguous", "squeeze",
                   "unsqueeze", "mean")


def _check_convertible(gm: fx.GraphModule) -> None:
    """Raise naming the first layer that has no IF/linear counterpart (max-pooling, other
    non-linearities, a BatchNorm without running statistics)."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
                raise TypeError(
                    f"cannot convert layer {node.target!r}: a BatchNorm without running "
                    "statistics (track_running_stats=False) normalises every batch by its own, "
                    "not by a fixed affine map an SNN can carry (retrain with running statistics)"
                )
            if not isinstance(module, (*_LINEAR_MODULES, *ACTIVATIONS, QCFS, IF)):
                raise TypeError(
                    f"cannot convert layer {node.target!r} of type {type(module).__name__}: an "
                    "SNN of IF neurons carries rates through linear layers, average pooling and "
                    "ReLU/QCFS only (replace max-pooling by average pooling, other activations "
                    "by ReLU, and retrain)"
                )
        elif node.op == "call_function" and node.target not in (
            *_LINEAR_FUNCTIONS, *ACTIVATION_FUNCTIONS
        ):
            raise TypeError(f"cannot convert the call {node.name!r} to "
                            f"{getattr(node.target, '__name__', node.target)}")
        elif node.op == "call_method" and node.target not in _LINEAR_METHODS:
            raise TypeError(f"cannot convert the method call {node.name!r} (.{node.target})")


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` with every BatchNorm that directly follows a Conv2d or Linear
    (and is that layer's only user) folded into it, with its running statistics (eval mode; see
    :func:`neuro_emu.convert.batchnorm.fold_into`). Other BatchNorms stay, as the per-channel
    affine maps they are in eval mode."""
    return fold_graph(copy.deepcopy(trace(model)), lambda node, reason: None)


@torch.no_grad()
def calibrate_thresholds(model: nn.Module, loader: Iterable, device: torch.device,
                         percentile: float = 99.9, per_channel: bool = False,
                         max_batches: int = 10) -> fx.GraphModule:
    """A traced copy of a plain-ReLU ``model`` with each ReLU call site replaced by a QCFS whose
    lambda is the ``percentile`` of that site's positive activations on ``loader`` (per channel
    with ``per_channel``), the post-hoc calibration route of :func:`convert`."""
    gm = copy.deepcopy(trace(model)).to(device).eval()
    samples: dict[str, list[torch.Tensor]] = {}

    modules = dict(gm.named_modules())

    class _Probe(fx.Interpreter):
        def run_node(self, node):
            out = super().run_node(node)
            if is_activation(node, modules):
                flat = out.detach().float().transpose(0, 1).reshape(out.shape[1], -1)
                if not per_channel:
                    flat = flat.reshape(1, -1)
                # a random subsample keeps the quantile's memory bounded on big batches
                keep = torch.randperm(flat.shape[1], device=flat.device)[:20000]
                samples.setdefault(node.name, []).append(flat[:, keep])
            return out

    probe = _Probe(gm)
    for index, (images, _labels) in enumerate(loader):
        if index == max_batches:
            break
        probe.run(images.to(device))
    if not samples:
        raise ValueError("the calibration loader yielded no batches")

    def make(name: str, node: fx.Node) -> nn.Module:
        values = torch.cat(samples[node.name], dim=1)
        lam = torch.quantile(values.clamp(min=0), percentile / 100, dim=1).clamp(min=1e-3)
        qcfs = QCFS(levels=8, threshold=1.0, channels=lam.numel() if per_channel else None)
        qcfs.threshold.data = (lam if per_channel else lam[0]).to(qcfs.threshold)
        return qcfs

    return replace_activations(gm, make)


def _to_if(gm: fx.GraphModule, backend: str) -> fx.GraphModule:
    """Replace every QCFS call site by IF(v_th = lambda, v_init = lambda / 2) and Scale(lambda)
    (per-channel lambda: Scale(1 / lambda), IF(1, 1/2), Scale(lambda))."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], QCFS):
            continue
        lam = modules[node.target].threshold.detach().float()
        base = node.target.replace(".", "_")
        chain: list[tuple[str, nn.Module]] = []
        if lam.dim() == 0:
            v_th = float(lam)
            chain.append((f"{base}_if", IF(v_th=v_th, v_init=v_th / 2, reset="subtract",
                                           backend=backend, step_mode="folded")))
        else:
            chain.append((f"{base}_in", Scale(1.0 / lam)))
            chain.append((f"{base}_if", IF(v_th=1.0, v_init=0.5, reset="subtract",
                                           backend=backend, step_mode="folded")))
        chain.append((f"{base}_out", Scale(lam)))
        current = node.args[0]
        anchor = node
        for name, module in chain:
            gm.add_submodule(name, module)
            with gm.graph.inserting_after(anchor):
                current = gm.graph.call_module(name, (current,))
            anchor = current
        node.replace_all_uses_with(current)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def convert(
    model: nn.Module,
    cal_loader: Iterable | None = None,
    timesteps: int = 32,
    device: str | torch.device | None = None,
    method: str = "qcfs",
    levels: int = 8,
    finetune_epochs: int = 0,
    *,
    percentile: float = 99.9,
    per_channel: bool = False,
    backend: str = "auto",
    finetune_lr: float = 1e-3,
    progress: bool = True,
) -> SpikingNetwork:
    """Convert a trained ANN into an IF-neuron SNN of ``timesteps`` steps.

    Args:
        model: a QCFS model (from :func:`neuro_emu.convert.qcfs_model`, trained: its lambdas
            become the thresholds) or a plain ReLU model (lambdas calibrated on ``cal_loader``).
            It is not modified.
        cal_loader: batches ``(images, labels)``: calibration for a ReLU model, and the data of
            the optional fine-tuning.
        timesteps: T of the returned SpikingNetwork (change it later with ``snn.timesteps``).
        device: where the SNN lives (default: the model's device).
        method: "qcfs" (the only method: trained or calibrated QCFS thresholds).
        levels: L of the calibrated QCFS (informational for the SNN; thresholds are what count).
        finetune_epochs: epochs of BPTT fine-tuning through the fused IF kernels (ATan
            surrogate) on ``cal_loader`` after conversion; 0 for none.
        percentile: activation percentile that sets a calibrated lambda.
        per_channel: calibrate one lambda per channel rather than per layer.
        backend: the IF neurons' backend ("auto": Triton on CUDA, Numba on CPU).
        finetune_lr: SGD learning rate of the fine-tuning.
        progress: tqdm bars for calibration and fine-tuning.

    Returns:
        ``SpikingNetwork(body, timesteps)``; ``body`` is a torch.fx GraphModule.

    Raises:
        TypeError: a layer with no SNN counterpart (its name and type in the message).
        ValueError: a ReLU model without ``cal_loader``, or a bad argument.
    """
    if method != "qcfs":
        raise ValueError(f"method must be 'qcfs', got {method!r}")
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an int >= 1, got {levels!r}")
    # NaN fails both comparisons too
    if isinstance(percentile, bool) or not (isinstance(percentile, (int, float))
                                            and 0 <= percentile <= 100):
        raise ValueError(f"percentile must be a number in [0, 100], got {percentile!r}")
    if not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise ValueError(f"finetune_epochs must be an int >= 0, got {finetune_epochs!r}")
    param = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (
        param.device if param is not None else torch.device("cpu"))
    gm = copy.deepcopy(trace(model)).to(device).eval()
    _check_convertible(gm)
    modules = dict(gm.named_modules())
    has_relu = any(is_activation(node, modules) for node in gm.graph.nodes)
    if has_relu:
        if cal_loader is None:
            raise ValueError(
                "the model has ReLU activations: pass cal_loader to calibrate their thresholds, "
                "or train a QCFS model (neuro_emu.convert.qcfs_model) and convert that"
            )
        batches = tqdm(cal_loader, desc="calibrating", leave=False, disable=not progress)
        gm = calibrate_thresholds(gm, batches, device, percentile, per_channel)
    body = _to_if(fold_batchnorm(gm), backend)
    snn = SpikingNetwork(body, timesteps).to(device)
    if finetune_epochs:
        if cal_loader is None:
            raise ValueError("finetune_epochs > 0 needs cal_loader (the fine-tuning data)")
        _finetune(snn, cal_loader, finetune_epochs, finetune_lr, device, progress)
    return snn.eval()


def _finetune(snn: SpikingNetwork, loader: Iterable, epochs: int, lr: float,
              device: torch.device, progress: bool) -> None:
    """BPTT through the IF neurons (their ATan surrogate, alpha 2) with SGD; thresholds stay
    fixed."""
    optimizer = torch.optim.SGD(snn.parameters(), lr=lr, momentum=0.9)
    snn.train()
    for epoch in range(epochs):
        for images, labels in tqdm(loader, desc=f"fine-tune {epoch + 1}/{epochs}", leave=False,
                                   disable=not progress):
            loss = F.cross_entropy(snn(images.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
