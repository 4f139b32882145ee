"""Import a NIR graph as an executable :class:`~neuro_emu.layers.SpikingNetwork`.

The graph becomes a torch.fx GraphModule on folded time ``[T * B, ...]``: torch layers for the
synapses (Conv2d, Affine/Linear, pooling, Flatten), :class:`~neuro_emu.layers.LIF` / ``IF``
neurons on any backend, and the modules of :mod:`neuro_emu.nir.modules` for what torch lacks. A
node with several incoming edges gets their sum, added in edge order. The time-constant mapping
inverts the exporter's (see :mod:`neuro_emu.nir.export`): with NIR's fields and a step ``dt``::

    LIF:      beta = 1 - dt / tau,  input gain = dt * r / tau,  constant input = dt * v_leak / tau
    IF:       beta = 1,             input gain = dt * r
    CubaLIF:  alpha = 1 - dt / tau_syn, synaptic gain = dt * w_in / tau_syn, then LIF's with tau_mem
    all:      v_th = the smallest float32 above v_threshold (NIR spikes on v > v_threshold, our
              neurons on h >= v_th), reset to v_reset

A gain that rounds to 1.0 in float32 and a zero constant input give a plain neuron; others a
:class:`~neuro_emu.nir.modules.GainLIF`. Graphs written by :func:`neuro_emu.to_nir` also carry
metadata (reset mode, v_init, surrogate, T, module names) that makes the round trip exact; it is
checked against the NIR fields, which win (with a warning) if a tool changed one without the other.
"""

from __future__ import annotations

import json
import keyword
import math
import numbers
import operator
import re
import warnings
from pathlib import Path

import h5py
import nir
import numpy as np
import torch
import torch.fx as fx
from nir.serialization import hdf2dict, try_byte_to_str
from torch import nn

from neuro_emu.layers import IF, LIF, SpikingNetwork
from neuro_emu.layers import Scale as ConverterScale
from neuro_emu.nir.export import FORMAT_VERSION, META_KEY
from neuro_emu.nir.modules import CubaLIF, GainLIF, Scale, SumPool2d
from neuro_emu.ops import BACKENDS
from neuro_emu.ops.surrogate import as_float32

DEFAULT_FOREIGN_DT = 1e-4  # snnTorch's and SpikingJelly's dt; Norse uses 1e-3
NODE_TYPES: tuple[str, ...] = tuple(
    name for name in nir.ir.__all__
    if isinstance(getattr(nir.ir, name), type) and issubclass(getattr(nir.ir, name), nir.NIRNode)
    and name != "NIRNode"
)
_UNSUPPORTED = {
    "LI": "a leaky integrator without spikes (a non-spiking readout)",
    "I": "an integrator without spikes",
    "Threshold": "a bare threshold without a membrane",
    "Delay": "a synaptic delay",
    "NIRGraph": "a nested graph (recurrent layers such as snnTorch's RLeaky export as one)",
}
_NEURONS = (nir.LIF, nir.IF, nir.CubaLIF)
_TARGET = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
# Names a submodule cannot take: it would shadow a GraphModule's own attribute (forward, training,
# graph, ...) or break its generated code (a keyword).
_RESERVED = frozenset(dir(fx.GraphModule(nn.Module(), fx.Graph()))) | frozenset(keyword.kwlist)


class NIRImportError(ValueError):
    """The file or graph is not NIR, is damaged, or holds something neuro_emu cannot run; the
    message names the node or the problem."""


class NIRImportWarning(UserWarning):
    """An import that ran on an assumption (dt) or chose NIR's fields over our metadata."""


