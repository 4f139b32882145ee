"""Spike-sparse convolutions in a converted network: the Scale(lambda) after each IF neuron is
folded into the conv/linear layers it feeds, which then see binary spikes and run
:class:`~neuro_emu.layers.SpikingConv2d` / :class:`~neuro_emu.layers.SpikingLinear` (the sparse
kernels at inference when the input is sparse enough to pay, dense otherwise).

Folding ``lambda`` into the weights computes ``(w * lambda) . s`` where the dense network computes
``w . (lambda * s)``: equal up to float rounding, not bit for bit. A Scale that also feeds other
nodes (a residual identity, a pooling) stays for them. A layer the Spiking* layers cannot stand in
for stays dense: a Linear whose input the graph does not fix as ``[T * B, F]``, a Conv2d with a
padding mode other than zeros or padding given as a string.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn

from neuro_emu.convert.rank import output_rank
from neuro_emu.layers import IF, Scale, SpikingConv2d, SpikingLinear, SpikingNetwork


def _call_counts(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def _has_spiking_twin(layer: nn.Module, spikes: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether a Spiking* layer computes what ``layer``, fed by the neuron node ``spikes``, does:
    SpikingLinear takes ``[T * B, F]`` only (where a per-channel Scale's dim 1 is also the
    Linear's features), SpikingConv2d zero padding of numeric size only."""
    if isinstance(layer, nn.Conv2d):
        return layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    return isinstance(layer, nn.Linear) and output_rank(spikes, modules) == 2


def _scaled_copy(layer: nn.Module, factor: torch.Tensor) -> nn.Module | None:
    """``layer`` with its input multiplied by ``factor`` folded into its weight, or None where the
    shapes do not allow it (grouped convolutions with a per-channel factor)."""
    if factor.dim() == 0:
        scale = factor
    elif isinstance(layer, nn.Conv2d) and layer.groups == 1 and factor.numel() == layer.in_channels:
        scale = factor.view(1, -1, 1, 1)
    elif isinstance(layer, nn.Linear) and factor.numel() == layer.in_features:
        scale = factor.view(1, -1)
    else:
        return None
    scaled = copy.deepcopy(layer)
    scaled.weight = nn.Parameter(layer.weight.detach() * scale.to(layer.weight))
    return scaled


def _spiking(layer: nn.Module, backend: str) -> nn.Module:
    """The folded Spiking* twin of a Conv2d or Linear, with the same parameters."""
    if isinstance(layer, nn.Conv2d):
        twin = SpikingConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             layer.stride, layer.padding, layer.dilation, layer.groups,
                             layer.bias is not None, backend=backend, check=False, folded=True)
    else:
        twin = SpikingLinear(layer.in_features, layer.out_features, layer.bias is not None,
                             backend=backend, check=False, folded=True)
    twin.load_state_dict(layer.state_dict())
    return twin.to(layer.weight.device)


def sparsify(snn: SpikingNetwork, backend: str = "auto") -> SpikingNetwork:
    """A copy of a converted ``snn`` whose conv/linear layers fed straight by IF neurons take
    binary spikes (the Scale after the neuron folded into them) and run spike-sparse.

    Args:
        snn: the output of :func:`neuro_emu.convert` (its body a torch.fx GraphModule).
        backend: the sparse layers' backend ("auto": Numba on CPU, Triton on CUDA; "dense").

    Returns:
        The new SpikingNetwork; ``snn`` is not changed.
    """
    body = snn.body
    if not isinstance(body, fx.GraphModule):
        raise TypeError("sparsify takes the SpikingNetwork that neuro_emu.convert returns")
    gm = copy.deepcopy(body)
    modules = dict(gm.named_modules())
    calls = _call_counts(gm)
    for node in list(gm.graph.nodes):
        scale = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if node.args else None
        if not (isinstance(scale, Scale) and isinstance(source, fx.Node)
                and source.op == "call_module" and isinstance(modules[source.target], IF)):
            continue
        for user in list(node.users):
            if user.op != "call_module" or calls[user.target] != 1:
                continue
            layer = modules[user.target]
            if not _has_spiking_twin(layer, source, modules):
                continue
            scaled = _scaled_copy(layer, scale.factor)
            if scaled is None:
                continue
            gm.add_submodule(user.target, _spiking(scaled, backend))
            user.replace_input_with(node, source)
        if not node.users:
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return SpikingNetwork(gm, snn.timesteps).train(snn.training)
