"""Whole float spiking networks on the bit-accurate Loihi emulator: fold, quantize, run, report.

Three stages, each usable on its own:

1. :func:`fold_network` turns a :class:`~neuro_emu.layers.SpikingNetwork` (converted: IF + Scale,
   BatchNorm already folded; or directly trained: Conv/Linear + BatchNorm + LIF) into a
   :class:`FloatPlan` in float64: one :class:`FloatLayer` per neuron call site plus a readout
   layer, each fed by synapses (one Conv or Dense per source). BatchNorm is folded into the conv /
   linear before it (:mod:`neuro_emu.convert.batchnorm`). Loihi has no neuron for average pooling,
   flatten or Scale, so they are folded exactly into the next synapse:
   ``Scale(c)`` multiplies the weights of the input (or output) channel ``c``; ``AvgPool2d(k)``
   (kernel = stride, no padding, sizes divisible by k) then ``Conv(K, s, p)`` is one conv with
   kernel ``K * k``, stride ``s * k``, padding ``p * k`` and weights ``w[a // k, b // k] / k^2``;
   pooling / flatten / scale before a Linear are folded by the adjoint (the expanded matrix
   ``W' = P^T W``, taken with autograd on the linear prefix); a pool or scale alone (the ResNet
   identity shortcut) becomes a depthwise conv. Residual additions are two synapses into one
   neuron layer. What cannot be folded (max-pooling, a pool after a conv before its neuron, two
   conv/linear without a neuron between) raises a TypeError naming the fx node.
2. :func:`quantize_network` maps the plan to integer :class:`LoihiLayer` s (see below) and a
   :class:`QuantizationReport` of what it cost.
3. :class:`LoihiNetwork` (an ``nn.Module``; what ``compile(net, target="loihi2_sim")`` returns)
   runs images through the integer layers with :func:`neuro_emu.ops.loihi_lif.loihi_lif`,
   :func:`~neuro_emu.ops.loihi_lif.dense_input` and :func:`neuro_emu.ops.loihi_conv.conv_input`
   (Lava's Dense weight handling on conv connectivity), and counts saturations, spikes and
   synaptic operations while it runs.

Numerics of one hidden layer (``../shared/loihi2_spec.md``), with ``s`` the layer's scale
(integer membrane units per float unit)::

    W_int = round_to_grid(W * s / 64 / 2^weight_exp)  # per synapse; max |W_int| = 254 (mixed) /
                                                      # 255, the grid Lava's truncation keeps
    du = 4095  (u = a_in << 6 every step: the float neuron has no synaptic current)
    dv = round((1 - beta) * 4096)   (IF: 0)
    vth = round(v_th * s / 64)      bias = bias_mant << bias_exp ~= b * s
    v0 = round(v_init * s)

``s`` is the largest scale for which the layer provably neither wraps ``u`` nor saturates ``v``
upward: ``s * (v_th + max_o (sum_i |W_oi| * max input_i + |b_o|)) <= 2^23 - 1``, also keeping
``vth`` within 17 bits and the bias within ``4095 << 7``; then rounded down so that one weight
exponent puts the largest weight exactly on the top of the 8-bit range.

Choices and what they cost (measured by :func:`evaluate_accuracy`, never hidden):

- **Input encoding**: the analog image enters as graded spikes (``num_message_bits = 8``): every
  step, every pixel sends ``clamp(round(x * 127 / input_range), -127, 127)``. Values beyond
  ``input_range`` are clipped and counted. Signed payloads are what Lava's Dense model computes
  (``W @ s``); that Loihi 2 silicon carries signed 8-bit payloads is our reading of "graded
  spikes" (its brief gives up to 32-bit integer payloads), not a verified fact.
- **Reset**: Loihi resets ``v`` to 0; converted IF networks subtract the threshold (soft reset),
  and the directly trained LIF networks of this project too. The mapping keeps Loihi's hard reset
  and reports the gap: :func:`evaluate_accuracy` measures the float network as given, the same
  float network with a hard reset (the reset's share of the loss) and the integer one. Threshold
  comparison differs by one LSB (Loihi ``v > vth << 6``, float ``h >= v_th``).
- **Delays**: every Dense/Conv delivers one step later (Lava). A layer at depth ``d`` (longest
  synapse path from the input) sees the float network's step ``t`` at step ``t + d``. A synapse
  that skips layers (a residual shortcut) gets ``depth(target) - 1 - depth(source)`` extra steps
  of axonal delay so both branches of a sum line up (Loihi supports synaptic delays, Davies et al.
  2018; Lava's plain Dense has none: this is the one place where we go beyond Lava's models).
  The input is presented for the first ``T`` steps, and the network runs ``T + D`` steps, ``D``
  the readout's depth. Before its input arrives a layer integrates its bias alone for ``depth``
  steps; its initial voltage is set to cancel them (:func:`_compensated_v0`), and where it
  cannot (a negative bias that would fire the neuron on the way) the report counts the neurons
  and the run counts the ``early_spikes``.
- **Readout**: the last synapses (the classifier) feed a non-spiking integrator layer
  (``du = 4095``, ``dv = 0``, ``vth`` at its 17-bit maximum, scaled so that ``T + D`` steps of
  worst-case input cannot reach it). The output is ``(v[T + D - 1] - v[D - 1]) / (s * T)``: the
  readout's membrane at the last step minus its value just before the first aligned step (the
  bias-only steps), i.e. the float network's mean output over its T steps. Two reads of the
  readout membrane and one subtraction happen off-chip.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from neuro_emu.convert.batchnorm import fold_graph
from neuro_emu.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from neuro_emu.layers import LIF, Scale, SpikingNetwork
from neuro_emu.loihi import lava_weights
from neuro_emu.ops.loihi_conv import conv_input
from neuro_emu.ops.loihi_lif import (
    WEIGHT_EXP_RANGE,
    check_int_param,
    dense_input,
    loihi_lif,
    wrap_int32,
)

# Hardware ranges (loihi2_spec.md section 1: Lava's declared precisions).
UV_MAX = 2**23 - 1  # |v| saturates here; u wraps past 2^23
VTH_MAX = 2**17 - 1  # vth: 17-bit, compared as vth << 6
BIAS_MANT_RANGE = (-4096, 4095)  # 13-bit signed
BIAS_EXP_RANGE = (0, 7)  # Lava's documented range
DU_RANGE = (-1, 4095)
DV_RANGE = (0, 4095)
WEIGHT_RANGE = (-256, 255)  # what Lava's 8-bit clip keeps
A_IN_LIMIT = 2**25  # Lava shifts a_in << 6 in int32: beyond this it overflows
INPUT_BITS = 8  # graded payload of the first layer
INPUT_MAX = 2 ** (INPUT_BITS - 1) - 1
# |x| bound of CIFAR-10 images normalised as neuro_emu.data does: ((0 or 1) - mean) / std.
CIFAR10_INPUT_RANGE = max(max(m, 1 - m) / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD,
                                                              strict=True))


def _check_range(name: str, value, low: int, high: int) -> None:
    """Raise ``ValueError`` naming ``name``, its range and the offending value(s)."""
    t = torch.as_tensor(value)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer, got {t.dtype}")
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        raise ValueError(f"{name} must lie in [{low}, {high}] (Loihi's range), got {bad}")


@dataclass
class FloatSynapse:
    """One projection in float64: ``x_target += op(x_source)``.

    ``kind`` "dense": ``weight [n_out, n_in]``; "conv": ``weight [C_out, C_in / groups, KH, KW]``
    with ``stride``, ``padding``, ``groups``. ``source`` is a layer index or -1 (the image).
    """

    source: int
    kind: str
    weight: torch.Tensor
    stride: int = 1
    padding: int = 0
    groups: int = 1
    delay: int = 0  # extra steps beyond the Dense/Conv one, to line up residual branches

    def apply(self, x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``x: [N, *source shape] -> [N, *target shape]`` (no bias), in ``dtype``."""
        w = self.weight.to(dtype)
        if self.kind == "dense":
            return x.flatten(1).to(dtype) @ w.T
        return F.conv2d(x.to(dtype), w, None, self.stride, self.padding, 1, self.groups)


