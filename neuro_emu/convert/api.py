"""compile / evaluate / measure_sparsity: bind a network to a backend, measure it on data."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from neuro_emu.layers import SpikingNetwork

TARGETS: dict[str, str] = {"gpu": "triton", "cpu": "numba", "torch": "torch"}


def compile(snn: nn.Module, target: str = "cpu", **options) -> nn.Module:  # noqa: A001
    """Bind ``snn``'s neurons to a backend and move it to that backend's device.

    Targets: "gpu" (Triton kernels, CUDA), "cpu" (Numba kernels), "torch" (the PyTorch loop, on
    the network's current device): ``snn`` is changed in place and returned. "loihi2_sim": the
    network is folded and quantized onto the bit-accurate Loihi emulator and a new
    :class:`neuro_emu.loihi.network.LoihiNetwork` is returned (``snn`` is kept, unchanged, as
    its float reference); ``options`` go to it (``timesteps``, ``input_range``,
    ``input_shape``, ``backend``, ``num_weight_bits``). Its forward takes the same
    ``[B, C, H, W]`` images, so :func:`evaluate` works on it; its ``report`` and
    :func:`neuro_emu.loihi.resources.resource_report` say what the mapping cost.

    Returns:
        ``snn`` itself for "gpu" / "cpu" / "torch", a LoihiNetwork for "loihi2_sim".

    Raises:
        ValueError: an unknown target, a target that cannot run here (no CUDA for "gpu"),
            options given to a target other than "loihi2_sim".
        TypeError: ``snn`` is not a SpikingNetwork, or (loihi2_sim) holds a layer Loihi cannot
            run (named in the message).
    """
    if target == "loihi2_sim":
        if not isinstance(snn, SpikingNetwork):
            raise TypeError(f"compile takes a SpikingNetwork, got {type(snn).__name__}")
        from neuro_emu.loihi.network import LoihiNetwork

        return LoihiNetwork(snn, **options)
    if options:
        raise ValueError(f"options {sorted(options)} apply to target 'loihi2_sim' only")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {[*TARGETS, 'loihi2_sim']}, got {target!r}")
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"compile takes a SpikingNetwork (from convert), got {type(snn).__name__}")
    if target == "gpu":
        if not torch.cuda.is_available():
            raise ValueError("target 'gpu' needs CUDA, and none is available: use 'cpu'")
        snn.to("cuda")
    elif target == "cpu":
        snn.to("cpu")
    snn.set_backend(TARGETS[target])
    return snn


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    if param is None:
        param = next(model.buffers(), torch.empty(0))
    return param.device


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: str | torch.device | None = None,
             progress: bool = False) -> float:
    """Top-1 accuracy of ``model`` (ANN or SNN) over ``loader``'s ``(images, labels)``, as a
    fraction in [0, 1]. ``device`` defaults to the model's; the model is put in eval mode."""
    device = _device(model, device)
    model.eval()
    correct, seen = 0, 0
    for images, labels in tqdm(loader, desc="evaluating", leave=False, disable=not progress):
        logits = model(images.to(device))
        correct += int((logits.argmax(1) == labels.to(device)).sum())
        seen += labels.numel()
    if not seen:
        raise ValueError("the loader yielded no samples")
    return correct / seen


def _first_batches(loader: Iterable, max_batches: int | None) -> Iterator:
    """``loader``'s first ``max_batches`` batches, all of them for None."""
    if max_batches is not None and (isinstance(max_batches, bool)
                                    or not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be an int >= 1 or None (every batch), "
                         f"got {max_batches!r}")
    return itertools.islice(loader, max_batches)


@torch.no_grad()
def measure_sparsity(snn: SpikingNetwork, loader: Iterable,
                     device: str | torch.device | None = None, per_layer: bool = False,
                     max_batches: int | None = None):
    """The fraction of neuron-steps without a spike over ``loader`` (1 - spike rate).

    ``snn`` may also be the LoihiNetwork of ``compile(..., "loihi2_sim")``: its neuron layers
    (not the readout) are counted over the whole emulated run, ``T + depth`` steps per image.

    Args:
        max_batches: run only this many of ``loader``'s batches (None: all).

    Returns:
        the overall sparsity, or with ``per_layer`` a pair ``(overall, {layer: sparsity})``.

    Raises:
        ValueError: ``max_batches`` not None or an int >= 1, or no samples to measure on.
    """
    from neuro_emu.loihi.network import LoihiNetwork, RunStats

    batches = _first_batches(loader, max_batches)
    seen = 0
    if isinstance(snn, LoihiNetwork):
        saved, snn.stats = snn.stats, RunStats()
        try:
            for images, _labels in batches:
                snn(images)
                seen += len(images)
            layers = {name: c for name, c in snn.stats.layers.items()
                      if name != snn.layers[-1].name}
        finally:
            snn.stats = saved
        if not seen:
            raise ValueError("the loader yielded no samples")
        steps = sum(c.neuron_steps for c in layers.values())
        overall = 1.0 - sum(c.spikes for c in layers.values()) / steps if steps else 1.0
        if not per_layer:
            return overall
        return overall, {name: 1.0 - c.spikes / c.neuron_steps for name, c in layers.items()}
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"measure_sparsity takes a SpikingNetwork, got {type(snn).__name__}")
    device = _device(snn, device)
    snn.eval()
    with snn.record_spikes() as counts:
        for images, _labels in batches:
            snn(images.to(device))
            seen += len(images)
    if not seen:
        raise ValueError("the loader yielded no samples")
    overall = 1.0 - counts.overall()
    if not per_layer:
        return overall
    return overall, {name: 1.0 - rate for name, rate in counts.rates().items()}


