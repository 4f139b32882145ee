"""spike_conv2d / spike_linear on every backend: exact in integer mode, bounded in float mode."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from neuro_emu.ops import float_error_bound, spike_conv2d, spike_linear
from tests.cases import assert_identical, device_for, runnable_backends

SPARSE_BACKENDS = runnable_backends(("numba", "triton"))
SPARSITIES = {"dense0": 0.0, "half": 0.5, "sparse99": 0.99, "zeros": 1.0, "ones": -1.0}


@dataclass(frozen=True)
class ConvCase:
    name: str
    n: int
    channels: int
    out_channels: int
    size: tuple[int, int]
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def geometry(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)


def _conv_cases() -> list[ConvCase]:
    cases = []
    for kernel, stride, padding, dilation in itertools.product([1, 3, 5, 7], [1, 2], [0, 1, 2],
                                                              [1, 2]):
        if (kernel - 1) * dilation + 1 > 7 + 2 * padding:
            continue  # the kernel would not fit the 7x9 input
        cases.append(ConvCase(f"k{kernel}-s{stride}-p{padding}-d{dilation}", 2, 5, 6, (7, 9),
                              kernel, stride, padding, dilation))
    cases += [
        ConvCase("depthwise-k3-s1-p1", 2, 6, 6, (7, 9), 3, 1, 1, 1, groups=6),
        ConvCase("depthwise-k3-s2-p1-d2", 2, 4, 8, (9, 7), 3, 2, 1, 2, groups=4),
        ConvCase("groups3-k5-p2", 3, 6, 9, (8, 8), 5, 1, 2, 1, groups=3),
        ConvCase("c37-not-a-block-multiple", 2, 37, 19, (5, 5), 3, 1, 1),
    ]
    return cases


CONV_CASES = _conv_cases()


def make_spikes(shape, sparsity: float, seed: int = 0) -> torch.Tensor:
    if sparsity < 0:
        return torch.ones(shape)
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen) >= sparsity).float()


def conv_inputs(case: ConvCase, sparsity: float, integer: bool):
    gen = torch.Generator().manual_seed(1)
    spikes = make_spikes((case.n, case.channels, *case.size), sparsity)
    w_shape = (case.out_channels, case.channels // case.groups, case.kernel, case.kernel)
    if integer:
        weight = torch.randint(-128, 128, w_shape, generator=gen, dtype=torch.int8)
        bias = torch.randint(-5000, 5000, (case.out_channels,), generator=gen, dtype=torch.int32)
    else:
        weight = torch.randn(w_shape, generator=gen)
        bias = torch.randn(case.out_channels, generator=gen)
    return spikes, weight, bias


def interpreted(backend: str) -> bool:
    return backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.parametrize("sparsity", list(SPARSITIES.values()), ids=list(SPARSITIES))
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("backend", ["dense", *SPARSE_BACKENDS])
def test_conv2d_integer_mode_is_exact(backend, case, sparsity):
    spikes, weight, bias = conv_inputs(case, sparsity, integer=True)
    expected = F.conv2d(spikes.double(), weight.double(), bias.double(), **case.geometry())
    dev = device_for(backend)
    out = spike_conv2d(spikes.to(dev), weight.to(dev), bias.to(dev), **case.geometry(),
                       backend=backend)
    assert out.dtype == torch.int32
    assert_identical("conv int32", out.cpu(), expected.to(torch.int32))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.99], ids=["dense0", "half", "sparse99"])
@pytest.mark.parametrize("case", CONV_CASES[::3] + CONV_CASES[-4:], ids=lambda c: c.name)
@pytest.mark.parametrize("backend", ["dense", *SPARSE_BACKENDS])
def test_conv2d_float_mode_within_bound(backend, case, sparsity):
    spikes, weight, bias = conv_inputs(case, sparsity, integer=False)
    exact = F.conv2d(spikes.double(), weight.double(), bias.double(), **case.geometry())
    bound = float_error_bound(spikes, weight, bias, **case.geometry())
    dev = device_for(backend)
    out = spike_conv2d(spikes.to(dev), weight.to(dev), bias.to(dev), **case.geometry(),
                       backend=backend).cpu()
    assert out.dtype == torch.float32
    error = (out.double() - exact).abs()
    assert bool((error <= bound).all()), f"max error {error.max():.3g}, bound {bound.max():.3g}"


def test_float_bound_is_tight_enough_to_fail():
    """The bound must catch a real error: one ulp-scale nudge of the weights' sum breaks it."""
    case = CONV_CASES[0]
    spikes, weight, bias = conv_inputs(case, 0.0, integer=False)
    exact = F.conv2d(spikes.double(), weight.double(), bias.double(), **case.geometry())
    bound = float_error_bound(spikes, weight, bias, **case.geometry())
    assert bool((bound < 1e-3 * exact.abs().clamp(min=1)).all())
    wrong = exact + 10 * bound.max()
    assert not bool(((wrong - exact).abs() <= bound).all())


