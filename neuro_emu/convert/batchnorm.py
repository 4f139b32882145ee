"""BatchNorm folding on a torch.fx graph: the one implementation conversion and NIR export share."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn

from neuro_emu.convert.rank import output_rank

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def fold_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of ``layer`` computing ``bn(layer(x))`` in eval mode, in float64 and rounded once:
    ``w' = w * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``."""
    weight = layer.weight.detach()
    scale = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double()
    if layer.bias is not None:
        shift = shift + layer.bias.detach().double()
    bias = shift * scale
    if bn.bias is not None:
        bias = bias + bn.bias.detach().double()
    folded = copy.deepcopy(layer)
    view = (-1,) + (1,) * (weight.dim() - 1)
    folded.weight = nn.Parameter((weight.double() * scale.view(view)).to(weight.dtype),
                                 requires_grad=layer.weight.requires_grad)
    folded.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=layer.weight.requires_grad)
    return folded


def fold_graph(gm: fx.GraphModule,
               unfoldable: Callable[[fx.Node, str], None]) -> fx.GraphModule:
    """Fold every BatchNorm node of ``gm`` (in place) into the conv/linear node before it.

    A BatchNorm that cannot be folded (no running statistics, not right after a conv/linear whose
    output it alone reads, after a module called more than once, or after a Linear whose input
    the graph does not fix as ``[N, F]``) is passed to ``unfoldable(node, reason)``, which raises
    or lets it stay.
    """
    modules = dict(gm.named_modules())  # for output_rank: folding keeps every module's type
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        bn = gm.get_submodule(node.target)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        if bn.running_mean is None or bn.running_var is None:
            unfoldable(node, "BatchNorm without running statistics (track_running_stats=False) "
                             "has no fixed affine map to fold")
            continue
        source = node.args[0]
        layer = gm.get_submodule(source.target) if source.op == "call_module" else None
        if not isinstance(layer, FOLDABLE) or len(source.users) != 1:
            unfoldable(node, f"BatchNorm folds only into a Conv or Linear layer whose output it "
                             f"alone reads, and it follows {source.name!r}")
            continue
        if calls[source.target] != 1:
            unfoldable(node, f"BatchNorm after {source.name!r}, whose module {source.target!r} "
                             f"is called {calls[source.target]} times (shared weights cannot "
                             "take one call's BatchNorm)")
            continue
        if isinstance(layer, nn.Linear) and output_rank(source, modules) != 2:
            # BatchNorm normalises dim 1, which is the Linear's output features only at rank 2
            unfoldable(node, f"BatchNorm after the Linear {source.name!r}, whose input is not "
                             "known to be [N, features]: on more dims BatchNorm normalises dim "
                             "1, not the Linear's features")
            continue
        gm.add_submodule(source.target, fold_into(layer, bn))
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
