"""Export a :class:`~neuro_emu.layers.SpikingNetwork` to NIR (the Neuromorphic Intermediate
Representation, package ``nir``).

The body is traced with torch.fx (neurons are leaves), BatchNorm is folded into the convolution or
linear layer before it, and each node becomes one NIR node; a residual addition becomes no node at
all but two edges into its consumer, which NIR defines as their sum. NIR has no notion of our time
loop, so nodes describe one time step of duration ``dt`` and the graph's metadata keeps what only
neuro_emu reads back (T, the input repeated over T and the output averaged over T, and per neuron
the reset mode, v_init and the surrogate): our own round trip is exact, and the export warns, naming
the nodes, about what other tools will not see.

The neuron mapping. Ours, per step (:mod:`neuro_emu.ops.multistep_lif`)::

    h = beta * v + x[t];   s = h >= v_th;   v = h - s * v_th | (v_reset if s else h) | h

NIR's LIF is ``tau * dv/dt = (v_leak - v) + r * I``, spiking on ``v > v_threshold`` and then
setting ``v = v_reset``. One forward-Euler step of length ``dt`` gives::

    v[t] = (1 - dt / tau) * v + (dt / tau) * r * x[t] + (dt / tau) * v_leak

so that, equation by equation:

* ``beta = 1 - dt / tau``, i.e. ``tau = dt / (1 - beta)`` (beta = 0.5, dt = 1: tau = 2);
* input gain ``(dt / tau) * r = 1``, i.e. ``r = tau / dt = 1 / (1 - beta)``;
* ``v_leak = 0``;
* IF (``beta = 1``) is NIR's IF, ``dv/dt = r * I``: ``v[t] = v + dt * r * x[t]``, so ``r = 1 / dt``;
* threshold: NIR spikes on ``v > v_threshold`` and we on ``h >= v_th``; in float32 these agree
  exactly when ``v_threshold`` is the largest float32 below ``v_th``, which is what is written
  (``v_th = 1`` is written as 0.99999994); the importer inverts it;
* ``v_reset``: NIR's reset sets ``v = v_reset``, which is our ``reset="zero"``. Reset by
  subtraction and no reset have no NIR form: ``v_reset = 0`` is written, the mode goes into the
  node's metadata, and the export warns;
* ``v_init`` (the membrane at the first step; QCFS-converted networks start at ``v_th / 2``): NIR
  starts at rest, so it is metadata only, with a warning.

A neuron with an input gain ``g`` or a constant input ``c``
(:class:`~neuro_emu.nir.modules.GainLIF`, from an imported graph) writes ``r = g * tau / dt`` and
``v_leak = c * tau / dt`` (IF: ``r = g / dt``, and ``c`` must be 0). NIR's CubaLIF,
``tau_syn * dI/dt = -I + w_in * S`` feeding ``tau_mem * dv/dt = (v_leak - v) + r * I``, steps as
``I[t] = (1 - dt / tau_syn) * I + (dt / tau_syn) * w_in * x[t]``, then the LIF step on ``I[t]``
(:class:`~neuro_emu.nir.modules.CubaLIF`): ``tau_syn = dt / (1 - alpha)``,
``w_in = syn_gain * tau_syn / dt``, and ``tau_mem``, ``r``, ``v_leak`` as for LIF.

The other layers: Conv2d -> Conv2d (a zero bias when it has none), Linear -> Affine (Linear
without bias), AvgPool2d -> AvgPool2d, AdaptiveAvgPool2d -> AvgPool2d with the window that gives
its output size (only when it divides the input), Flatten / ``torch.flatten`` -> Flatten (NIR's
dims count without the batch: torch's ``start_dim = 1`` is NIR's 0), ``x * number`` -> Scale,
the converter's ``neuro_emu.layers.Scale`` (a factor per layer or channel) -> Scale (its factor
at every element), Identity and Dropout -> nothing (an edge straight through), SumPool2d and
Scale -> themselves.
"""