@pytest.mark.parametrize("sparsity", list(SPARSITIES.values()), ids=list(SPARSITIES))
@pytest.mark.parametrize("backend", ["dense", *SPARSE_BACKENDS])
@pytest.mark.parametrize("features", [(1, 1), (33, 7), (130, 65), (260, 70)],
                         ids=lambda f: f"{f[0]}x{f[1]}")
def test_linear_integer_exact_and_float_bounded(backend, features, sparsity):
    f_in, f_out = features
    gen = torch.Generator().manual_seed(2)
    spikes = make_spikes((9, f_in), sparsity)
    w8 = torch.randint(-128, 128, (f_out, f_in), generator=gen, dtype=torch.int8)
    b32 = torch.randint(-5000, 5000, (f_out,), generator=gen, dtype=torch.int32)
    dev = device_for(backend)
    out = spike_linear(spikes.to(dev), w8.to(dev), b32.to(dev), backend=backend).cpu()
    expected = F.linear(spikes.double(), w8.double(), b32.double()).to(torch.int32)
    assert_identical("linear int32", out, expected)
    wf, bf = torch.randn(f_out, f_in, generator=gen), torch.randn(f_out, generator=gen)
    outf = spike_linear(spikes.to(dev), wf.to(dev), bf.to(dev), backend=backend).cpu()
    error = (outf.double() - F.linear(spikes.double(), wf.double(), bf.double())).abs()
    assert bool((error <= float_error_bound(spikes, wf, bf)).all())


@pytest.mark.parametrize("backend", ["dense", *SPARSE_BACKENDS])
def test_bfloat16_weights_and_bool_spikes(backend):
    dev = device_for(backend)
    spikes = make_spikes((2, 4, 6, 6), 0.7).bool()
    weight = torch.randn(3, 4, 3, 3).bfloat16()
    out = spike_conv2d(spikes.to(dev), weight.to(dev), padding=1, backend=backend).cpu()
    exact = F.conv2d(spikes.double(), weight.double(), padding=1)
    assert bool(((out.double() - exact).abs() <= float_error_bound(spikes, weight.float(),
                                                                  padding=1)).all())