@torch.no_grad()
def evaluate_timesteps(snn: SpikingNetwork, loader: Iterable, timesteps: Sequence[int],
                       device: str | torch.device | None = None,
                       progress: bool = False) -> dict[int, dict[str, float]]:
    """Accuracy and sparsity at every T of ``timesteps`` from one run of ``max(timesteps)``
    steps: the readout at T is the mean output of the first T steps, exactly what an SNN run for
    T steps gives (each step depends only on the steps before it).

    Returns:
        ``{T: {"acc": ..., "sparsity": ...}}``.

    Raises:
        ValueError: ``timesteps`` empty or not all ints >= 1, or the loader yielded no samples.
    """
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"evaluate_timesteps takes a SpikingNetwork, got {type(snn).__name__} "
                        "(a LoihiNetwork: set its .timesteps and call evaluate for each T)")
    requested = list(timesteps)
    if not requested or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool)
                                and t >= 1 for t in requested):
        raise ValueError(f"timesteps must be ints >= 1, got {timesteps!r}")
    steps = sorted(set(int(t) for t in requested))
    device = _device(snn, device)
    horizon = steps[-1]
    previous = snn.timesteps
    snn.timesteps = horizon
    snn.eval()
    correct = torch.zeros(horizon, dtype=torch.int64)
    spikes = torch.zeros(horizon, dtype=torch.float64)
    sites = 0  # neuron sites per sample (summed over layers)
    seen = 0
    handles = []

    def hook(_module, _inputs, out):
        nonlocal sites
        per_step = out.detach().unflatten(0, (horizon, -1))
        spikes.add_(per_step.flatten(1).sum(1, dtype=torch.float64).cpu())
        sites += per_step[0].numel()

    for _, neuron in snn.neurons():
        handles.append(neuron.register_forward_hook(hook))
    try:
        for images, labels in tqdm(loader, desc=f"T sweep to {horizon}", leave=False,
                                   disable=not progress):
            images, labels = images.to(device), labels.to(device)
            folded = images.unsqueeze(0).expand(horizon, *images.shape).flatten(0, 1)
            out = snn.body(folded).unflatten(0, (horizon, images.shape[0]))
            means = out.cumsum(0) / torch.arange(1, horizon + 1, device=device).view(-1, 1, 1)
            correct += (means.argmax(2) == labels).sum(1).cpu()
            seen += labels.numel()
    finally:
        for handle in handles:
            handle.remove()
        snn.timesteps = previous
    if not seen:
        raise ValueError("the loader yielded no samples")
    cumulative = spikes.cumsum(0)
    return {
        t: {"acc": int(correct[t - 1]) / seen,
            "sparsity": 1.0 - float(cumulative[t - 1]) / (sites * t)}
        for t in steps
    }