from __future__ import annotations

import copy
import json
import math
import operator
import warnings
from collections.abc import Sequence
from pathlib import Path

import nir
import numpy as np
import torch
import torch.fx as fx
from torch import nn

from neuro_emu.convert.batchnorm import fold_graph
from neuro_emu.layers import IF, LIF, SpikingNetwork
from neuro_emu.layers import Scale as ConverterScale
from neuro_emu.nir.modules import LEAF_MODULES, NEURON_MODULES, CubaLIF, GainLIF, Scale, SumPool2d
from neuro_emu.ops.surrogate import as_float32

META_KEY = "neuro_emu"  # node and graph metadata: one JSON string each, read back by from_nir
FORMAT_VERSION = 1
_PASS_THROUGH = (nn.Identity, nn.Dropout)
_ADDS = (operator.add, torch.add)
_MULS = (operator.mul, torch.mul)
_RESET_NOTES = {
    "subtract": "reset by subtracting v_th (NIR resets to v_reset; 0 written)",
    "soft": "reset by subtracting v_th (NIR resets to v_reset; 0 written)",
    "none": "never reset (NIR resets to v_reset; 0 written)",
}


class NIRExportError(ValueError):
    """The model has something NIR cannot express, or the arguments do not fit it."""


class NIRExportWarning(UserWarning):
    """Something of the model that NIR itself cannot carry: kept in metadata for neuro_emu only."""


def _node_name(node: fx.Node) -> str:
    """The fx node's name, less the "_" fx puts before a Sequential child's "0", "1", ..."""
    name = node.name
    return name[1:] if name[:1] == "_" and name[1:2].isdigit() else name


def _at(node: fx.Node) -> str:
    """How errors name a node: ``node 'features_3'``."""
    return f"node {_node_name(node)!r}"


class _Tracer(fx.Tracer):
    """torch.fx tracing with neurons (and our NIR modules, and the converter's Scale) as leaves:
    the neurons loop over time, which fx must not unroll, and a leaf maps to one NIR node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (isinstance(m, (*LEAF_MODULES, ConverterScale))
                or super().is_leaf_module(m, module_qualified_name))


def trace(body: nn.Module) -> fx.GraphModule:
    """``body`` as a torch.fx GraphModule, neurons kept as single call_module nodes.

    Raises:
        NIRExportError: fx cannot trace it (data-dependent control flow outside the neurons).
    """
    try:
        graph = _Tracer().trace(body)
    except Exception as error:  # noqa: BLE001 - fx raises TraceError, TypeError, ...
        raise NIRExportError(
            f"torch.fx cannot trace {type(body).__name__} ({type(error).__name__}: {error}); NIR "
            "export needs a body whose forward is a fixed graph of modules and additions"
        ) from error
    return fx.GraphModule(body, graph, type(body).__name__)


def _fold_graph(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold every BatchNorm of ``gm`` (in place); one that cannot be is an error (NIR has no
    BatchNorm)."""

    def unfoldable(node: fx.Node, reason: str) -> None:
        raise NIRExportError(f"{_at(node)}: {reason}: NIR has no BatchNorm")

    return fold_graph(gm, unfoldable)


def fold_batchnorm(model: SpikingNetwork) -> SpikingNetwork:
    """A copy of ``model`` whose body is a torch.fx GraphModule with every BatchNorm folded into
    the Conv/Linear before it (eval-mode statistics; the formula is
    :func:`neuro_emu.convert.batchnorm.fold_into`'s).

    This is the network :func:`to_nir` writes: its outputs and :func:`neuro_emu.from_nir`'s are
    equal bit for bit. ``model`` is not changed.

    Raises:
        TypeError: ``model`` is not a SpikingNetwork.
        NIRExportError: a BatchNorm that cannot be folded (named), or an untraceable body.
    """
    _check_model(model)
    body = _fold_graph(trace(copy.deepcopy(model.body)))
    folded = SpikingNetwork(body, model.timesteps)
    return folded.train(model.training)