@dataclass
class FloatLayer:
    """A neuron layer of the plan: ``x[t] = sum_p synapse_p(s_p[t]) + bias``, then the neuron."""

    name: str
    shape: tuple[int, ...]
    synapses: list[FloatSynapse]
    bias: torch.Tensor  # [*shape] float64: per neuron (a conv's bias map is exact at borders)
    beta: float = 1.0
    v_th: float = 1.0
    v_init: float = 0.0
    reset: str = "subtract"
    readout: bool = False
    depth: int = 0

    @property
    def neurons(self) -> int:
        return math.prod(self.shape)


@dataclass
class FloatPlan:
    """The network as neuron layers in topological order; the last is the readout."""

    input_shape: tuple[int, ...]
    layers: list[FloatLayer]

    def forward(self, x: torch.Tensor, timesteps: int, reset: str | None = None,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Run the plan like the float network (no delays): ``x: [B, *input_shape] -> [B, K]``,
        the readout's mean over ``timesteps``, in ``dtype`` (float64: the exactness reference;
        float32 is faster). ``reset`` overrides every layer's."""
        x = x.to(dtype)
        spikes: dict[int, torch.Tensor] = {-1: x.unsqueeze(0).expand(timesteps, *x.shape)}
        out = None
        for index, layer in enumerate(self.layers):
            current = layer.bias.to(dtype).expand(timesteps, x.shape[0], *layer.shape).clone()
            for syn in layer.synapses:
                src = spikes[syn.source].flatten(0, 1)
                current += syn.apply(src, dtype).reshape(current.shape)
            if layer.readout:
                out = current.mean(0)
                break
            spikes[index] = _float_neuron(current, layer, reset or layer.reset)
        return out


def _float_neuron(x: torch.Tensor, layer: FloatLayer, reset: str) -> torch.Tensor:
    """The float LIF (DESIGN.md section 2) in x's dtype: ``x: [T, ...] -> spikes [T, ...]``."""
    v = torch.full(x.shape[1:], layer.v_init, dtype=x.dtype)
    out = []
    for x_t in x:
        h = v * layer.beta + x_t
        s = h >= layer.v_th
        v = torch.where(s, h - layer.v_th, h) if reset == "subtract" else torch.where(s, 0.0, h)
        out.append(s.to(x.dtype))
    return torch.stack(out)


@dataclass
class _Op:
    kind: str  # "scale", "pool", "flatten", "conv", "linear"
    in_shape: tuple[int, ...]
    module: nn.Module | None = None
    factor: torch.Tensor | None = None
    k: int = 1


@dataclass
class _Affine:
    """A graph value: ``sum_terms ops(source) + bias``, every term's ops from its source on."""

    terms: list[tuple[int, list[_Op]]]
    bias: torch.Tensor  # [1, *shape] float64

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.bias.shape[1:])

    def then(self, op: _Op, bias: torch.Tensor) -> _Affine:
        return _Affine([(src, [*ops, op]) for src, ops in self.terms], bias)


