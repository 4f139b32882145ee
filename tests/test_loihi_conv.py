"""Loihi Conv -> LIF: against Lava's recorded traces (both weight handlings), against independent
computations, and every backend against every other (integer arithmetic: zero deviations)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuro_emu.loihi import lava_weights, run_conv_lif, run_dense_lif
from neuro_emu.ops.loihi_conv import conv_input
from tests.cases import (
    GOLDEN_DIR,
    LIVE_LAVA,
    assert_identical,
    device_for,
    golden_configs,
    record_live_golden,
    runnable_backends,
)

BACKENDS = runnable_backends()
GOLDEN = GOLDEN_DIR / "lava_conv_lif.npz"
GEOMETRY = ("stride", "padding", "dilation")


def load_config(path: Path, config: str) -> tuple[dict, dict]:
    """(run_conv_lif keyword arguments, Lava's u/v/s traces) of one recorded config."""
    with np.load(path) as data:
        order = [str(name) for name in data["_meta.param_order"]]
        a = {key.split(".", 1)[1]: data[key] for key in data.files
             if key.split(".")[0] == config}
    p = dict(zip(order, (int(x) for x in a["params"]), strict=True))
    kwargs = {name: p[name] for name in ("weight_exp", "num_weight_bits", "num_message_bits",
                                         "du", "dv", "vth", "groups")}
    kwargs.update({name: (p[f"{name}_h"], p[f"{name}_w"]) for name in GEOMETRY})
    kwargs.update({k: torch.from_numpy(a[k].astype(np.int64))
                   for k in ("weights", "in_spikes", "bias_mant", "bias_exp", "u0", "v0")})
    kwargs["weight_handling"] = str(a["weight_handling"])
    lava = {k: torch.from_numpy(a[k].astype(np.int64)) for k in "uvs"}
    return kwargs, lava


def compare_with_lava_file(path: Path, config: str, backend: str) -> None:
    kwargs, lava = load_config(path, config)
    dev = device_for(backend)
    kwargs = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    ours = run_conv_lif(**kwargs, backend=backend)
    for name, x in zip("uvs", ours, strict=True):
        assert_identical(f"{config} {name}", x.cpu().to(torch.int64), lava[name])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", golden_configs(GOLDEN))
def test_matches_lava_traces(config, backend):
    """Zero deviations in u, v and s from the traces Lava 0.10.0 recorded (tests/golden)."""
    compare_with_lava_file(GOLDEN, config, backend)


def test_golden_covers_both_handlings_and_the_edges():
    # The file must exercise what the Lava comparison is meant to pin down, or it proves little.
    configs = golden_configs(GOLDEN)
    assert len(configs) >= 12, configs
    seen = {"lava_conv": 0, "loihi": 0}
    wrapped_u = saturated_v = graded = asymmetric = depthwise = 0
    for config in configs:
        kwargs, lava = load_config(GOLDEN, config)
        seen[kwargs["weight_handling"]] += 1
        graded += kwargs["num_message_bits"] > 0
        asymmetric += len({kwargs[g] for g in GEOMETRY} | {tuple(kwargs["weights"].shape[2:])}) > 1
        depthwise += kwargs["groups"] == kwargs["in_spikes"].shape[1] > 1
        u = lava["u"]
        wrapped_u += bool(((u[1:] - u[:-1]).abs() > 2**23).any())
        saturated_v += bool((lava["v"].abs() == 2**23 - 1).any())
        assert int(lava["s"].sum()) > 0, f"{config}: no spikes at all"
    assert min(seen.values()) >= 5, seen
    assert min(wrapped_u, saturated_v, graded, asymmetric, depthwise) >= 1


@LIVE_LAVA
def test_matches_lava_live(tmp_path):
    """Where Lava runs, record its traces now (~3 min) and compare them too."""
    out = tmp_path / "live.npz"
    for config in record_live_golden("make_lava_golden_conv.py", out):
        compare_with_lava_file(out, config, "numba")


def random_case(seed: int, *, graded: bool, sign: str, geometry: dict, channels=(4, 6),
                size=(7, 9), steps: int = 6) -> dict:
    gen = torch.Generator().manual_seed(seed)
    c_in, c_out = channels
    groups, (kh, kw) = geometry.get("groups", 1), geometry.pop("kernel")
    low, high = {"mixed": (-300, 300), "excitatory": (0, 300), "inhibitory": (-300, 1)}[sign]
    weights = torch.randint(low, high, (c_out, c_in // groups, kh, kw), generator=gen)
    spikes = (torch.rand(steps, c_in, *size, generator=gen) < 0.35).long()
    if graded:
        spikes = spikes * torch.randint(1, 256, spikes.shape, generator=gen)
    return dict(weights=weights, in_spikes=spikes, num_message_bits=8 if graded else 0,
                weight_exp=int(torch.randint(-3, 4, (), generator=gen)),
                num_weight_bits=int(torch.randint(3, 9, (), generator=gen)), **geometry)


SYNAPSE_CASES = [
    pytest.param(dict(kernel=(3, 3), padding=1), "mixed", False, id="k3-p1-mixed"),
    pytest.param(dict(kernel=(5, 5), stride=2, padding=2), "excitatory", False, id="k5-s2-p2-exc"),
    pytest.param(dict(kernel=(1, 1), groups=2), "inhibitory", False, id="k1-g2-inh"),
    pytest.param(dict(kernel=(3, 2), stride=(2, 1), padding=(0, 1), dilation=(1, 2)), "mixed",
                 False, id="asym-k3x2"),
    pytest.param(dict(kernel=(3, 3), groups=2, dilation=2, padding=2), "mixed", True,
                 id="graded-g2-d2"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geometry,sign,graded", SYNAPSE_CASES)
def test_loihi_handling_is_conv2d_of_lava_weights(geometry, sign, graded, backend):
    """The default handling against F.conv2d in float64 on lava_weights, a floor shift by
    weight_exp and a one-step delay: written out here independently of the module."""
    case = random_case(3, graded=graded, sign=sign, geometry=dict(geometry))
    if backend == "triton":
        case["in_spikes"] = case["in_spikes"][:3]  # the interpreter is slow
    geo = {k: case[k] for k in (*GEOMETRY, "groups") if k in case}
    w = lava_weights(case["weights"], case["num_weight_bits"]).double()
    payload = case["in_spikes"] if graded else case["in_spikes"] != 0
    acc = F.conv2d(payload.double(), w, **geo).to(torch.int64)
    e = case["weight_exp"]
    acc = acc << e if e > 0 else acc >> -e
    expected = torch.cat([torch.zeros_like(acc[:1]), acc[:-1]])
    dev = device_for(backend)
    ours = conv_input(case.pop("weights").to(dev), case.pop("in_spikes").to(dev), **case,
                      backend=backend)
    assert_identical(f"{backend} a_in", ours.cpu(), expected)
    assert bool((expected != 0).any())


def test_lava_conv_handling_ignores_weight_settings_and_wraps_24_bits():
    # Lava's Conv keeps raw weights (no clip, no truncation, no exponent): a single 2^22 + 1
    # weight hit by two spikes sums to 2^23 + 2, which wraps to -2^23 + 2 in 24 bits.
    weights = torch.full((1, 1, 1, 2), 2**22 + 1)
    spikes = torch.ones(2, 1, 1, 2, dtype=torch.long)
    for backend in ("torch", "numba"):
        for kwargs in ({}, dict(weight_exp=3, num_weight_bits=4)):
            a = conv_input(weights, spikes, weight_handling="lava_conv", backend=backend, **kwargs)
            assert a.view(-1).tolist() == [0, -(2**23) + 2]
    # The default handling clips the (excitatory) weight to 255 and applies weight_exp.
    a = conv_input(weights, spikes, weight_exp=1)
    assert a.view(-1).tolist() == [0, 2 * 255 * 2]


def conv_matrix(weights: torch.Tensor, in_shape: tuple[int, int, int], **geometry) -> torch.Tensor:
    """The convolution as a Dense weight matrix [C_out*OH*OW, C_in*H*W]: column j is the
    response to a one-hot input j, with the weights as unit-tagged values."""
    n_in = int(np.prod(in_shape))
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, *in_shape)
    # Identify which weight each (output, input) pair uses: conv of one-hots with weight ids.
    ids = torch.arange(1, weights.numel() + 1, dtype=torch.float64).view(weights.shape)
    which = F.conv2d(eye, ids, **geometry).view(n_in, -1).T.round().long()
    flat = torch.cat([torch.zeros(1, dtype=torch.long), weights.reshape(-1)])
    return flat[which]


@pytest.mark.parametrize("geometry,sign,graded", SYNAPSE_CASES)
def test_conv_lif_is_dense_lif_on_the_conv_matrix(geometry, sign, graded):
    """run_conv_lif and the Lava-checked run_dense_lif on the same synapses, flattened C-H-W."""
    case = random_case(5, graded=graded, sign=sign, geometry=dict(geometry), steps=30)
    geo = {k: case[k] for k in (*GEOMETRY, "groups") if k in case}
    neuron = dict(du=700, dv=300, vth=40, bias_mant=60, bias_exp=2)
    u, v, s = run_conv_lif(**case, **neuron)
    matrix = conv_matrix(case["weights"], tuple(case["in_spikes"].shape[1:]), **geo)
    expected = run_dense_lif(matrix, case["in_spikes"].flatten(1), **neuron,
                             **{k: case[k] for k in ("weight_exp", "num_weight_bits",
                                                     "num_message_bits")})
    for name, x, y in zip("uvs", (u, v, s), expected, strict=True):
        assert_identical(name, x.flatten(1), y)
    assert bool((u != 0).any()) and (int(s.sum()) > 0 or sign == "inhibitory")


def conv_stack(backend: str, weight_handling: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    spikes = (torch.rand(12, 3, 9, 8, generator=gen) < 0.4).long()
    layers = [
        dict(weights=torch.randint(-255, 256, (4, 3, 3, 3), generator=gen), padding=1,
             weight_exp=1, du=500, dv=200, vth=torch.tensor([20, 40, 60, 80])),
        dict(weights=torch.randint(-255, 256, (4, 2, 3, 3), generator=gen), stride=2, groups=2,
             dilation=(1, 2), padding=(1, 2), du=-1, dv=0, vth=30, bias_mant=5),
        dict(weights=torch.randint(0, 300, (2, 4, 1, 1), generator=gen), num_weight_bits=5,
             du=4095, dv=4095, vth=10, bias_exp=torch.tensor([-2, 3])),
    ]
    dev = device_for(backend)
    traces, x = [], spikes.to(dev)
    for layer in layers:
        layer = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in layer.items()}
        u, v, s = run_conv_lif(in_spikes=x, **layer, weight_handling=weight_handling,
                               backend=backend)
        traces += [u.cpu(), v.cpu(), s.cpu()]
        x = s
    return traces


@pytest.mark.parametrize("weight_handling", ["loihi", "lava_conv"])
def test_backends_agree_on_a_conv_stack(weight_handling):
    results = {backend: conv_stack(backend, weight_handling) for backend in BACKENDS}
    assert int(results["torch"][-1].sum()) > 0, "the last layer never spikes"
    for a, b in itertools.combinations(BACKENDS, 2):
        for i, (x, y) in enumerate(zip(results[a], results[b], strict=True)):
            assert_identical(f"{a} vs {b} layer {i // 3} {'uvs'[i % 3]}", x, y)


def test_neuron_parameters_per_channel_and_per_neuron():
    case = random_case(2, graded=False, sign="mixed", geometry=dict(kernel=(3, 3), padding=1))
    vth = torch.tensor([10, 50, 100, 400, 20, 0])
    per_channel = run_conv_lif(**case, du=300, dv=100, vth=vth)
    per_neuron = run_conv_lif(**case, du=torch.full((6, 7, 9), 300), dv=100,
                              vth=vth[:, None, None].expand(6, 7, 9))
    for x, y in zip(per_channel, per_neuron, strict=True):
        assert_identical("per channel vs per neuron", x, y)
    # A threshold out of reach at one spiking neuron silences that neuron and no other.
    c, y, x = per_channel[2].any(0).nonzero()[0].tolist()
    vth_one = vth[:, None, None].repeat(1, 7, 9)
    vth_one[c, y, x] = 2**20
    _, _, s = run_conv_lif(**case, du=300, dv=100, vth=vth_one)
    assert (s != per_channel[2]).any(0).nonzero().tolist() == [[c, y, x]]
    assert int(s[:, c, y, x].sum()) == 0


def _args(**changes) -> dict:
    args = dict(weights=torch.ones(4, 2, 3, 3, dtype=torch.long),
                in_spikes=torch.ones(5, 4, 6, 6, dtype=torch.long), groups=2, du=0, dv=0, vth=10)
    args.update(changes)
    return args


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(weights=torch.ones(4, 2, 3, dtype=torch.long)), ValueError, "weights must be"),
        (dict(weights=torch.ones(4, 2, 3, 3)), TypeError, "weights must hold integers"),
        (dict(in_spikes=torch.ones(5, 4, 6, 6)), TypeError, "in_spikes must hold integers"),
        (dict(in_spikes=torch.ones(4, 6, 6, dtype=torch.long)), ValueError, "in_spikes must be"),
        (dict(in_spikes=torch.ones(5, 6, 6, 6, dtype=torch.long)), ValueError,
         "C_in=6 channels, weights expect 2 x groups=2"),
        (dict(groups=3), ValueError, "groups=3 must divide"),
        (dict(groups=0), ValueError, "groups must be a positive int"),
        (dict(num_weight_bits=0), ValueError, "num_weight_bits must be in 1..8"),
        (dict(num_message_bits=-1), ValueError, "num_message_bits must be >= 0"),
        (dict(weight_handling="lava"), ValueError, "weight_handling must be one of"),
        (dict(backend="cuda"), ValueError, "backend must be one of"),
        (dict(stride=1.5), TypeError, "stride must be an int or a pair"),
        (dict(stride=0), ValueError, "stride must be >= 1"),
        (dict(padding=(0, -1)), ValueError, "padding must be >= 0"),
        (dict(in_spikes=torch.ones(5, 4, 2, 2, dtype=torch.long)), RuntimeError,
         "Kernel size can't be greater than actual input size"),
        (dict(weights=torch.full((4, 2, 3, 3), 2**31), weight_handling="lava_conv"), ValueError,
         "takes int32 weights"),
        (dict(du=torch.zeros(3, dtype=torch.long)), ValueError,
         r"du must be a scalar, per channel \(4,\) or per neuron \(4, 4, 4\)"),
        (dict(vth=1.5), TypeError, "vth must be integer"),
        (dict(dv=4096), ValueError, r"dv must lie in \[0, 4095\]"),
        (dict(weight_exp=-32), ValueError, r"weight_exp must be in -31\.\.31, got -32"),
        (dict(weight_exp=64, weight_handling="lava_conv"), ValueError,
         r"weight_exp must be in -31\.\.31, got 64"),
        (dict(weight_exp=2.0), TypeError, "weight_exp must be an int, got 2.0"),
        (dict(num_weight_bits=7.5), TypeError, "num_weight_bits must be an int, got 7.5"),
    ],
)
def test_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        run_conv_lif(**_args(**kwargs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_steps_give_empty_traces(backend):
    dev = device_for(backend)
    args = _args(in_spikes=torch.ones(0, 4, 6, 6, dtype=torch.long))
    args = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    for name, t in zip("uvs", run_conv_lif(**args, backend=backend), strict=True):
        assert t.shape == (0, 4, 4, 4) and t.dtype == torch.int32, (name, t.shape, t.dtype)


@pytest.mark.parametrize("weight_exp", [-31, 31])
def test_weight_exp_bounds_agree_across_backends(weight_exp):
    gen = torch.Generator().manual_seed(6)
    weights = torch.randint(-256, 256, (3, 2, 3, 3), generator=gen)
    payloads = torch.randint(-2**23, 2**23, (3, 2, 5, 5), generator=gen)
    results = {b: run_conv_lif(weights.to(device_for(b)), payloads.to(device_for(b)), padding=1,
                               weight_exp=weight_exp, num_message_bits=24, du=100, dv=100,
                               vth=10, u0=-(2**30), backend=b) for b in BACKENDS}
    assert bool((results["torch"][0] != 0).any())
    for a, b in itertools.combinations(BACKENDS, 2):
        for name, x, y in zip("uvs", results[a], results[b], strict=True):
            assert_identical(f"{a} vs {b} {name}", x.cpu(), y.cpu())


def test_torch_backend_refuses_inexact_float64():
    # 24-bit payloads on 2^31 weights can exceed what float64 holds exactly: refuse, say why.
    with pytest.raises(ValueError, match="2\\^40"):
        conv_input(torch.full((1, 1, 3, 3), 2**30), torch.full((2, 1, 3, 3), 2**23),
                   num_message_bits=24, weight_handling="lava_conv", backend="torch")


@pytest.mark.parametrize("weight_handling", ["loihi", "lava_conv"])
def test_signed_and_wide_payloads_agree_across_backends(weight_handling):
    # Bit planes of negative and 12-bit payloads, 7-bit digits of wide raw weights: each backend
    # must recombine them into the same integers as the one float64 pass.
    gen = torch.Generator().manual_seed(4)
    weights = torch.randint(-5000, 5000, (3, 2, 3, 3), generator=gen)
    payloads = torch.randint(-4000, 4000, (4, 2, 6, 5), generator=gen)
    results = {b: conv_input(weights.to(device_for(b)), payloads.to(device_for(b)), padding=1,
                             num_message_bits=16, weight_handling=weight_handling,
                             backend=b).cpu() for b in BACKENDS}
    assert bool((results["torch"] != 0).any())
    for a, b in itertools.combinations(BACKENDS, 2):
        assert_identical(f"{a} vs {b}", results[a], results[b])