def _check_model(model: object) -> None:
    if not isinstance(model, SpikingNetwork):
        raise TypeError(
            f"to_nir exports a SpikingNetwork (a folded-time body and its timesteps), got "
            f"{type(model).__name__}: wrap the body as SpikingNetwork(body, timesteps)"
        )


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph on zeros to record each node's per-sample output shape; neurons pass their
    input's shape through without running a kernel."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node):
        try:
            result = super().run_node(n)
        except Exception as error:  # noqa: BLE001 - any layer's shape error, named below
            raise NIRExportError(
                f"{_at(n)} fails on the input_shape given ({type(error).__name__}: {error})"
            ) from error
        if isinstance(result, torch.Tensor):
            self.shapes[n] = tuple(result.shape[1:])
        return result

    def call_module(self, target, args, kwargs):
        if isinstance(self.fetch_attr(target), NEURON_MODULES):
            return torch.zeros_like(args[0])
        return super().call_module(target, args, kwargs)


def _array(value: float, shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, value, dtype=np.float64)


def _threshold_below(v_th: float) -> float:
    """The largest float32 below float32(v_th): NIR's strict ``v > it`` is our ``h >= v_th``."""
    return float(np.nextafter(np.float32(as_float32(v_th)), np.float32(-np.inf)))


def _neuron_meta(neuron: LIF, target: str) -> dict:
    return {
        "module": target,
        "neuron": {"class": "IF" if isinstance(neuron, IF) else "LIF", **neuron.kwargs,
                   "v_init": neuron.v_init},
    }


def _lif_node(name: str, neuron: LIF, gain: float, bias: float, dt: float,
              shape: tuple[int, ...]) -> nir.NIRNode:
    kw = neuron.kwargs
    beta = kw["beta"]
    v_reset = kw["v_reset"] if kw["reset"] in ("zero", "hard") else 0.0
    threshold = _array(_threshold_below(kw["v_th"]), shape)
    if beta == 1.0:
        if bias != 0.0:
            raise NIRExportError(
                f"node {name!r}: an IF neuron with a constant input ({bias}) has no NIR form "
                "(NIR's IF has no v_leak)"
            )
        return nir.IF(r=_array(gain / dt, shape), v_threshold=threshold,
                      v_reset=_array(v_reset, shape))
    tau = dt / (1.0 - beta)
    return nir.LIF(tau=_array(tau, shape), r=_array(gain * tau / dt, shape),
                   v_leak=_array(bias * tau / dt, shape), v_threshold=threshold,
                   v_reset=_array(v_reset, shape))


def _cuba_node(name: str, module: CubaLIF, dt: float, shape: tuple[int, ...]) -> nir.NIRNode:
    kw = module.neuron.kwargs
    if module.alpha >= 1.0 or kw["beta"] >= 1.0:
        raise NIRExportError(
            f"node {name!r}: NIR's CubaLIF needs finite time constants (alpha < 1 and beta < 1), "
            f"got alpha={module.alpha}, beta={kw['beta']}"
        )
    tau_syn = dt / (1.0 - module.alpha)
    tau_mem = dt / (1.0 - kw["beta"])
    v_reset = kw["v_reset"] if kw["reset"] in ("zero", "hard") else 0.0
    return nir.CubaLIF(
        tau_syn=_array(tau_syn, shape), tau_mem=_array(tau_mem, shape),
        r=_array(module.gain * tau_mem / dt, shape),
        v_leak=_array(module.bias * tau_mem / dt, shape),
        v_threshold=_array(_threshold_below(kw["v_th"]), shape),
        v_reset=_array(v_reset, shape),
        w_in=_array(module.syn_gain * tau_syn / dt, shape),
    )


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