@pytest.mark.parametrize("backend", SPARSE_BACKENDS)
def test_backends_agree_exactly_in_integer_mode_on_a_vgg_layer(backend):
    if interpreted(backend):
        pytest.skip("too large for Triton's interpreter")
    spikes = make_spikes((8, 64, 16, 16), 0.9)
    weight = torch.randint(-128, 128, (64, 64, 3, 3), dtype=torch.int8)
    dev = device_for(backend)
    out = spike_conv2d(spikes.to(dev), weight.to(dev), padding=1, backend=backend).cpu()
    assert_identical("vgg int32", out, spike_conv2d(spikes, weight, padding=1, backend="dense"))


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        pytest.param(dict(spikes=torch.full((1, 2, 3, 3), 0.5)), ValueError,
                     "18 of 18 values are not", id="non-binary"),
        pytest.param(dict(spikes=torch.tensor([[[[float("nan"), 1.0]]]]).expand(1, 2, 1, 2),
                          padding=1), ValueError, "2 of 4 values are not", id="nan"),
        pytest.param(dict(spikes=torch.ones(2, 3, 3)), ValueError, r"\[N, C, H, W\]",
                     id="rank"),
        pytest.param(dict(weight=torch.ones(4, 2, 3, 3, dtype=torch.int32)), TypeError, "int8",
                     id="weight-dtype"),
        pytest.param(dict(weight=torch.ones(4, 3, 3, 3)), RuntimeError,
                     "to have 3 channels", id="channels"),
        pytest.param(dict(weight=torch.ones(4, 2, 5, 5)), RuntimeError,
                     "Kernel size can't be greater", id="kernel-too-large-torch-message"),
        pytest.param(dict(groups=3), RuntimeError, "groups", id="groups-torch-message"),
        pytest.param(dict(padding="same"), TypeError, "padding must be an int", id="padding-str"),
        pytest.param(dict(bias=torch.ones(5)), ValueError, r"shape \(4,\)", id="bias-shape"),
        pytest.param(dict(bias=torch.ones(4, dtype=torch.int32)), TypeError,
                     "floating-point bias", id="bias-dtype"),
        pytest.param(dict(backend="cudnn"), ValueError, "backend must be", id="backend"),
        # Geometry that torch's shape-only check lets through (the sparse kernels would compute
        # something for it): refused before any backend runs.
        pytest.param(dict(padding=-1), ValueError, "padding must be >= 0", id="negative-padding"),
        pytest.param(dict(stride=(1, 0)), ValueError, "stride must be >= 1", id="zero-stride"),
        pytest.param(dict(dilation=0), ValueError, "dilation must be >= 1", id="zero-dilation"),
        pytest.param(dict(groups=0), ValueError, "groups must be a positive int", id="groups-0"),
        pytest.param(dict(spikes=torch.ones(1, 2, 4, 4), weight=torch.ones(3, 1, 3, 3), groups=2),
                     RuntimeError, "divisible by 2", id="out-channels-not-divisible"),
        pytest.param(dict(weight=torch.ones(4, 2, 3)), ValueError, r"\[O, C // groups, KH, KW\]",
                     id="weight-rank"),
        pytest.param(dict(spikes=torch.ones(1, 2, 0, 3)), RuntimeError,
                     "zero batch or zero channel", id="zero-height"),
        pytest.param(dict(weight=torch.ones(4, 2, 1, 1, dtype=torch.int8),
                          bias=torch.tensor([2**31, 0, 0, 0])), ValueError,
                     r"bias values must lie in \[-2\^31, 2\^31 - 1\]", id="int-bias-range"),
    ],
)
@pytest.mark.parametrize("backend", ["dense", *SPARSE_BACKENDS])
def test_errors(kwargs, error, message, backend):
    args = dict(spikes=torch.ones(1, 2, 3, 3), weight=torch.ones(4, 2, 3, 3), backend=backend)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        spike_conv2d(**args)


@pytest.mark.parametrize("backend", ["dense", *SPARSE_BACKENDS])
def test_empty_inputs_and_vector_weight_as_torch(backend):
    """No sample, no channel, no feature: torch's own results (the bias where there is an
    output); a 1-D linear weight gives one output per sample, as F.linear does."""
    dev = device_for(backend)
    weight, bias = torch.randn(3, 2, 3, 3, device=dev), torch.randn(3, device=dev)
    for spikes, w in ((torch.zeros(0, 2, 5, 5), weight),
                      (torch.zeros(2, 0, 5, 5), weight[:, :0])):
        out = spike_conv2d(spikes.to(dev), w, bias, padding=1, backend=backend)
        torch.testing.assert_close(out, F.conv2d(spikes.to(dev), w, bias, padding=1))
    for spikes, w in ((torch.zeros(0, 4), torch.randn(3, 4)),
                      (torch.zeros(2, 0), torch.randn(3, 0))):
        out = spike_linear(spikes.to(dev), w.to(dev), bias, backend=backend)
        torch.testing.assert_close(out, F.linear(spikes.to(dev), w.to(dev), bias))
    spikes, vector = make_spikes((4, 6), 0.5).to(dev), torch.randn(6, device=dev)
    torch.testing.assert_close(spike_linear(spikes, vector, backend=backend),
                               F.linear(spikes, vector), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["dense", *SPARSE_BACKENDS])
def test_int32_sums_wrap_alike_on_every_backend(backend):
    """A sum past int32's range wraps modulo 2^32 on every backend (the dense path too, which
    computes in float64 and used to saturate on the way to int32)."""
    dev = device_for(backend)
    spikes = torch.ones(1, 2, 4, 4, device=dev)
    weight = torch.full((2, 2, 3, 3), 127, dtype=torch.int8, device=dev)
    bias = torch.tensor([2**31 - 5, -(2**31)], dtype=torch.int64, device=dev)
    exact = F.conv2d(spikes.double(), weight.double(), bias.double(), padding=1).long()
    wrapped = ((exact + 2**31) % 2**32 - 2**31).to(torch.int32)
    assert (exact != wrapped).any()
    assert_identical("wrapped", spike_conv2d(spikes, weight, bias, padding=1, backend=backend),
                     wrapped)


