"""The QCFS activation (quantisation-clip-floor-shift) and the fx passes that place it.

QCFS (Bu et al., "Optimal ANN-SNN conversion for high-accuracy and ultra-low-latency spiking
neural networks", ICLR 2022) replaces ReLU with

    qcfs(x) = lambda * clip(floor(x * L / lambda + 1/2) / L, 0, 1)

an L-level staircase whose steps sit where an IF neuron with threshold lambda and initial membrane
lambda / 2 places them: for a constant input x, lambda times that neuron's mean output over T = L
steps is exactly ``qcfs(x)`` (the theorem the tests check), and over T steps it is the T-level
staircase, which approaches clip(x, 0, lambda) as T grows. ``lambda`` is learnable (per layer, or
per channel) and trained with the rest of the network; floor passes its gradient straight
through.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = (nn.ReLU,)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, torch.relu_)


class _FloorSTE(torch.autograd.Function):
    """floor forward, identity backward (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class QCFS(nn.Module):
    """``x: [B, C, ...] -> lambda * clip(floor(x * L / lambda + 1/2) / L, 0, 1)``.

    Args:
        levels: L, the quantisation levels (>= 1).
        threshold: the initial lambda (> 0); a scalar, or one per channel with ``channels``.
        channels: per-channel lambda of this many channels (dim 1), else one per layer.
    """

    def __init__(self, levels: int = 8, threshold: float = 8.0, channels: int | None = None):
        super().__init__()
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be an int >= 1, got {levels!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        self.levels = levels
        shape = () if channels is None else (channels,)
        self.threshold = nn.Parameter(torch.full(shape, float(threshold)))

    def _lambda(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.threshold
        return lam.view(-1, *([1] * (x.dim() - 2))) if lam.dim() else lam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self._lambda(x)
        steps = _FloorSTE.apply(x * self.levels / lam + 0.5)
        return lam * torch.clamp(steps / self.levels, 0.0, 1.0)

    def extra_repr(self) -> str:
        kind = "per layer" if self.threshold.dim() == 0 else f"{self.threshold.numel()} channels"
        return f"levels={self.levels}, lambda {kind}"


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a clear error for models fx cannot trace."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 - fx raises many types for untraceable code
        raise TypeError(
            f"cannot trace {type(model).__name__} with torch.fx ({error}); conversion needs a "
            "model without data-dependent control flow in forward"
        ) from error


def is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is a ReLU call site: a ReLU module (``modules``: the graph's
    ``named_modules()``) or ``F.relu`` / ``torch.relu``."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), ACTIVATIONS)
    return node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS


def replace_activations(
    model: nn.Module, make: Callable[[str, fx.Node], nn.Module]
) -> fx.GraphModule:
    """Trace ``model`` and give every ReLU call site (module or functional) its own module,
    ``make(name, node)``, inserted under a fresh name. A ReLU module called at two sites (as in a
    torchvision BasicBlock) becomes two modules. Returns a new GraphModule; ``model`` is untouched
    except that its parameters are shared with the result."""
    gm = trace(model)
    modules = dict(gm.named_modules())
    count = 0
    for node in list(gm.graph.nodes):
        if not is_activation(node, modules):
            continue
        base = node.target if node.op == "call_module" else f"relu_{count}"
        name = f"{base.replace('.', '_')}_site{count}"
        count += 1
        gm.add_submodule(name, make(name, node))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def qcfs_model(model: nn.Module, levels: int = 8, threshold: float = 8.0,
               per_channel: bool = False) -> fx.GraphModule:
    """The model with every ReLU call site replaced by its own :class:`QCFS` (train it with any
    ANN training loop, then :func:`neuro_emu.convert`).

    Args:
        levels: L of every QCFS.
        threshold: the initial lambda.
        per_channel: one lambda per channel (the channel count is taken from a probe forward,
            which needs ``model`` to accept a ``[1, 3, 32, 32]`` input); default one per layer.
    """
    channels: dict[str, int] = {}
    if per_channel:
        channels = _activation_channels(model)

    def make(name: str, node: fx.Node) -> nn.Module:
        return QCFS(levels, threshold, channels.get(node.name) if per_channel else None)

    return replace_activations(model, make)


def _activation_channels(model: nn.Module, probe_shape=(1, 3, 32, 32)) -> dict[str, int]:
    """``{fx node name: channels}`` of every ReLU call site's input, by one probe forward."""
    gm = trace(model)
    found: dict[str, int] = {}
    interpreter = _Recorder(gm, found)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    with torch.no_grad():
        interpreter.run(torch.zeros(probe_shape, device=param.device, dtype=param.dtype))
    model.train(was_training)
    return found


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, found: dict[str, int]):
        super().__init__(gm)
        self.found = found
        self.modules = dict(gm.named_modules())

    def run_node(self, node: fx.Node):
        out = super().run_node(node)
        if is_activation(node, self.modules):
            self.found[node.name] = out.shape[1]
        return out