class _Exporter:
    """Walks the folded graph once, building NIR nodes, edges, metadata and the warning notes."""

    def __init__(self, gm: fx.GraphModule, shapes: dict[fx.Node, tuple[int, ...]],
                 dt: float) -> None:
        self.gm, self.shapes, self.dt = gm, shapes, dt
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.sources: dict[fx.Node, list[str]] = {}  # fx node -> NIR nodes whose sum it is
        self.notes: dict[str, list[str]] = {}

    def note(self, what: str, node: str) -> None:
        self.notes.setdefault(what, []).append(node)

    def name_for(self, node: fx.Node) -> str:
        name = _node_name(node)
        while name in self.nodes or name in ("input", "output"):
            name += "_"
        return name

    def add(self, fx_node: fx.Node, nir_node: nir.NIRNode, meta: dict, inputs: Sequence) -> None:
        name = self.name_for(fx_node)
        nir_node.metadata = {META_KEY: json.dumps(meta)}
        self.nodes[name] = nir_node
        for arg in inputs:
            self.edges += [(src, name) for src in self.sources[arg]]
        self.sources[fx_node] = [name]

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if "input" in self.nodes:
                    raise NIRExportError(
                        f"{_at(node)}: a second input; NIR export takes one input tensor"
                    )
                self.nodes["input"] = nir.Input(input_type=np.array(self.shapes[node]))
                self.sources[node] = ["input"]
            elif node.op == "call_module":
                self.module(node)
            elif node.op in ("call_function", "call_method"):
                self.function(node)
            elif node.op == "output":
                result = node.args[0]
                if not isinstance(result, fx.Node) or result not in self.shapes:
                    raise NIRExportError(
                        "the body must return one tensor for NIR export, it returns "
                        f"{type(result).__name__}"
                    )
                self.nodes["output"] = nir.Output(output_type=np.array(self.shapes[result]))
                self.edges += [(src, "output") for src in self.sources[result]]
            else:
                raise NIRExportError(f"{_at(node)}: fx op {node.op!r} has no NIR form")

    def _tensor_arg(self, node: fx.Node) -> fx.Node:
        if not node.args or not isinstance(node.args[0], fx.Node) or node.kwargs:
            raise NIRExportError(f"{_at(node)}: expected one tensor argument")
        return node.args[0]

    def module(self, node: fx.Node) -> None:
        module = self.gm.get_submodule(node.target)
        arg = self._tensor_arg(node)
        in_shape, out_shape = self.shapes[arg], self.shapes[node]
        meta = {"module": node.target}
        if isinstance(module, _PASS_THROUGH):
            self.sources[node] = self.sources[arg]
            return
        if isinstance(module, NEURON_MODULES):
            self.neuron(node, module, arg, out_shape)
            return
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                raise NIRExportError(
                    f"{_at(node)}: Conv2d with padding_mode={module.padding_mode!r}; NIR "
                    "pads with zeros"
                )
            meta["bias"] = module.bias is not None
            bias = module.bias if module.bias is not None else torch.zeros(module.out_channels)
            padding = module.padding if isinstance(module.padding, str) else _pair(module.padding)
            nir_node = nir.Conv2d(
                input_shape=tuple(in_shape[1:]), weight=_numpy(module.weight),
                stride=_pair(module.stride), padding=padding, dilation=_pair(module.dilation),
                groups=module.groups, bias=_numpy(bias).astype(_numpy(module.weight).dtype),
            )
        elif isinstance(module, nn.Linear):
            if len(in_shape) != 1:
                raise NIRExportError(
                    f"{_at(node)}: Linear on a per-sample shape {in_shape}; NIR's Affine "
                    "takes vectors (flatten first)"
                )
            meta["bias"] = module.bias is not None
            nir_node = (nir.Affine(weight=_numpy(module.weight), bias=_numpy(module.bias))
                        if module.bias is not None else nir.Linear(weight=_numpy(module.weight)))
        elif isinstance(module, nn.AvgPool2d):
            if module.ceil_mode or module.divisor_override is not None:
                raise NIRExportError(
                    f"{_at(node)}: AvgPool2d with ceil_mode or divisor_override has no NIR "
                    "form"
                )
            stride = module.stride if module.stride is not None else module.kernel_size
            meta.update(torch="AvgPool2d", count_include_pad=module.count_include_pad)
            nir_node = nir.AvgPool2d(kernel_size=np.array(_pair(module.kernel_size)),
                                     stride=np.array(_pair(stride)),
                                     padding=np.array(_pair(module.padding)))
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            size = tuple(in_shape[1:])
            out = tuple(out_shape[1:])
            if any(o == 0 or s % o for s, o in zip(size, out, strict=True)):
                raise NIRExportError(
                    f"{_at(node)}: AdaptiveAvgPool2d from {size} to {out} uses uneven "
                    "windows; NIR's AvgPool2d has one window size"
                )
            window = tuple(s // o for s, o in zip(size, out, strict=True))
            meta.update(torch="AdaptiveAvgPool2d", output_size=list(out))
            nir_node = nir.AvgPool2d(kernel_size=np.array(window), stride=np.array(window),
                                     padding=np.array([0, 0]))
        elif isinstance(module, nn.Flatten):
            nir_node = self.flatten(node, in_shape, module.start_dim, module.end_dim)
        elif isinstance(module, SumPool2d):
            nir_node = nir.SumPool2d(kernel_size=np.array(module.kernel_size),
                                     stride=np.array(module.stride),
                                     padding=np.array(module.padding))
        elif isinstance(module, Scale):
            nir_node = nir.Scale(scale=_numpy(module.scale))
        elif isinstance(module, ConverterScale):
            # Its factor broadcast to the node's shape: 1 * factor is exact.
            ones = torch.ones((1, *in_shape), dtype=module.factor.dtype)
            with torch.no_grad():
                scale = _numpy(module(ones)[0])
            meta.update(torch="neuro_emu.layers.Scale", factor=module.factor.tolist())
            nir_node = nir.Scale(scale=scale)
        else:
            raise NIRExportError(
                f"{_at(node)}: {type(module).__name__} ({node.target!r}) has no NIR "
                "equivalent (NIR export covers Conv2d, Linear, AvgPool2d, AdaptiveAvgPool2d, "
                "Flatten, BatchNorm (folded), Identity, Dropout, LIF, IF and residual additions)"
            )
        self.add(node, nir_node, meta, [arg])

    def flatten(self, node: fx.Node, in_shape: tuple[int, ...], start: int,
                end: int) -> nir.NIRNode:
        rank = len(in_shape) + 1
        start, end = start % rank, end % rank
        if start == 0:
            raise NIRExportError(
                f"{_at(node)}: flattening dim 0 would merge time and batch; NIR flattens "
                "within one sample"
            )
        end_nir = -1 if end == rank - 1 else end - 1
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start - 1,
                           end_dim=end_nir)

    def neuron(self, node: fx.Node, module: nn.Module, arg: fx.Node,
               shape: tuple[int, ...]) -> None:
        name = self.name_for(node)
        if isinstance(module, CubaLIF):
            neuron = module.neuron
            nir_node = _cuba_node(name, module, self.dt, shape)
            meta = _neuron_meta(neuron, node.target)
            meta["wrapper"] = "CubaLIF"
        else:
            neuron = module.neuron if isinstance(module, GainLIF) else module
            gain, bias = (module.gain, module.bias) if isinstance(module, GainLIF) else (1.0, 0.0)
            nir_node = _lif_node(name, neuron, gain, bias, self.dt, shape)
            meta = _neuron_meta(neuron, node.target)
            if isinstance(module, GainLIF):
                meta["wrapper"] = "GainLIF"
        kw = neuron.kwargs
        if kw["reset"] in _RESET_NOTES:
            self.note(_RESET_NOTES[kw["reset"]], name)
        if neuron.v_init != 0.0:
            self.note("start from v_init != 0 (NIR starts at rest)", name)
        self.add(node, nir_node, meta, [arg])

    def function(self, node: fx.Node) -> None:
        target = node.target
        is_add = (node.op == "call_function" and target in _ADDS) or (
            node.op == "call_method" and target == "add")
        if is_add:
            self.residual_sum(node)
            return
        is_flatten = (node.op == "call_function" and target is torch.flatten) or (
            node.op == "call_method" and target == "flatten")
        if is_flatten:
            arg = node.args[0]
            args = list(node.args[1:])
            start = args[0] if args else node.kwargs.get("start_dim", 0)
            end = args[1] if len(args) > 1 else node.kwargs.get("end_dim", -1)
            nir_node = self.flatten(node, self.shapes[arg], start, end)
            self.add(node, nir_node, {"module": None}, [arg])
            return
        is_mul = (node.op == "call_function" and target in _MULS) or (
            node.op == "call_method" and target == "mul")
        if is_mul:
            self.scalar_scale(node)
            return
        what = getattr(target, "__name__", str(target))
        raise NIRExportError(
            f"{_at(node)}: {node.op} {what!r} has no NIR equivalent (NIR export covers "
            "modules, residual additions, flatten and multiplication by a number)"
        )

    def scalar_scale(self, node: fx.Node) -> None:
        """``x * c`` for a number ``c``: NIR's Scale with ``c`` (as float32, what torch multiplies
        a float32 tensor by) at every element."""
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        numbers = [a for a in node.args
                   if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(tensors) != 1 or len(numbers) != 1 or node.kwargs:
            raise NIRExportError(
                f"{_at(node)}: only a tensor times a number maps to NIR (a Scale node)"
            )
        arg = tensors[0]
        scale = np.full(self.shapes[arg], numbers[0], dtype=np.float32)
        self.add(node, nir.Scale(scale=scale), {"module": None}, [arg])

    def residual_sum(self, node: fx.Node) -> None:
        """``a + b`` as no node: its consumers get edges from both, and NIR sums a node's inputs.
        The importer adds them in edge order, left to right, so a left-nested chain
        ``(a + b) + c`` comes back with the same rounding; other nestings are refused."""
        operands = [a for a in node.args if isinstance(a, fx.Node)]
        if len(operands) != 2 or len(node.args) != 2 or node.kwargs:
            raise NIRExportError(
                f"{_at(node)}: only the sum of two tensors maps to NIR edges (no scalars, "
                "no alpha)"
            )
        left, right = (self.sources[a] for a in operands)
        if len(right) > 1 and len(left) == 1:
            left, right = right, left  # a + (b + c) == (b + c) + a, exactly
        if len(right) > 1:
            raise NIRExportError(
                f"{_at(node)}: a sum of two sums has no exact NIR form (the importer adds "
                "a node's inputs left to right)"
            )
        if set(left) & set(right):
            raise NIRExportError(
                f"{_at(node)}: adds {right[0]!r} to a sum that already holds it; NIR's "
                "edges (one per pair of nodes) cannot count it twice"
            )
        if self.shapes[operands[0]] != self.shapes[operands[1]]:
            raise NIRExportError(
                f"{_at(node)}: adds shapes {self.shapes[operands[0]]} and "
                f"{self.shapes[operands[1]]}; NIR sums inputs of one shape (no broadcasting)"
            )
        self.sources[node] = left + right


def to_nir(
    model: SpikingNetwork,
    path: str | Path | None = None,
    *,
    dt: float = 1.0,
    input_shape: Sequence[int],
) -> nir.NIRGraph:
    """Export ``model`` as a NIR graph, and write it to ``path`` (HDF5) when one is given.

    Args:
        model: a SpikingNetwork; its body is traced on a copy with BatchNorm folded (the model
            itself is not changed; the graph is its eval-mode network).
        path: where to write the ``.nir`` file, or None.
        dt: the duration of one time step in NIR's time units (sets ``tau`` and ``r``; see the
            module docstring). snnTorch and SpikingJelly read graphs with ``dt = 1e-4``, Norse
            with ``dt = 1e-3``: export with the dt the reader will use.
        input_shape: one sample's shape without the batch, e.g. ``(3, 32, 32)``.

    Returns:
        The graph: ``Input -> ... -> Output``, node names from the traced body, per-node metadata
        and graph metadata (``"neuro_emu"``: a JSON string) that :func:`neuro_emu.from_nir` reads.

    Warns:
        NIRExportWarning: once per export, listing by node what other tools will not read (reset
        modes, v_init, surrogates, T and the readout).

    Raises:
        TypeError: ``model`` is not a SpikingNetwork.
        ValueError: ``dt`` not finite and > 0, or ``input_shape`` not positive ints.
        NIRExportError: a layer or operation with no NIR form (the message names the node), or an
            ``input_shape`` the model cannot take.
    """
    _check_model(model)
    if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and math.isfinite(dt)
            and dt > 0):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    if (isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence)
            or not input_shape
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                       for s in input_shape)):
        raise ValueError(
            f"input_shape must be one sample's shape as positive ints (no batch), e.g. "
            f"(3, 32, 32); got {input_shape!r}"
        )
    dt = float(dt)
    folded = fold_batchnorm(model).cpu().eval()
    gm = folded.body
    param = next(gm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    recorder = _ShapeRecorder(gm)
    with torch.no_grad():
        recorder.run(torch.zeros((1, *input_shape), dtype=dtype))
    exporter = _Exporter(gm, recorder.shapes, dt)
    exporter.run()
    meta = {
        "format": FORMAT_VERSION,
        "generator": f"neuro_emu {__import__('neuro_emu').__version__}",
        "timesteps": model.timesteps,
        "dt": dt,
        "encoding": "repeat",
        "readout": "mean",
        "input_shape": list(input_shape),
    }
    try:
        graph = nir.NIRGraph(nodes=exporter.nodes, edges=exporter.edges,
                             metadata={META_KEY: json.dumps(meta)}, type_check=True)
    except (ValueError, AssertionError) as error:
        raise NIRExportError(f"NIR rejects the exported graph's types: {error}") from error
    neurons = [n for n, node in graph.nodes.items()
               if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF))]
    _warn_unread(exporter.notes, neurons, model.timesteps)
    if model.training and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                              for m in model.modules()):
        warnings.warn(
            "to_nir: the model is in training mode; the graph has BatchNorm folded with its "
            "running statistics, i.e. the eval-mode network", NIRExportWarning, stacklevel=2)
    if path is not None:
        try:
            nir.write(path, graph)
        except OSError as error:
            raise OSError(f"cannot write the NIR file {path}: {error}") from error
    return graph


def _names(nodes: list[str], limit: int = 6) -> str:
    shown = ", ".join(repr(n) for n in nodes[:limit])
    return shown + (f" and {len(nodes) - limit} more" if len(nodes) > limit else "")


def _warn_unread(notes: dict[str, list[str]], neurons: list[str], timesteps: int) -> None:
    lines = [f"- {what}: {_names(nodes)}" for what, nodes in notes.items()]
    if neurons:
        lines.append(f"- surrogate gradient and detach_reset (training only): {_names(neurons)}")
    lines.append(
        f"- the time loop: T = {timesteps} steps, the input repeated at every step and the "
        "output averaged over them (graph metadata); other tools step the graph themselves"
    )
    warnings.warn(
        "to_nir: metadata that only neuro_emu reads back; other NIR tools run these nodes "
        "differently:\n" + "\n".join(lines), NIRExportWarning, stacklevel=3)