def test_linear_shape_errors_are_torchs_every_time():
    """A feature count that does not match the weight gets F.linear's own error, on every call
    (the shape check is remembered per geometry, its errors are not)."""
    spikes, weight = torch.zeros(3, 5), torch.zeros(2, 4)
    with pytest.raises(RuntimeError) as torch_error:
        F.linear(spikes, weight)
    for _ in range(2):
        with pytest.raises(RuntimeError) as ours:
            spike_linear(spikes, weight, backend="numba")
        assert str(ours.value) == str(torch_error.value)


@pytest.mark.parametrize("backend", ["dense", *SPARSE_BACKENDS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.float64, torch.int32])
def test_value_check_counts_the_same_everywhere(backend, dtype):
    """The numba kernels count non-binary values inside their scan (float32, uint8), the other
    paths in a pass before: the same error, with the same count, for conv and linear."""
    dev = device_for(backend)
    spikes = (torch.rand(3, 4, 5, 5, generator=torch.Generator().manual_seed(0)) < 0.3)
    spikes = spikes.to(dtype)
    flat = spikes.view(-1)
    flat[[1, 7, 60, 299]] = torch.tensor([2, 3, 1, 5], dtype=dtype)
    expected = int(((flat != 0) & (flat != 1)).sum())
    assert expected == 3
    with pytest.raises(ValueError, match=f"{expected} of 300 values are not"):
        spike_conv2d(spikes.to(dev), torch.ones(2, 4, 3, 3, device=dev), padding=1,
                     backend=backend)
    with pytest.raises(ValueError, match=f"{expected} of 300 values are not"):
        spike_linear(spikes.view(3, -1).to(dev), torch.ones(2, 100, device=dev), backend=backend)


def test_check_false_skips_the_value_check():
    spikes = torch.full((1, 2, 3, 3), 0.5)
    out = spike_conv2d(spikes, torch.ones(1, 2, 1, 1), check=False, backend="dense")
    assert out.shape == (1, 1, 3, 3)


@pytest.mark.parametrize("backend", SPARSE_BACKENDS)
def test_ops_train_through_the_dense_path_only(backend):
    """With autograd on and a weight that requires grad, "auto" takes the dense path (same
    gradients as F.conv2d / F.linear) and a sparse backend named outright refuses; under
    no_grad the sparse backend runs."""
    dev = device_for(backend)
    spikes = make_spikes((2, 4, 6, 6), 0.9).to(dev)
    weight = torch.randn(3, 4, 3, 3, device=dev, requires_grad=True)
    weight_linear = torch.randn(5, 144, device=dev, requires_grad=True)
    for op, args, dense in (
        (spike_conv2d, (spikes, weight), F.conv2d(spikes, weight)),
        (spike_linear, (spikes.view(2, -1), weight_linear),
         F.linear(spikes.view(2, -1), weight_linear)),
    ):
        out = op(*args, backend="auto")
        grad, = torch.autograd.grad(out.sum(), args[1])
        expected, = torch.autograd.grad(dense.sum(), args[1])
        torch.testing.assert_close(grad, expected)
        with pytest.raises(RuntimeError, match="no backward"):
            op(*args, backend=backend)
        with torch.no_grad():
            torch.testing.assert_close(op(*args, backend=backend), dense.detach(), atol=1e-5,
                                       rtol=1e-5)


def test_layers_train_through_the_dense_path():
    from neuro_emu.layers import SpikingConv2d

    torch.manual_seed(0)
    layer = SpikingConv2d(4, 6, 3, padding=1)
    x = make_spikes((3, 2, 4, 8, 8), 0.95)
    out = layer(x)
    out.sum().backward()
    assert layer.last_sparsity is None and layer.weight.grad is not None
    expected = torch.nn.functional.conv2d(x.flatten(0, 1), layer.weight, layer.bias, padding=1)
    torch.testing.assert_close(out.detach().flatten(0, 1), expected)


