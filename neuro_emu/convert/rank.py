"""The rank of a traced node's output where the graph alone fixes it.

torch.fx tracing records no shapes, yet some rewrites are right only on ``[N, F]`` tensors: a Linear
acts on the last dim while a BatchNorm1d or a per-channel Scale acts on dim 1, the same dim only at
rank 2. These rewrites ask :func:`output_rank` and leave the layers alone where it cannot tell.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from neuro_emu.convert.qcfs import ACTIVATION_FUNCTIONS, ACTIVATIONS, QCFS
from neuro_emu.layers import LIF, Scale

# Layers whose output has their input's rank: elementwise ones, and Linear (last dim only).
_RANK_KEEPING_MODULES = (nn.Linear, nn.Dropout, nn.Identity, nn.modules.batchnorm._BatchNorm,
                         *ACTIVATIONS, QCFS, LIF, Scale)
_RANK_KEEPING_FUNCTIONS = (*ACTIVATION_FUNCTIONS, F.dropout)
_RANK_KEEPING_METHODS = ("relu", "contiguous")


def output_rank(node: fx.Node, modules: dict[str, nn.Module]) -> int | None:
    """The number of dims of ``node``'s output (batch included), or None where the graph does not
    fix it. A flatten up to the last dim or a view/reshape to explicit sizes fixes it; the layers
    above keep their input's. ``modules``: the graph's ``named_modules()``."""
    if node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, nn.Flatten):
            return _flattened_rank(module.start_dim, module.end_dim)
        return _input_rank(node, modules) if isinstance(module, _RANK_KEEPING_MODULES) else None
    if node.op == "call_function" and node.target is torch.flatten or (
            node.op == "call_method" and node.target == "flatten"):
        return _flattened_rank(_argument(node, 1, "start_dim", 0),
                               _argument(node, 2, "end_dim", -1))
    if node.op == "call_method" and node.target in ("view", "reshape"):
        sizes = node.args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = sizes[0]
        # one traced argument may be a whole torch.Size (x.view(y.shape)) of any length
        return None if len(sizes) == 1 and isinstance(sizes[0], fx.Node) else len(sizes)
    if (node.op == "call_function" and node.target in _RANK_KEEPING_FUNCTIONS) or (
            node.op == "call_method" and node.target in _RANK_KEEPING_METHODS):
        return _input_rank(node, modules)
    return None


def _input_rank(node: fx.Node, modules: dict[str, nn.Module]) -> int | None:
    source = node.args[0] if node.args else None
    return output_rank(source, modules) if isinstance(source, fx.Node) else None


def _argument(node: fx.Node, index: int, name: str, default: object) -> object:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _flattened_rank(start_dim: object, end_dim: object) -> int | None:
    """Flattening dims ``start_dim`` to the last gives ``start_dim + 1`` dims, whatever the input's
    rank; other ranges depend on it."""
    if isinstance(start_dim, int) and start_dim >= 0 and end_dim == -1:
        return start_dim + 1
    return None