def read_nir(path: str | Path) -> nir.NIRGraph:
    """Read a ``.nir`` (HDF5) file into a NIRGraph without running NIR's type inference, so that
    :func:`from_nir` can name the node at fault.

    Raises:
        FileNotFoundError: no file at ``path``.
        NIRImportError: not HDF5 (or truncated), no NIR graph in it, an unknown or malformed node.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no NIR file at {path}")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise NIRImportError(
            f"{path} is not a NIR file: HDF5 cannot open it ({error}). NIR files are the HDF5 "
            "that nir.write produces; a truncated copy fails like this too"
        ) from error
    with file:
        if "node" not in file:
            raise NIRImportError(
                f"{path} is an HDF5 file but not NIR: it has no 'node' group (it has "
                f"{sorted(file.keys())})"
            )
        try:
            data = hdf2dict(file["node"])
        except (OSError, KeyError, ValueError, RuntimeError) as error:
            raise NIRImportError(
                f"{path}: reading the graph failed ({type(error).__name__}: {error}); the file is "
                "damaged"
            ) from error
    return graph_from_dict(data, where=str(path))


def graph_from_dict(data: dict, where: str = "graph") -> nir.NIRGraph:
    """A NIRGraph from the dict that ``nir.serialization.hdf2dict`` reads, node by node.

    Raises:
        NIRImportError: the dict is not a NIR graph, or a node is unknown or malformed (named).
    """
    if not isinstance(data, dict) or try_byte_to_str(data.get("type")) != "NIRGraph":
        got = try_byte_to_str(data.get("type")) if isinstance(data, dict) else type(data).__name__
        raise NIRImportError(f"{where}: the top node must be a NIRGraph, got {got!r}")
    raw_nodes, raw_edges = data.get("nodes"), data.get("edges")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise NIRImportError(f"{where}: the graph has no nodes")
    if raw_edges is None:
        raise NIRImportError(f"{where}: the graph has no 'edges' entry")
    nodes = {str(name): _node_from_dict(str(name), raw) for name, raw in raw_nodes.items()}
    try:
        edges = [(str(try_byte_to_str(a)), str(try_byte_to_str(b))) for a, b in raw_edges]
    except (TypeError, ValueError) as error:
        raise NIRImportError(
            f"{where}: edges must be (source, target) name pairs: {error}"
        ) from error
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=False)


def _node_from_dict(name: str, raw: object) -> nir.NIRNode:
    if not isinstance(raw, dict) or "type" not in raw:
        raise NIRImportError(f"node {name!r} has no 'type' field: not a NIR node")
    kind = try_byte_to_str(raw["type"])
    if kind == "NIRGraph":
        raise NIRImportError(f"node {name!r}: {_UNSUPPORTED['NIRGraph']} is not supported")
    if kind not in NODE_TYPES:
        raise NIRImportError(
            f"node {name!r} has unknown NIR node type {kind!r} (nir {nir.version} knows "
            f"{', '.join(NODE_TYPES)})"
        )
    try:
        return nir.dict2NIRNode({**raw, "type": kind})
    except Exception as error:  # noqa: BLE001 - dataclass TypeError, AssertionError, KeyError...
        raise NIRImportError(
            f"node {name!r} ({kind}) is malformed: {type(error).__name__}: {error}"
        ) from error


def _np(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _meta(metadata: object, where: str) -> dict:
    """Our JSON metadata of a node or graph (empty for other tools' graphs)."""
    raw = metadata.get(META_KEY) if isinstance(metadata, dict) else None
    if raw is None:
        return {}
    try:
        value = json.loads(try_byte_to_str(raw))
    except (TypeError, ValueError) as error:
        raise NIRImportError(
            f"{where}: metadata '{META_KEY}' is not valid JSON: {error}"
        ) from error
    if not isinstance(value, dict):
        raise NIRImportError(f"{where}: metadata '{META_KEY}' must be a JSON object")
    return value


def _structure(graph: nir.NIRGraph) -> tuple[str, str, list[str], dict[str, list[str]]]:
    """Check the edges and return (input name, output name, topological order, inputs per node
    in edge order)."""
    names = list(graph.nodes)
    seen: set[tuple[str, str]] = set()
    incoming: dict[str, list[str]] = {n: [] for n in names}
    outgoing: dict[str, list[str]] = {n: [] for n in names}
    for edge in graph.edges:
        src, dst = edge
        for end in (src, dst):
            if end not in graph.nodes:
                raise NIRImportError(
                    f"edge ({src!r}, {dst!r}) names node {end!r}, which the graph does not have "
                    f"(nodes: {', '.join(names)})"
                )
        if (src, dst) in seen:
            raise NIRImportError(f"edge ({src!r}, {dst!r}) appears twice")
        if src == dst:
            raise NIRImportError(
                f"node {src!r} feeds itself: recurrent graphs are not supported (neuro_emu runs "
                "feed-forward graphs)"
            )
        seen.add((src, dst))
        incoming[dst].append(src)
        outgoing[src].append(dst)
    inputs = [n for n in names if isinstance(graph.nodes[n], nir.Input)]
    outputs = [n for n in names if isinstance(graph.nodes[n], nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRImportError(
            f"the graph has {len(inputs)} Input node(s) {inputs} and {len(outputs)} Output "
            f"node(s) {outputs}; neuro_emu runs graphs with exactly one of each"
        )
    source, sink = inputs[0], outputs[0]
    if incoming[source]:
        raise NIRImportError(f"Input node {source!r} has incoming edges from {incoming[source]}")
    if outgoing[sink]:
        raise NIRImportError(f"Output node {sink!r} has outgoing edges to {outgoing[sink]}")
    for name in names:
        if name != source and not incoming[name]:
            raise NIRImportError(f"node {name!r} has no incoming edge: nothing feeds it")
        if name != sink and not outgoing[name]:
            raise NIRImportError(f"node {name!r} has no outgoing edge: its output goes nowhere")
    order, pending = [], {n: len(incoming[n]) for n in names}
    ready = [source]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for dst in outgoing[name]:
            pending[dst] -= 1
            if pending[dst] == 0:
                ready.append(dst)
    if len(order) != len(names):
        cycle = [n for n in names if n not in order]
        raise NIRImportError(
            f"nodes {cycle} lie on a cycle: recurrent graphs are not supported (neuro_emu runs "
            "feed-forward graphs)"
        )
    return source, sink, order, incoming


def _shape_of(value, what: str) -> tuple[int, ...]:
    if value is None:
        raise NIRImportError(f"{what} has no shape")
    arr = _np(value)
    if arr.ndim != 1 or not all(float(s).is_integer() and s > 0 for s in arr):
        raise NIRImportError(f"{what} has shape {arr.tolist()}, not a list of positive sizes")
    return tuple(int(s) for s in arr)


def _ints(value, count: int, name: str, field: str) -> tuple[int, ...]:
    arr = np.atleast_1d(_np(value))
    if arr.size == 1:
        arr = np.repeat(arr, count)
    if arr.shape != (count,) or not all(float(v).is_integer() for v in arr):
        raise NIRImportError(f"node {name!r}: {field} must be {count} ints, got {arr.tolist()}")
    return tuple(int(v) for v in arr)


def _tensor(value) -> torch.Tensor:
    return torch.tensor(_np(value), dtype=torch.float32)


def _uniform(name: str, node: nir.NIRNode, field: str, shape: tuple[int, ...]) -> float:
    """The one value of a neuron parameter array (our neurons take one per layer)."""
    arr = _np(getattr(node, field)).astype(np.float64)
    if arr.size == 0:
        raise NIRImportError(f"node {name!r}: {field} is empty")
    if arr.size != 1 and tuple(arr.shape) != shape:
        raise NIRImportError(
            f"node {name!r}: {field} has shape {tuple(arr.shape)}, but the node's input has "
            f"shape {shape}"
        )
    values = np.unique(arr)
    if values.size != 1:
        raise NIRImportError(
            f"node {name!r}: {field} differs between neurons ({values.min()} to {values.max()}); "
            "neuro_emu's neuron layers take one value per layer"
        )
    value = float(values[0])
    if not math.isfinite(value):
        raise NIRImportError(f"node {name!r}: {field} = {value} is not finite")
    return value


def _threshold_above(value: float) -> float:
    """The smallest float32 above ``value``: our ``h >= it`` is NIR's ``v > value``."""
    f = np.float32(value)
    if float(f) <= value:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def _decay(name: str, field: str, tau: float, dt: float) -> float:
    if not tau >= dt:
        raise NIRImportError(
            f"node {name!r}: {field} = {tau} is below dt = {dt}, so a forward-Euler step "
            f"overshoots (decay 1 - dt/{field} < 0); import with a smaller dt"
        )
    return 1.0 - dt / tau


class _Builder:
    """Makes one module per node, checking shapes along the edges."""

    def __init__(self, dt: float, backend: str) -> None:
        self.dt, self.backend = dt, backend

    def neuron(self, name: str, node: nir.NIRNode, shape: tuple[int, ...],
               meta: dict) -> nn.Module:
        get = lambda field: _uniform(name, node, field, shape)  # noqa: E731
        dt = self.dt
        if isinstance(node, nir.IF):
            beta, gain, bias, cls = 1.0, dt * get("r"), 0.0, IF
        else:
            tau = get("tau") if isinstance(node, nir.LIF) else get("tau_mem")
            field = "tau" if isinstance(node, nir.LIF) else "tau_mem"
            beta = _decay(name, field, tau, dt)
            gain, bias, cls = dt * get("r") / tau, dt * get("v_leak") / tau, LIF
        gain, bias = as_float32(gain), as_float32(bias)
        derived = {"beta": beta, "v_th": _threshold_above(get("v_threshold")),
                   "v_reset": get("v_reset")}
        kwargs = {"reset": "zero", "v_init": 0.0, **derived}
        ours = meta.get("neuron")
        if isinstance(ours, dict):
            kwargs.update(self._ours(name, ours, derived))
        if isinstance(ours, dict) and ours.get("class") in ("IF", "LIF"):
            cls = IF if ours["class"] == "IF" else LIF
        try:
            if cls is IF and kwargs["beta"] == 1.0:
                kwargs.pop("beta")
                neuron = IF(**kwargs, backend=self.backend, step_mode="folded")
            else:
                neuron = LIF(**kwargs, backend=self.backend, step_mode="folded")
        except (TypeError, ValueError) as error:
            raise NIRImportError(f"node {name!r}: {error}") from error
        if isinstance(node, nir.CubaLIF):
            alpha = as_float32(_decay(name, "tau_syn", get("tau_syn"), dt))
            syn_gain = as_float32(dt * get("w_in") / get("tau_syn"))
            return CubaLIF(neuron, alpha, syn_gain, gain, bias)
        if gain != 1.0 or bias != 0.0:
            return GainLIF(neuron, gain, bias)
        return neuron

    @staticmethod
    def _ours(name: str, ours: dict, derived: dict) -> dict:
        """Our metadata's exact values where they agree with the NIR fields, plus what NIR has no
        field for. The NIR fields win a disagreement."""
        known = ("v_th", "reset", "v_reset", "v_init", "surrogate", "alpha", "detach_reset", "beta")
        values = {k: ours[k] for k in known if k in ours}
        reset = values.get("reset", "zero")
        checks = [("beta", derived["beta"]), ("v_th", derived["v_th"])]
        if reset in ("zero", "hard"):
            checks.append(("v_reset", derived["v_reset"]))
        for key, value in checks:
            mine = values.get(key)
            if not isinstance(mine, (int, float)) or as_float32(mine) != as_float32(value):
                warnings.warn(
                    f"node {name!r}: the NIR fields give {key} = {value}, its neuro_emu metadata "
                    f"{mine!r}; using the NIR fields (was the file edited by another tool?)",
                    NIRImportWarning, stacklevel=4)
                values[key] = value
        if values.get("reset") not in ("zero", "hard"):
            values.setdefault("v_reset", derived["v_reset"])
        return values

    def layer(self, name: str, node: nir.NIRNode, shape: tuple[int, ...],
              meta: dict) -> nn.Module:
        if isinstance(node, (nir.Affine, nir.Linear)):
            weight = _np(node.weight)
            if weight.ndim != 2:
                raise NIRImportError(
                    f"node {name!r}: weight of shape {weight.shape}; only 2-d weights are supported"
                )
            has_bias = isinstance(node, nir.Affine)
            module = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
            module.weight = nn.Parameter(_tensor(weight))
            if has_bias:
                module.bias = nn.Parameter(_tensor(node.bias).reshape(weight.shape[0]))
            if has_bias and meta.get("bias") is False and not module.bias.any():
                module.bias = None
            return module
        if isinstance(node, (nir.Conv1d, nir.Conv2d)):
            return self.conv(name, node, meta)
        if isinstance(node, nir.AvgPool2d):
            if meta.get("torch") == "AdaptiveAvgPool2d":
                return nn.AdaptiveAvgPool2d(tuple(meta["output_size"]))
            return nn.AvgPool2d(_ints(node.kernel_size, 2, name, "kernel_size"),
                                _ints(node.stride, 2, name, "stride"),
                                _ints(node.padding, 2, name, "padding"),
                                count_include_pad=bool(meta.get("count_include_pad", True)))
        if isinstance(node, nir.SumPool2d):
            return SumPool2d(_ints(node.kernel_size, 2, name, "kernel_size"),
                             _ints(node.stride, 2, name, "stride"),
                             _ints(node.padding, 2, name, "padding"))
        if isinstance(node, nir.Flatten):
            start, end = int(node.start_dim), int(node.end_dim)
            return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
        if isinstance(node, nir.Scale):
            return _scale(node, shape, meta)
        kind = type(node).__name__
        why = _UNSUPPORTED.get(kind, "a node type the importer does not map")
        raise NIRImportError(f"node {name!r}: NIR {kind} ({why}) is not supported by neuro_emu")

    def conv(self, name: str, node: nir.NIRNode, meta: dict) -> nn.Module:
        weight = _np(node.weight)
        dims = 2 if isinstance(node, nir.Conv2d) else 1
        if weight.ndim != dims + 2:
            raise NIRImportError(
                f"node {name!r}: {type(node).__name__} weight of shape {weight.shape}, expected "
                f"{dims + 2} dims"
            )
        groups = int(_np(node.groups))
        padding = node.padding
        if isinstance(padding, (str, bytes)):
            padding = try_byte_to_str(padding)
        else:
            padding = _ints(padding, dims, name, "padding")
        cls = nn.Conv2d if dims == 2 else nn.Conv1d
        module = cls(weight.shape[1] * groups, weight.shape[0], weight.shape[2:],
                     stride=_ints(node.stride, dims, name, "stride"), padding=padding,
                     dilation=_ints(node.dilation, dims, name, "dilation"), groups=groups,
                     bias=True)
        module.weight = nn.Parameter(_tensor(weight))
        bias = _tensor(node.bias).reshape(weight.shape[0])
        module.bias = nn.Parameter(bias)
        if meta.get("bias") is False and not bias.any():
            module.bias = None
        return module


def _scale(node: nir.Scale, shape: tuple[int, ...], meta: dict) -> nn.Module:
    """NIR's Scale as our full-shape :class:`~neuro_emu.nir.modules.Scale`, or, for a graph from
    a converted network, the converter's ``neuro_emu.layers.Scale`` again (when its factor gives
    the node's values exactly)."""
    scale = _tensor(node.scale)
    if meta.get("torch") == "neuro_emu.layers.Scale":
        try:
            module = ConverterScale(torch.tensor(meta["factor"], dtype=torch.float32))
            with torch.no_grad():
                same = torch.equal(module(torch.ones((1, *shape)))[0], scale.expand(shape))
        except (KeyError, TypeError, ValueError, RuntimeError):
            same = False
        if same:
            return module
    return Scale(scale)


def _check_declared(name: str, node: nir.NIRNode, attr: str, shape: tuple[int, ...],
                    source: str) -> None:
    declared = getattr(node, attr, None)
    value = next(iter(declared.values()), None) if isinstance(declared, dict) else None
    if value is None or isinstance(node, _NEURONS):
        return
    arr = _np(value)
    if arr.size and tuple(int(s) for s in arr.reshape(-1)) != shape:
        hint = (" (an Input shape with the batch dimension? NIR shapes exclude the batch)"
                if source == "input" else "")
        what = "takes input of shape" if attr == "input_type" else "declares output shape"
        raise NIRImportError(
            f"node {name!r} {what} {tuple(arr.reshape(-1).tolist())}, but {source} gives "
            f"{shape}{hint}"
        )


def _targets(graph: nir.NIRGraph, order: list[str], metas: dict[str, dict]) -> dict[str, str]:
    """Module names: ours from the metadata (so parameter names match the exported model's),
    others from the node names made into identifiers; a part of either that is reserved
    (``forward``, ``training``, a keyword) gets ``_`` appended."""
    wanted = {}
    for name in order:
        target = metas[name].get("module")
        wanted[name] = target if isinstance(target, str) and _TARGET.match(target) else None
    chosen = [t for t in wanted.values() if t]
    clash = any(a != b and b.startswith(a + ".") for a in chosen for b in chosen)
    result = {}
    for name in order:
        target = None if clash else wanted[name]
        if target is None:
            target = re.sub(r"\W", "_", name)
            if not target or target[0].isdigit():
                target = "n_" + target
        result[name] = ".".join(_unreserved(part) for part in target.split("."))
    return result


def _unreserved(part: str) -> str:
    while part in _RESERVED:
        part += "_"
    return part


def _check_backend(backend: str) -> None:
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")


def from_nir(
    source: str | Path | nir.NIRGraph,
    backend: str = "auto",
    *,
    timesteps: int | None = None,
    dt: float | None = None,
) -> SpikingNetwork:
    """Build an executable network from a NIR graph or ``.nir`` file.

    Args:
        source: a path to a ``.nir`` file or a ``nir.NIRGraph``.
        backend: the neurons' backend: "auto", "torch", "numba" or "triton".
        timesteps: T; default the graph's (graphs from :func:`neuro_emu.to_nir` carry it).
        dt: the step NIR's time constants are divided by (see the module docstring); default the
            graph's, or 1e-4 (snnTorch's and SpikingJelly's, with a warning) for other tools'
            graphs. Norse writes with ``dt = 1e-3``.

    Returns:
        A :class:`~neuro_emu.layers.SpikingNetwork` in eval mode: ``x: [B, *input] -> [B, *out]``,
        the mean over T of the output node's value with the input repeated at each step. Its
        ``body`` is a torch.fx GraphModule on folded ``[T * B, ...]`` tensors, so any per-step
        input can be run through ``body`` directly.

    Raises:
        FileNotFoundError: no file at ``source``.
        NIRImportError: not a NIR file, a truncated or malformed one, an unknown or unsupported
            node type, per-neuron parameters that differ, inconsistent shapes or edges, a cycle:
            each message names the node or the problem.
        ValueError: no timesteps in the graph or the arguments, timesteps not an int >= 1, or an
            unknown backend.
    """
    _check_backend(backend)
    if isinstance(source, (str, Path)):
        graph = read_nir(source)
    elif isinstance(source, nir.NIRGraph):
        graph = source
        for name, node in graph.nodes.items():
            kind = type(node).__name__
            if kind == "NIRGraph":
                raise NIRImportError(f"node {name!r}: {_UNSUPPORTED['NIRGraph']} is not supported")
            if kind not in NODE_TYPES:
                raise NIRImportError(f"node {name!r} has unknown NIR node type {kind!r}")
    else:
        raise TypeError(f"source must be a path or a nir.NIRGraph, got {type(source).__name__}")
    graph_meta = _meta(graph.metadata, "graph")
    version = graph_meta.get("format", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise NIRImportError(
            f"the graph was written in neuro_emu NIR format {version!r}, which this version "
            f"does not read (it reads up to {FORMAT_VERSION}): upgrade neuro_emu"
        )
    if dt is None:
        dt = graph_meta.get("dt")
        if dt is None:
            dt = DEFAULT_FOREIGN_DT
            warnings.warn(
                f"from_nir: the graph carries no dt (not written by neuro_emu); assuming dt = "
                f"{dt} (snnTorch's and SpikingJelly's; Norse's is 1e-3): pass dt= to choose",
                NIRImportWarning, stacklevel=2)
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    steps = timesteps if timesteps is not None else graph_meta.get("timesteps")
    if steps is None:
        raise ValueError(
            "the graph carries no timesteps (it was not written by neuro_emu): pass timesteps=T"
        )
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        where = "timesteps" if timesteps is not None else "the graph's timesteps"
        raise ValueError(f"{where} must be an int >= 1, got {steps!r}")
    source_name, sink, order, incoming = _structure(graph)
    metas = {n: _meta(graph.nodes[n].metadata, f"node {n!r}") for n in order}
    targets = _targets(graph, order, metas)
    builder = _Builder(float(dt), backend)

    fx_graph = fx.Graph()
    values = {source_name: fx_graph.placeholder("x")}
    shapes = {source_name: _shape_of(graph.nodes[source_name].input_type.get("input"),
                                      f"Input node {source_name!r}")}
    modules: dict[str, nn.Module] = {}
    for name in order[1:]:
        node = graph.nodes[name]
        feeds = incoming[name]
        in_shapes = {src: shapes[src] for src in feeds}
        if len(set(in_shapes.values())) > 1:
            listing = ", ".join(f"{s!r} gives {v}" for s, v in in_shapes.items())
            raise NIRImportError(f"node {name!r} sums inputs of different shapes: {listing}")
        shape = in_shapes[feeds[0]]
        source_text = repr(feeds[0]) if len(feeds) == 1 else "the sum of its inputs"
        _check_declared(name, node, "input_type", shape, source_text)
        acc = values[feeds[0]]
        for src in feeds[1:]:
            acc = fx_graph.call_function(operator.add, (acc, values[src]))
        if isinstance(node, nir.Output):
            _check_declared(name, node, "output_type", shape, source_text)
            fx_graph.output(acc)
            continue
        try:
            if isinstance(node, _NEURONS):
                module = builder.neuron(name, node, shape, metas[name])
            else:
                module = builder.layer(name, node, shape, metas[name])
        except NIRImportError:
            raise
        except (TypeError, ValueError, RuntimeError, KeyError) as error:
            raise NIRImportError(
                f"node {name!r} ({type(node).__name__}): {type(error).__name__}: {error}"
            ) from error
        if isinstance(node, _NEURONS):
            out_shape = shape
        else:
            try:
                with torch.no_grad():
                    out_shape = tuple(module(torch.zeros((1, *shape))).shape[1:])
            except Exception as error:  # noqa: BLE001 - torch's shape errors, named here
                raise NIRImportError(
                    f"node {name!r} ({type(node).__name__}) cannot take input of shape {shape} "
                    f"from {source_text}: {error}"
                ) from error
            _check_declared(name, node, "output_type", out_shape, "its own parameters")
        target = targets[name]
        if target in modules:
            existing = modules[target]
            same = (type(existing) is type(module) and isinstance(module, LIF)
                    and repr(existing) == repr(module))
            if not same:
                suffix = 1
                while f"{target}_{suffix}" in modules:
                    suffix += 1
                target = f"{target}_{suffix}"
                modules[target] = module
        else:
            modules[target] = module
        values[name] = fx_graph.call_module(target, (acc,))
        shapes[name] = out_shape
    fx_graph.lint()
    body = fx.GraphModule(modules, fx_graph, "NIRGraph")
    return SpikingNetwork(body, int(steps)).eval()