@pytest.mark.parametrize("sparsity,path", [(0.97, "sparse"), (0.3, "dense")])
def test_layers_pick_the_sparse_kernel_when_it_pays(monkeypatch, sparsity, path):
    from neuro_emu.layers import SpikingConv2d, SpikingLinear, synapses

    calls = []
    for name in ("spike_conv2d", "spike_linear"):
        real = getattr(synapses, name)
        monkeypatch.setattr(
            synapses, name, lambda *a, _real=real, **k: calls.append(k["backend"]) or _real(*a, **k)
        )
    torch.manual_seed(0)
    conv, linear = SpikingConv2d(4, 6, 3, padding=1, sparse_threshold=0.9), SpikingLinear(40, 5)
    x = make_spikes((3, 2, 4, 8, 8), sparsity)
    with torch.no_grad():
        out = conv(x)
        out_linear = linear(x.flatten(2)[..., :40])
    assert abs(conv.last_sparsity - sparsity) < 0.05
    assert calls == (["auto", "auto"] if path == "sparse" else [])
    dense = F.conv2d(x.flatten(0, 1), conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(out.flatten(0, 1), dense, atol=1e-5, rtol=1e-5)
    assert out_linear.shape == (3, 2, 5)


def test_layers_dtype_and_bias_training_do_not_depend_on_sparsity():
    """The path a layer takes (sparse above its threshold, dense below) changes neither what it
    accepts nor what it returns: any binary spike dtype, float64/float16/bfloat16 layers (the
    output in the weight's dtype), and a bias that trains while the weight is frozen."""
    from neuro_emu.layers import SpikingConv2d, SpikingLinear

    torch.manual_seed(0)
    for sparsity in (0.98, 0.3):
        x = make_spikes((2, 3, 2, 6, 6), sparsity)
        for layer_dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            layer = SpikingConv2d(2, 3, 3, padding=1).to(layer_dtype)
            for spike_dtype in (torch.bool, torch.uint8, torch.bfloat16, torch.float64):
                with torch.no_grad():
                    out = layer(x.to(spike_dtype))
                assert out.dtype == layer_dtype, (sparsity, layer_dtype, spike_dtype)
                expected = F.conv2d(x.flatten(0, 1).double(), layer.weight.double(),
                                    layer.bias.double(), padding=1)
                torch.testing.assert_close(out.flatten(0, 1).double(), expected, atol=0.05,
                                           rtol=0.02)
        for layer in (SpikingConv2d(2, 3, 3, padding=1, backend="numba"),
                      SpikingLinear(72, 3, backend="numba")):
            layer.weight.requires_grad_(False)
            out = layer(x if isinstance(layer, SpikingConv2d) else x.flatten(2))
            out.sum().backward()
            assert layer.bias.grad is not None and layer.last_sparsity is None


@pytest.mark.parametrize("kwargs,message", [
    (dict(sparse_threshold=-0.1), "sparse_threshold must be in"),
    (dict(sparse_threshold=float("nan")), "sparse_threshold must be in"),
    (dict(backend="cudnn"), "backend must be"),
])
def test_layers_check_their_arguments_when_built(kwargs, message):
    from neuro_emu.layers import SpikingConv2d, SpikingLinear

    for build in (lambda: SpikingConv2d(2, 3, 3, **kwargs), lambda: SpikingLinear(2, 3, **kwargs)):
        with pytest.raises(ValueError, match=message):
            build()


def test_layers_reject_non_binary_input():
    from neuro_emu.layers import SpikingLinear

    with torch.no_grad(), pytest.raises(ValueError, match="binary"):
        SpikingLinear(4, 2)(torch.full((2, 3, 4), 0.5))


def test_spiking_linear_follows_weight_updates():
    """The sparse path reads the weight as it is at each call: after an in-place update, also one
    through ``.data``, which leaves the parameter's version counter alone (a copy of the weight
    kept between calls and keyed on that counter would go stale)."""
    from neuro_emu.layers import SpikingLinear

    torch.manual_seed(0)
    layer = SpikingLinear(30, 5, sparse_threshold=0.0)  # always the sparse kernel
    x = make_spikes((2, 3, 30), 0.5)
    with torch.no_grad():
        layer(x)
        for update in (lambda: layer.weight.mul_(2),  # in place, as an optimiser step does
                       lambda: layer.weight.data.add_(1)):
            update()
            expected = F.linear(x, layer.weight, layer.bias)
            torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