class _LeafTracer(fx.Tracer):
    """fx tracing that keeps neurons and Scale as single call sites."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (LIF, Scale)) or super().is_leaf_module(m, qualname)


def _trace(body: nn.Module) -> fx.GraphModule:
    if isinstance(body, fx.GraphModule):
        return copy.deepcopy(body)
    body = copy.deepcopy(body)
    return fx.GraphModule(body, _LeafTracer().trace(body))


def _refuse(node: fx.Node, why: str) -> TypeError:
    where = f" (module {node.target!r})" if node.op == "call_module" else ""
    return TypeError(f"cannot map node {node.name!r}{where} onto Loihi: {why}")


def _pool_size(module_or_args, shape: tuple[int, ...], node: fx.Node) -> int:
    """The k of an average pooling that folds exactly (kernel = stride = k, no padding, k
    divides H and W), from an AvgPool2d / AdaptiveAvgPool2d module."""
    if len(shape) != 3:
        raise _refuse(node, f"average pooling needs a [C, H, W] input, got {shape}")
    m = module_or_args
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
        if None in size or shape[1] % size[0] or shape[2] % size[1] or \
                shape[1] // size[0] != shape[2] // size[1]:
            raise _refuse(node, f"adaptive pooling {shape[1:]} -> {size} is not a square "
                                "k x k average with k dividing the input")
        return shape[1] // size[0]
    k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
    stride = m.stride if m.stride is not None else k
    stride = stride if isinstance(stride, int) else stride[0]
    padding = m.padding if isinstance(m.padding, int) else m.padding[0]
    square = m.kernel_size if not isinstance(m.kernel_size, int) else (k, k)
    if stride != k or padding or square[0] != square[1] or shape[1] % k or shape[2] % k:
        raise _refuse(node, f"average pooling folds into the next synapse only with kernel = "
                            f"stride, no padding and sizes divisible by the kernel "
                            f"({m}, input {shape})")
    return k


def fold_network(snn: SpikingNetwork, input_shape: tuple[int, ...] = (3, 32, 32)) -> FloatPlan:
    """The :class:`FloatPlan` of ``snn`` (see the module docstring): neuron layers fed by
    folded synapses, exact in float64.

    Raises:
        TypeError: a node with no Loihi counterpart (named), or ``snn`` not a SpikingNetwork.
        ValueError: a neuron Loihi cannot express (no reset, a nonzero reset value).
    """
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"fold_network takes a SpikingNetwork, got {type(snn).__name__}")

    def unfoldable(node: fx.Node, reason: str) -> None:
        raise _refuse(node, reason)

    gm = fold_graph(_trace(snn.body), unfoldable)
    modules = dict(gm.named_modules())
    env: dict[str, object] = {}
    layers: list[FloatLayer] = []

    def value(arg) -> _Affine:
        v = env[arg.name] if isinstance(arg, fx.Node) else arg
        if not isinstance(v, _Affine):
            raise TypeError(f"expected a tensor value, got {arg!r}")
        return v

    def linear_op(node: fx.Node, x: _Affine, kind: str, **kw) -> _Affine:
        b = x.bias
        op = _Op(kind, x.shape, **kw)
        if kind == "scale":
            f = op.factor
            nb = b * (f.view(-1, *([1] * (b.dim() - 2))) if f.dim() else f)
        elif kind == "pool":
            nb = F.avg_pool2d(b, op.k)
        elif kind == "flatten":
            nb = b.flatten(1)
        elif kind == "conv":
            m = op.module
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise _refuse(node, "only zero padding given as integers is supported")
            nb = F.conv2d(b, m.weight.detach().double(), None, m.stride, m.padding,
                          m.dilation, m.groups)
            if m.bias is not None:
                nb = nb + m.bias.detach().double().view(1, -1, 1, 1)
        else:
            m = op.module
            if b.dim() != 2:
                raise _refuse(node, f"Linear needs a flattened input, got {x.shape}")
            nb = b @ m.weight.detach().double().T
            if m.bias is not None:
                nb = nb + m.bias.detach().double()
        return x.then(op, nb)

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = _Affine([(-1, [])], torch.zeros(1, *input_shape, dtype=torch.float64))
        elif node.op == "output":
            out = value(node.args[0])
            layers.append(_make_layer(node, "readout", out, layers, readout=True))
        elif node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, LIF):
                layer = _make_layer(node, node.target, value(node.args[0]), layers, neuron=m)
                layers.append(layer)
                index = len(layers) - 1
                env[node.name] = _Affine([(index, [])],
                                         torch.zeros(1, *layer.shape, dtype=torch.float64))
                continue
            x = value(node.args[0])
            if isinstance(m, (nn.Identity, nn.Dropout)):
                env[node.name] = x
            elif isinstance(m, Scale):
                env[node.name] = linear_op(node, x, "scale", factor=m.factor.detach().double())
            elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                env[node.name] = linear_op(node, x, "pool", k=_pool_size(m, x.shape, node))
            elif isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    raise _refuse(node, "only Flatten(1, -1) is supported")
                env[node.name] = linear_op(node, x, "flatten")
            elif isinstance(m, nn.Conv2d):
                env[node.name] = linear_op(node, x, "conv", module=m)
            elif isinstance(m, nn.Linear):
                env[node.name] = linear_op(node, x, "linear", module=m)
            else:
                raise _refuse(node, f"{type(m).__name__} has no Loihi counterpart (max-pooling "
                                    "and non-linearities other than the neurons cannot be "
                                    "folded into synapses)")
        elif node.op == "call_function":
            if node.target in (operator.add, torch.add, operator.iadd):
                a, b = (value(arg) for arg in node.args[:2])
                if a.shape != b.shape:
                    raise _refuse(node, f"adds {a.shape} and {b.shape}")
                env[node.name] = _Affine(a.terms + b.terms, a.bias + b.bias)
            elif node.target is torch.flatten and tuple(node.args[1:]) in ((1,), (1, -1)):
                env[node.name] = linear_op(node, value(node.args[0]), "flatten")
            else:
                raise _refuse(node, f"the function {getattr(node.target, '__name__', node.target)}"
                                    " is not supported")
        elif node.op == "call_method":
            if node.target == "flatten" and tuple(node.args[1:]) in ((1,), (1, -1)):
                env[node.name] = linear_op(node, value(node.args[0]), "flatten")
            else:
                raise _refuse(node, f"the method .{node.target} is not supported")
        else:
            raise _refuse(node, f"{node.op} nodes are not supported")
    if len(layers) < 2:
        raise TypeError("the network has no neuron layer: nothing to run on Loihi")
    return FloatPlan(tuple(input_shape), layers)


def _make_layer(node: fx.Node, name: str, x: _Affine, layers: list[FloatLayer],
                neuron: LIF | None = None, readout: bool = False) -> FloatLayer:
    synapses = [_collapse(node, src, ops) for src, ops in x.terms]
    if any(s.source == -1 for s in synapses) and readout:
        raise _refuse(node, "the output depends on the input image without a neuron between")
    depth = 1 + max(0 if s.source == -1 else layers[s.source].depth for s in synapses)
    for s in synapses:
        s.delay = depth - 1 - (0 if s.source == -1 else layers[s.source].depth)
    layer = FloatLayer(name=name, shape=x.shape, synapses=synapses, bias=x.bias[0].clone(),
                       readout=readout, depth=depth)
    if neuron is not None:
        kw = neuron.kwargs
        if kw["reset"] == "none":
            raise ValueError(f"neuron {name!r} has reset='none': Loihi's LIF always resets")
        if kw["reset"] == "zero" and kw["v_reset"] != 0.0:
            raise ValueError(f"neuron {name!r} resets to {kw['v_reset']}: Loihi resets v to 0")
        if not 0.0 <= kw["beta"] <= 1.0 or not kw["v_th"] > 0:
            raise ValueError(f"neuron {name!r}: need 0 <= beta <= 1 and v_th > 0, got "
                             f"beta={kw['beta']}, v_th={kw['v_th']}")
        layer.beta, layer.v_th, layer.reset = float(kw["beta"]), float(kw["v_th"]), kw["reset"]
        layer.v_init = float(neuron.v_init)
    return layer


def _collapse(node: fx.Node, source: int, ops: list[_Op]) -> FloatSynapse:
    """One synapse equal to ``ops`` applied to the source (module docstring)."""
    cores = [i for i, op in enumerate(ops) if op.kind in ("conv", "linear")]
    if len(cores) > 1:
        raise _refuse(node, "two conv/linear layers follow each other with no neuron between")
    core = cores[0] if cores else None
    pre = ops if core is None else ops[:core]
    post = [] if core is None else ops[core + 1:]
    for op in post:
        if op.kind not in ("scale", "flatten"):
            raise _refuse(node, f"a {op.kind} between a synapse and its neuron cannot be folded")
    src_shape = pre[0].in_shape if pre else (ops[core].in_shape if core is not None else None)
    if core is not None and ops[core].kind == "linear":
        m = ops[core].module
        weight = m.weight.detach().double()
        if pre:  # the adjoint of the linear prefix: W' = P^T W, exact for pools and scales
            with torch.enable_grad():
                x = torch.zeros(weight.shape[0], *src_shape, dtype=torch.float64,
                                requires_grad=True)
                (weight_full,) = torch.autograd.grad(_apply_ops(pre, x), x, weight)
            weight = weight_full.flatten(1)
        syn = FloatSynapse(source, "dense", weight)
        out_channels = weight.shape[0]
    elif core is not None:
        m = ops[core].module
        if m.dilation not in (1, (1, 1)):
            raise _refuse(node, "dilated convolutions are not supported")
        stride = m.stride if isinstance(m.stride, int) else m.stride[0]
        padding = m.padding if isinstance(m.padding, int) else m.padding[0]
        if (isinstance(m.stride, tuple) and m.stride[0] != m.stride[1]) or \
                (isinstance(m.padding, tuple) and m.padding[0] != m.padding[1]):
            raise _refuse(node, "non-square stride/padding is not supported")
        weight = m.weight.detach().double()
        c_in = ops[core].in_shape[0]
        per_group_in = c_in // m.groups
        per_group_out = weight.shape[0] // m.groups
        # input channel of weight[o, j]: (o // per_group_out) * per_group_in + j
        in_index = (torch.arange(weight.shape[0])[:, None] // per_group_out) * per_group_in + \
            torch.arange(per_group_in)[None, :]
        for op in reversed(pre):
            if op.kind == "scale":
                f = op.factor if op.factor.dim() else op.factor.expand(c_in)
                weight = weight * f[in_index][:, :, None, None]
            elif op.kind == "pool":
                k = op.k
                weight = weight.repeat_interleave(k, 2).repeat_interleave(k, 3) / (k * k)
                stride, padding = stride * k, padding * k
            else:
                raise _refuse(node, f"a {op.kind} before a convolution cannot be folded")
        syn = FloatSynapse(source, "conv", weight, stride, padding, m.groups)
        out_channels = weight.shape[0]
    else:  # pools and scales only: a depthwise conv (or a diagonal for flat sources)
        if src_shape is None or len(src_shape) == 1:
            n = src_shape[0] if src_shape else None
            diag = None
            for op in pre:
                if op.kind != "scale":
                    raise _refuse(node, f"a {op.kind} on a flat input cannot be folded")
                f = op.factor.expand(n) if op.factor.dim() == 0 else op.factor
                diag = f if diag is None else diag * f
            return FloatSynapse(source, "dense", torch.diag(diag))
        c = src_shape[0]
        weight = torch.ones(c, 1, 1, 1, dtype=torch.float64)
        stride = 1
        flat_after = False
        for op in pre:
            if op.kind == "scale":
                f = op.factor if op.factor.dim() else op.factor.expand(c)
                weight = weight * f.view(-1, 1, 1, 1)
            elif op.kind == "pool":
                k = op.k
                weight = weight.repeat_interleave(k, 2).repeat_interleave(k, 3) / (k * k)
                stride *= k
            else:
                flat_after = True
        if flat_after:
            raise _refuse(node, "a flatten with no Linear after it feeds a neuron")
        return FloatSynapse(source, "conv", weight, stride, 0, c)
    for op in post:
        if op.kind == "scale":
            f = op.factor if op.factor.dim() else op.factor.expand(out_channels)
            syn.weight = syn.weight * f.view(-1, *([1] * (syn.weight.dim() - 1)))
    return syn


def _apply_ops(ops: list[_Op], x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        if op.kind == "scale":
            f = op.factor
            x = x * (f.view(-1, *([1] * (x.dim() - 2))) if f.dim() else f)
        elif op.kind == "pool":
            x = F.avg_pool2d(x, op.k)
        elif op.kind == "flatten":
            x = x.flatten(1)
        else:
            raise AssertionError(op.kind)
    return x


@dataclass(frozen=True)
class Synapse:
    """An integer Dense or Conv projection (Lava's Dense weight handling, spec section 3).

    ``weights``: int64, dense ``[n_out, n_in]`` or conv ``[C_out, C_in / groups, KH, KW]``.
    ``delay``: extra steps beyond the one every Dense/Conv adds.
    """

    source: int
    kind: str
    weights: torch.Tensor
    weight_exp: int = 0
    stride: int = 1
    padding: int = 0
    groups: int = 1
    num_weight_bits: int = 8
    num_message_bits: int = 0
    delay: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "conv"):
            raise ValueError(f"kind must be 'dense' or 'conv', got {self.kind!r}")
        _check_range("weights", self.weights, *WEIGHT_RANGE)
        _check_range("num_weight_bits", self.num_weight_bits, 1, 8)
        # graded spikes carry up to 32 bits on Loihi 2 (resources.py [L2])
        _check_range("num_message_bits", self.num_message_bits, 0, 32)
        check_int_param("weight_exp", self.weight_exp, *WEIGHT_EXP_RANGE)
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")

    def current(self, spikes: torch.Tensor, backend: str) -> torch.Tensor:
        """``spikes: [T, B, *source shape]`` integers -> ``a_in: [T, B, *target]`` int64, with
        the one-step delay per sample (and ``delay`` more)."""
        steps, batch = spikes.shape[:2]
        # Samples run one after another along the time axis; the synapse's one-step delay then
        # carries the last step of sample b into the first of b + 1, which is zeroed below.
        seq = spikes.transpose(0, 1).reshape(batch * steps, *spikes.shape[2:])
        if self.kind == "dense":
            a = dense_input(self.weights_lava(), seq.flatten(1), self.weight_exp,
                            graded=self.num_message_bits > 0)
        else:
            a = conv_input(self.weights, seq, stride=self.stride, padding=self.padding,
                           groups=self.groups, weight_exp=self.weight_exp,
                           num_weight_bits=self.num_weight_bits,
                           num_message_bits=self.num_message_bits,
                           backend=backend)
        a = a.reshape(batch, steps, *a.shape[1:])
        a[:, 0] = 0
        if self.delay:
            delayed = torch.zeros_like(a)
            delayed[:, self.delay:] = a[:, :max(steps - self.delay, 0)]
            a = delayed
        return a.transpose(0, 1)

    def weights_lava(self) -> torch.Tensor:
        """The weights Lava's clip and truncation leave, int64."""
        return lava_weights(self.weights, self.num_weight_bits).to(torch.int64)


@dataclass(frozen=True)
class LoihiLayer:
    """One CUBA LIF process and the synapses into it. Every parameter is checked against
    Loihi's range at construction (a ValueError names it, its range and the value)."""

    name: str
    shape: tuple[int, ...]
    synapses: tuple[Synapse, ...]
    du: int
    dv: int
    vth: int
    bias_mant: torch.Tensor  # [N] int64
    bias_exp: int
    v0: torch.Tensor  # [N] int64
    scale: float  # integer membrane units per float unit
    readout: bool = False
    depth: int = 1

    def __post_init__(self) -> None:
        _check_range("du", self.du, *DU_RANGE)
        _check_range("dv", self.dv, *DV_RANGE)
        _check_range("vth", self.vth, 0, VTH_MAX)
        _check_range("bias_mant", self.bias_mant, *BIAS_MANT_RANGE)
        _check_range("bias_exp", self.bias_exp, *BIAS_EXP_RANGE)
        _check_range("v0", self.v0, -UV_MAX, UV_MAX)
        n = math.prod(self.shape)
        for name in ("bias_mant", "v0"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got "
                                 f"{tuple(getattr(self, name).shape)}")

    @property
    def neurons(self) -> int:
        return math.prod(self.shape)

    @property
    def bias(self) -> torch.Tensor:
        return self.bias_mant << self.bias_exp


@dataclass
class SynapseQuantization:
    source: int
    kind: str
    weight_exp: int
    weight_max_abs_error: float  # float weight units, after Lava's clip and truncation
    weight_rel_error: float  # max abs error / max |W|
    weight_clipped: int  # weights beyond Loihi's range, clipped (counted, never silent)
    delay: int


@dataclass
class LayerQuantization:
    name: str
    neurons: int
    scale: float
    synapses: list[SynapseQuantization]
    vth: int
    v_th_rel_error: float  # (vth << 6) / scale / v_th - 1
    dv: int
    beta_error: float  # (4096 - dv) / 4096 - beta
    bias_exp: int
    bias_max_abs_error: float  # float units
    bias_clipped: int
    vth_clipped: int  # 1 when v_th * scale / 64 exceeded 17 bits
    v0_clipped: int  # neurons whose initial voltage exceeded 24 bits
    transient_uncompensated: int  # neurons whose bias-only steps v0 could not cancel
    readout: bool
    reset_mismatch: bool  # the float neuron subtracts, Loihi resets to 0

    @property
    def clipped(self) -> int:
        """Every value this layer's mapping clipped: weights, biases, vth, v0."""
        return (sum(s.weight_clipped for s in self.synapses) + self.bias_clipped
                + self.vth_clipped + self.v0_clipped)


@dataclass
class QuantizationReport:
    """What the mapping lost, per layer; runtime counts live in :class:`RunStats`."""

    layers: list[LayerQuantization]
    timesteps: int
    input_range: float
    input_step: float  # float units per payload unit

    def format(self) -> str:
        rows = [f"Loihi quantization (T={self.timesteps}, input: {INPUT_BITS}-bit graded payloads,"
                f" step {self.input_step:.4g}, range +-{self.input_range:.4g})",
                f"{'layer':<28}{'neurons':>9}{'w_exp':>8}{'w err max':>11}{'w err rel':>10}"
                f"{'clip':>6}{'vth':>8}{'vth err':>10}{'bias err':>10}{'reset':>9}"]
        for q in self.layers:
            exps = ",".join(str(s.weight_exp) for s in q.synapses)
            rows.append(
                f"{q.name[:27]:<28}{q.neurons:>9}{exps:>8}"
                f"{max(s.weight_max_abs_error for s in q.synapses):>11.3g}"
                f"{max(s.weight_rel_error for s in q.synapses):>10.3g}"
                f"{q.clipped:>6}"
                f"{q.vth:>8}{q.v_th_rel_error:>10.2g}{q.bias_max_abs_error:>10.2g}"
                f"{('readout' if q.readout else 'hard*' if q.reset_mismatch else 'hard'):>9}")
        uncompensated = sum(q.transient_uncompensated for q in self.layers)
        if uncompensated:
            rows.append(f"{uncompensated} neurons start above the voltage that would cancel "
                        "their bias-only steps before the input arrives (it would fire them)")
        if any(q.reset_mismatch for q in self.layers):
            rows.append("hard*: the float neuron subtracts v_th (soft reset), Loihi resets v to 0")
        return "\n".join(rows)


def _grid(mixed: bool, num_weight_bits: int) -> tuple[int, int]:
    """(step, top): the weights Lava's truncation keeps are multiples of step up to top."""
    step = 2 ** (8 - num_weight_bits + int(mixed))
    return step, (255 // step) * step


def _weight_bound(syn: FloatSynapse, max_in: float) -> torch.Tensor:
    """Per output neuron channel: the largest |input current| the synapse can deliver."""
    w = syn.weight.abs()
    return w.flatten(1).sum(1) * max_in


def _compensated_v0(layer: FloatLayer) -> tuple[torch.Tensor, int]:
    """Initial voltages (float units, per neuron) that cancel the ``depth`` bias-only steps a
    layer runs before its first input arrives: ``v0 = (v_init - b * (1 + 1/beta + ...))``, the
    float recursion ``v = beta * v + b`` run backwards ``depth`` times, so that the membrane is
    ``v_init`` when the input arrives (exact for IF up to rounding; LIF's integer decay rounds).
    Where that start would make the neuron fire during the transient (a negative bias) it is
    lowered to the largest start that does not, and counted (returned second)."""
    b = layer.bias.reshape(-1)
    v = torch.full_like(b, layer.v_init)
    if layer.beta == 0:
        return v, 0
    for _ in range(layer.depth):
        v = (v - b) / layer.beta
    # The first transient step must stay below v_th; the margin (2^-8 of v_th, some hundred
    # threshold LSBs) absorbs the integer rounding that would otherwise fire it.
    limit = (layer.v_th * (1 - 2**-8) - b) / layer.beta
    return torch.minimum(v, limit), int((v > limit).sum())


def quantize_network(plan: FloatPlan, timesteps: int, *,
                     input_range: float = CIFAR10_INPUT_RANGE, num_weight_bits: int = 8,
                     scales: dict[str, float] | None = None,
                     weight_exps: dict[str, int] | None = None,
                     ) -> tuple[list[LoihiLayer], QuantizationReport]:
    """Integer layers for ``plan`` run over ``timesteps`` (the readout's scale depends on it),
    and the report of what quantization cost (module docstring for the rules).

    Args:
        plan: from :func:`fold_network`.
        timesteps: T.
        input_range: the |x| that maps to payload 127.
        num_weight_bits: 1..8.
        scales: per layer name, a scale (integer membrane units per float unit) to use instead
            of the automatic one (trading saturation against resolution).
        weight_exps: per layer name, the weight exponent of its largest-weight synapse. Alone,
            it sets the scale (the largest weight on top of the 8-bit grid); with ``scales``,
            both are used as given and weights that do not fit are clipped.

    Weights, biases, thresholds and initial voltages that do not fit are clipped and counted in
    the report, never silently; the integer layers are then checked against Loihi's ranges.
    """
    scales, weight_exps = scales or {}, weight_exps or {}
    unknown = sorted((set(scales) | set(weight_exps)) - {layer.name for layer in plan.layers})
    if unknown:
        raise ValueError(f"scales / weight_exps name unknown layers {unknown}; layers are "
                         f"{[layer.name for layer in plan.layers]}")
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be an int >= 1, got {timesteps!r}")
    if not input_range > 0:
        raise ValueError(f"input_range must be > 0, got {input_range!r}")
    input_step = input_range / INPUT_MAX
    readout_depth = plan.layers[-1].depth
    int_layers, reports = [], []
    for layer in plan.layers:
        weights = []
        for syn in layer.synapses:
            w = syn.weight * input_step if syn.source == -1 else syn.weight
            weights.append(w)
        max_in = [INPUT_MAX if s.source == -1 else 1.0 for s in layer.synapses]
        per_channel = sum(_weight_bound(FloatSynapse(s.source, s.kind, w), m)
                          for s, w, m in zip(layer.synapses, weights, max_in, strict=True))
        b_abs = layer.bias.abs()
        channels = per_channel.shape[0]
        b_chan = b_abs.reshape(channels, -1).amax(1) if b_abs.numel() else b_abs
        bound = float((per_channel + b_chan).max())
        b_max = float(b_abs.max()) if b_abs.numel() else 0.0
        bias_limit = BIAS_MANT_RANGE[1] << BIAS_EXP_RANGE[1]
        if layer.readout:
            limits = [(VTH_MAX << 6) / max(bound * (timesteps + readout_depth), 1e-300)]
        else:
            limits = [UV_MAX / (layer.v_th + bound), (VTH_MAX << 6) / layer.v_th]
        if b_max > 0:
            limits.append(bias_limit / b_max)
        s_max = min(limits)
        # The synapse with the largest weights sets the scale: its max lands on top of the grid.
        mixed = [bool((w < 0).any() and (w > 0).any()) for w in weights]
        tops = [_grid(m, num_weight_bits)[1] for m in mixed]
        w_max = [float(w.abs().max()) for w in weights]
        lead = max(range(len(weights)), key=lambda i: w_max[i] / tops[i])
        if w_max[lead] == 0:
            raise ValueError(f"layer {layer.name!r}: all weights are zero")
        e0 = weight_exps.get(layer.name)
        if e0 is None:
            e0 = math.floor(math.log2(scales.get(layer.name, s_max) * w_max[lead]
                                      / (64 * tops[lead])))
        scale = scales.get(layer.name, tops[lead] * 64 * 2.0**e0 / w_max[lead])
        syn_int, syn_reports = [], []
        for index, (syn, w, m, top) in enumerate(zip(layer.synapses, weights, mixed, tops,
                                                     strict=True)):
            step = _grid(m, num_weight_bits)[0]
            wm = float(w.abs().max())
            e = e0 if wm == 0 or (index == lead and layer.name in weight_exps) else \
                math.ceil(math.log2(wm * scale / (64 * top)) - 1e-12)
            raw = torch.round(w * scale / (64 * 2.0**e) / step) * step
            low = -256 if m else (0 if bool((w >= 0).all()) else -255)
            clipped = int(((raw < low) | (raw > top)).sum())
            w_int = raw.clamp(low, top).to(torch.int64)
            s_int = Synapse(syn.source, syn.kind, w_int, e, syn.stride, syn.padding, syn.groups,
                            num_weight_bits, INPUT_BITS if syn.source == -1 else 0, syn.delay)
            back = s_int.weights_lava().double() * 64 * 2.0**e / scale
            err = float((back - w).abs().max())
            syn_int.append(s_int)
            syn_reports.append(SynapseQuantization(syn.source, syn.kind, e, err,
                                                   err / wm if wm else 0.0, clipped, syn.delay))
        b = layer.bias.reshape(-1) * scale
        big = float(b.abs().max()) if b.numel() else 0.0
        bias_exp = 0
        while bias_exp < BIAS_EXP_RANGE[1] and big / 2**bias_exp > BIAS_MANT_RANGE[1]:
            bias_exp += 1
        mant = torch.round(b / 2**bias_exp)
        bias_clipped = int(((mant < BIAS_MANT_RANGE[0]) | (mant > BIAS_MANT_RANGE[1])).sum())
        mant = mant.clamp(*BIAS_MANT_RANGE).to(torch.int64)
        vth_clipped = v0_clipped = transient_uncompensated = 0
        if layer.readout:
            du, dv, vth, v0 = 4095, 0, VTH_MAX, torch.zeros_like(mant)
        else:
            du, dv = 4095, min(round((1.0 - layer.beta) * 4096), DV_RANGE[1])
            vth = round(layer.v_th * scale / 64)
            vth_clipped = int(vth > VTH_MAX)
            vth = min(vth, VTH_MAX)
            start, transient_uncompensated = _compensated_v0(layer)
            start = torch.round(start * scale)
            v0_clipped = int((start.abs() > UV_MAX).sum())
            v0 = start.clamp(-UV_MAX, UV_MAX).to(torch.int64)
        int_layers.append(LoihiLayer(layer.name, layer.shape, tuple(syn_int), du, dv, vth, mant,
                                     bias_exp, v0, scale, layer.readout, layer.depth))
        reports.append(LayerQuantization(
            name=layer.name, neurons=layer.neurons, scale=scale, synapses=syn_reports, vth=vth,
            v_th_rel_error=0.0 if layer.readout else (vth * 64 / scale) / layer.v_th - 1,
            dv=dv, beta_error=0.0 if layer.readout else (4096 - dv) / 4096 - layer.beta,
            bias_exp=bias_exp,
            bias_max_abs_error=float(((mant << bias_exp).double() / scale
                                      - layer.bias.reshape(-1)).abs().max()) if b.numel() else 0.,
            bias_clipped=bias_clipped, vth_clipped=vth_clipped, v0_clipped=v0_clipped,
            transient_uncompensated=transient_uncompensated,
            readout=layer.readout,
            reset_mismatch=not layer.readout and layer.reset == "subtract"))
    return int_layers, QuantizationReport(reports, timesteps, input_range, input_step)


@dataclass
class LayerStats:
    """Counted over the samples run since the last reset (all steps of the run)."""

    spikes: int = 0
    early_spikes: int = 0  # spikes before the layer's first aligned step (bias alone)
    neuron_steps: int = 0
    synops: int = 0  # (nonzero input event, nonzero synapse) pairs delivered into this layer
    u_wraps: int = 0
    v_saturations: int = 0
    a_in_overflows: int = 0  # |a_in| >= 2^25: Lava's int32 a_in << 6 wraps (so does ours)
    readout_spikes: int = 0  # a readout reaching its threshold (it must not)


@dataclass
class RunStats:
    samples: int = 0
    input_clipped: int = 0  # pixels beyond input_range, clipped to the payload range
    layers: dict[str, LayerStats] = field(default_factory=dict)


def _tdiv12(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * (x.abs() >> 12)


def _saturations(a: torch.Tensor, u: torch.Tensor, v: torch.Tensor, layer: LoihiLayer,
                 v0: torch.Tensor) -> tuple[int, int, int]:
    """u wraps, v saturations and a_in overflows, recomputed from the traces: ``a, u, v:
    [steps, N]`` (``u``, ``v`` as recorded after each step, v post-reset)."""
    overflows = int((a.abs() >= A_IN_LIMIT).sum())
    drive = wrap_int32(a << 6)  # int32 in Lava, as the LIF kernels compute it
    if layer.du == 4095:  # no current memory: u = a << 6 before the wrap
        u_pre = drive
    else:
        u_prev = torch.cat([torch.zeros_like(u[:1]), u[:-1]]).to(torch.int64)
        u_pre = wrap_int32(_tdiv12(u_prev * (4096 - (layer.du + 1))) + drive)
    wraps = int(((u_pre > 2**23) | (u_pre <= -(2**23))).sum())
    del u_pre, drive
    v_prev = torch.cat([v0.view(1, -1), v[:-1].to(torch.int64)])
    if layer.dv:
        v_prev = _tdiv12(v_prev * (4096 - layer.dv))
    v_prev += u.to(torch.int64)
    v_prev += layer.bias.repeat(v.shape[1] // layer.neurons)
    return wraps, int((wrap_int32(v_prev).abs() > UV_MAX).sum()), overflows


def _fanout(syn: Synapse, source_shape: tuple[int, ...]) -> torch.Tensor:
    """Nonzero synapses each source neuron feeds: ``[*source_shape]`` float64."""
    nonzero = (syn.weights_lava() != 0).to(torch.float64)
    if syn.kind == "dense":
        return nonzero.sum(0).reshape(source_shape)
    with torch.enable_grad():  # the adjoint of the connectivity, also under no_grad
        probe = torch.zeros(1, *source_shape, dtype=torch.float64, requires_grad=True)
        out = F.conv2d(probe, nonzero, None, syn.stride, syn.padding, 1, syn.groups)
        (fanout,) = torch.autograd.grad(out.sum(), probe)
    return fanout[0]


def _synops(syn: Synapse, spikes: torch.Tensor, fanout: torch.Tensor) -> int:
    """(nonzero event, nonzero synapse) pairs: ``spikes: [T, B, *source]``."""
    events = (spikes != 0).sum((0, 1), dtype=torch.float64)
    return int((events * fanout).sum())


def run_layers(layers: list[LoihiLayer], payload: torch.Tensor, timesteps: int, *,
               backend: str = "numba", synapse_backend: str = "auto",
               stats: RunStats | None = None,
               record: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the integer network on graded input payloads.

    Args:
        layers: from :func:`quantize_network` (the last one the readout).
        payload: ``[B, *input_shape]`` int64 payloads, presented at steps ``0 .. T - 1``.
        timesteps: T; the run lasts ``T + D`` steps, D the readout's depth.
        backend: "numba", "torch" or "triton" for the neurons and binary-spike synapses.
        synapse_backend: the conv synapses' backend; "auto": ``backend``, except graded
            payloads (the input layer) on "torch" (float64 F.conv2d, exact and there 20x faster
            than bit planes through the sparse kernels on CPU).
        stats: counters to add this run to.
        record: also return every layer's spikes.

    Returns:
        ``(readout [B, K] float64, spikes)``: the readout is ``(v[T + D - 1] - v[D - 1]) /
        (scale * T)``; ``spikes`` holds ``[T + D, B, *shape]`` int32 per hidden layer when
        ``record`` (else empty).
    """
    depth = layers[-1].depth
    steps = timesteps + depth
    batch = payload.shape[0]
    x = torch.zeros(steps, *payload.shape, dtype=torch.int64)
    x[:timesteps] = payload
    spikes: dict[int, torch.Tensor] = {-1: x}
    consumers: dict[int, int] = {}
    for layer in layers:
        for syn in layer.synapses:
            consumers[syn.source] = consumers.get(syn.source, 0) + 1
    recorded = []
    out = None
    for index, layer in enumerate(layers):
        a = None
        ls = None if stats is None else stats.layers.setdefault(layer.name, LayerStats())
        for syn in layer.synapses:
            src = spikes[syn.source]
            chosen = synapse_backend
            if chosen == "auto":
                chosen = "torch" if syn.num_message_bits and backend == "numba" else backend
            part = syn.current(src, chosen)
            a = part if a is None else a + part
            if ls is not None:
                source_shape = payload.shape[1:] if syn.source == -1 else \
                    layers[syn.source].shape
                ls.synops += _synops(syn, src, _fanout(syn, tuple(source_shape)))
            consumers[syn.source] -= 1
            if not consumers[syn.source] and syn.source != -1:
                del spikes[syn.source]  # no later layer reads it: free the memory
        a = a.reshape(steps, batch * layer.neurons)
        n = a.shape[1]
        v0 = layer.v0.repeat(batch)
        u, v, s = loihi_lif(a, torch.zeros(n, dtype=torch.int64), v0,
                            torch.full((n,), layer.du, dtype=torch.int64),
                            torch.full((n,), layer.dv, dtype=torch.int64),
                            torch.full((n,), layer.vth, dtype=torch.int64),
                            layer.bias.repeat(batch), backend=backend)
        u, v, s = u.cpu(), v.cpu(), s.cpu()
        if ls is not None:
            wraps, sats, overflows = _saturations(a.cpu(), u, v, layer, v0)
            ls.u_wraps += wraps
            ls.v_saturations += sats
            ls.a_in_overflows += overflows
            ls.neuron_steps += s.numel()
            count = int(s.sum())
            if layer.readout:
                ls.readout_spikes += count
            else:
                ls.spikes += count
                ls.early_spikes += int(s[:layer.depth].sum())
        if layer.readout:
            v = v.to(torch.int64).reshape(steps, batch, -1)
            out = (v[-1] - v[depth - 1]).double() / (layer.scale * timesteps)
            break
        s = s.reshape(steps, batch, *layer.shape)
        if consumers.get(index):
            spikes[index] = s
        if record:
            recorded.append(s)
    if stats is not None:
        stats.samples += batch
    return out, recorded


def encode_input(images: torch.Tensor, input_range: float) -> tuple[torch.Tensor, int]:
    """``images: [B, ...]`` float -> (int64 payloads in [-127, 127], values clipped)."""
    q = torch.round(images.detach().double().cpu() * (INPUT_MAX / input_range))
    clipped = int((q.abs() > INPUT_MAX).sum())
    return q.clamp(-INPUT_MAX, INPUT_MAX).to(torch.int64), clipped


class LoihiNetwork(nn.Module):
    """A SpikingNetwork quantized onto the Loihi emulator: ``[B, *input_shape] -> [B, K]``,
    the readout's mean over T like the float network's output (module docstring).

    Args:
        snn: the float network (kept, unmodified, for :func:`evaluate_accuracy`).
        timesteps: T (default ``snn.timesteps``); setting ``.timesteps`` re-quantizes.
        input_range: the |x| that maps to payload 127 (default: CIFAR-10 normalised as
            :mod:`neuro_emu.data` does).
        input_shape: one sample's shape.
        backend: "numba" (CPU), "torch" or "triton".
        synapse_backend: the conv synapses' backend (:func:`run_layers`).
        num_weight_bits: Loihi weight precision, 1..8.
        scales, weight_exps: per-layer overrides (:func:`quantize_network`).
        max_elements: neuron-steps per chunk of the batch (bounds memory).

    After each forward, ``self.stats`` holds the run's counters (cumulative until
    :meth:`reset_stats`); ``self.report`` is the :class:`QuantizationReport`.
    """

    def __init__(self, snn: SpikingNetwork, timesteps: int | None = None, *,
                 input_range: float = CIFAR10_INPUT_RANGE,
                 input_shape: tuple[int, ...] = (3, 32, 32), backend: str = "numba",
                 num_weight_bits: int = 8, scales: dict[str, float] | None = None,
                 weight_exps: dict[str, int] | None = None, synapse_backend: str = "auto",
                 max_elements: int = 2**24) -> None:
        super().__init__()
        if backend not in ("numba", "torch", "triton"):
            raise ValueError(f"backend must be 'numba', 'torch' or 'triton', got {backend!r}")
        self.float_net = snn
        self.plan = fold_network(snn, input_shape)
        self.input_range = float(input_range)
        self.num_weight_bits = num_weight_bits
        self.scales, self.weight_exps = scales, weight_exps
        self.backend = backend
        self.synapse_backend = synapse_backend
        self.max_elements = max_elements
        self.stats = RunStats()
        self.timesteps = snn.timesteps if timesteps is None else timesteps

    @property
    def timesteps(self) -> int:
        return self._timesteps

    @timesteps.setter
    def timesteps(self, steps: int) -> None:
        self.layers, self.report = quantize_network(
            self.plan, steps, input_range=self.input_range,
            num_weight_bits=self.num_weight_bits, scales=self.scales,
            weight_exps=self.weight_exps)
        self._timesteps = steps

    def reset_stats(self) -> None:
        self.stats = RunStats()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, *input_shape] float -> [B, K] float32 (on x's device)."""
        payload, clipped = encode_input(x, self.input_range)
        self.stats.input_clipped += clipped
        steps = self.timesteps + self.layers[-1].depth
        widest = max(layer.neurons for layer in self.layers)
        chunk = max(1, self.max_elements // (steps * widest))
        outs = [run_layers(self.layers, payload[i:i + chunk], self.timesteps,
                           backend=self.backend, synapse_backend=self.synapse_backend,
                           stats=self.stats)[0]
                for i in range(0, payload.shape[0], chunk)]
        return torch.cat(outs).to(torch.float32).to(x.device)

    def extra_repr(self) -> str:
        return (f"{len(self.layers) - 1} neuron layers + readout, T={self.timesteps}, "
                f"backend={self.backend}")


@torch.no_grad()
def evaluate_accuracy(net: LoihiNetwork, loader: Iterable, *, progress: bool = True,
                      max_batches: int | None = None,
                      float_reference: bool = True) -> dict[str, float]:
    """Top-1 accuracy over ``loader`` of the float network as given, the same float network
    with Loihi's hard reset (float64 plan), and the integer emulator; the integer run's
    counters accumulate in ``net.stats``.

    Returns:
        ``{"float", "float_hard_reset", "loihi", "samples"}`` (the float ones absent without
        ``float_reference``).
    """
    net.float_net.eval()
    correct = {"float": 0, "float_hard_reset": 0, "loihi": 0}
    seen = 0
    param = next(net.float_net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    previous = net.float_net.timesteps
    net.float_net.timesteps = net.timesteps
    try:
        for index, (images, labels) in enumerate(tqdm(loader, desc="loihi2_sim", leave=False,
                                                      disable=not progress)):
            if index == max_batches:
                break
            labels = labels.cpu()
            correct["loihi"] += int((net(images).argmax(1).cpu() == labels).sum())
            if float_reference:
                logits = net.float_net(images.to(device)).cpu()
                correct["float"] += int((logits.argmax(1) == labels).sum())
                hard = net.plan.forward(images.cpu(), net.timesteps, reset="zero",
                                        dtype=torch.float32)
                correct["float_hard_reset"] += int((hard.argmax(1) == labels).sum())
            seen += labels.numel()
    finally:
        net.float_net.timesteps = previous
    if not seen:
        raise ValueError("the loader yielded no samples")
    result = {k: v / seen for k, v in correct.items() if float_reference or k == "loihi"}
    result["samples"] = seen
    return result
