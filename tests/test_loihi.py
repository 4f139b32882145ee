"""The Loihi fixed-point Dense -> LIF emulator: against Lava's recorded traces, by hand, and
every backend against every other (integer arithmetic: zero deviations everywhere)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_emu.loihi import PreparedDenseLIF, lava_weights, run_dense_lif
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
GOLDEN = GOLDEN_DIR / "lava_dense_lif.npz"
PARAM_ORDER = ("weight_exp", "num_weight_bits", "num_message_bits", "du", "dv", "vth")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", golden_configs(GOLDEN))
def test_matches_lava_traces(config, backend):
    """Zero deviations in u, v and s from the traces Lava 0.10.0 recorded (tests/golden)."""
    compare_with_lava_file(GOLDEN, config, backend)


@LIVE_LAVA
def test_matches_lava_live(tmp_path):
    """Where Lava runs, record its traces now (~1 min) and compare them too."""
    out = tmp_path / "live.npz"
    for config in record_live_golden("make_lava_golden.py", out):
        compare_with_lava_file(out, config, "numba")


def compare_with_lava_file(path: Path, config: str, backend: str) -> None:
    with np.load(path) as data:
        arrays = {key.split(".", 1)[1]: data[key] for key in data.files if
                  key.split(".")[0] == config}
    params = dict(zip(PARAM_ORDER, (int(p) for p in arrays["params"]), strict=True))
    dev = device_for(backend)
    u, v, s = run_dense_lif(
        torch.from_numpy(arrays["weights"]).to(dev),
        torch.from_numpy(arrays["in_spikes"]).to(dev),
        **params, bias_mant=torch.from_numpy(arrays["bias_mant"]),
        bias_exp=torch.from_numpy(arrays["bias_exp"]), u0=torch.from_numpy(arrays["u0"]),
        v0=torch.from_numpy(arrays["v0"]), backend=backend,
    )
    for name, ours, lava in (("u", u, arrays["u"]), ("v", v, arrays["v"]), ("s", s, arrays["s"])):
        assert_identical(f"{config} {name}", ours.cpu().to(torch.int64), torch.from_numpy(lava))


def random_case(seed: int, graded: bool, sign: str) -> dict:
    gen = torch.Generator().manual_seed(seed)
    low, high = {"mixed": (-300, 300), "excitatory": (0, 300), "inhibitory": (-300, 1)}[sign]
    weights = torch.randint(low, high, (9, 13), generator=gen)
    spikes = (torch.rand(110, 13, generator=gen) < 0.35).long()
    if graded:
        spikes = spikes * torch.randint(1, 256, spikes.shape, generator=gen)
    return dict(
        weights=weights, in_spikes=spikes, weight_exp=int(torch.randint(-3, 4, (), generator=gen)),
        num_weight_bits=int(torch.randint(3, 9, (), generator=gen)),
        num_message_bits=8 if graded else 0,
        du=torch.tensor([-1, 0, 4095, 1, 2047, 4094, 100, 3000, 17]),
        dv=torch.tensor([0, 4095, 1, 1000, 2047, 0, 4095, 10, 3999]),
        vth=torch.randint(0, 3000, (9,), generator=gen),
        bias_mant=torch.randint(-4096, 4096, (9,), generator=gen),
        bias_exp=torch.randint(-4, 8, (9,), generator=gen),
        u0=torch.randint(-(2**23), 2**23, (9,), generator=gen),
        v0=torch.randint(-(2**23) + 1, 2**23, (9,), generator=gen),
    )


@pytest.mark.parametrize(
    "seed,graded,sign",
    [pytest.param(s, g, w, id=f"seed{s}-{'graded' if g else 'binary'}-{w}")
     for s, (g, w) in enumerate(itertools.product([False, True],
                                                  ["mixed", "excitatory", "inhibitory"]))],
)
def test_backends_agree_exactly(seed, graded, sign):
    case = random_case(seed, graded, sign)
    results = {}
    for backend in BACKENDS:
        dev = device_for(backend)
        moved = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in case.items()}
        results[backend] = [t.cpu() for t in run_dense_lif(**moved, backend=backend)]
    for a, b in itertools.combinations(BACKENDS, 2):
        for name, x, y in zip("uvs", results[a], results[b], strict=True):
            assert_identical(f"{a} vs {b} {name}", x, y)


@pytest.mark.parametrize("graded", [False, True], ids=["binary", "graded"])
def test_prepared_layer_reruns_exactly_across_neuron_blocks(graded):
    """The numba engine's neuron blocks (a partial last one too) and a prepared layer reused on
    new inputs and initial states give the torch spec's traces."""
    from neuro_emu.reference.loihi_dense_lif import MAX_BLOCK

    gen = torch.Generator().manual_seed(7)
    n_out, n_in = 2 * MAX_BLOCK + 37, 40
    weights = torch.randint(-300, 300, (n_out, n_in), generator=gen)
    params = dict(weight_exp=-1, num_weight_bits=7, num_message_bits=8 if graded else 0,
                  du=torch.randint(-1, 4096, (n_out,), generator=gen), dv=1000,
                  vth=torch.randint(0, 200, (n_out,), generator=gen), bias_mant=3, bias_exp=2)
    prepared = PreparedDenseLIF(weights, **params, backend="numba")
    for _ in range(2):
        spikes = (torch.rand(30, n_in, generator=gen) < 0.2).long()
        if graded:
            spikes = spikes * torch.randint(1, 256, spikes.shape, generator=gen)
        u0 = torch.randint(-(2**20), 2**20, (n_out,), generator=gen)
        expected = run_dense_lif(weights, spikes, **params, u0=u0, v0=5, backend="torch")
        got = prepared.run(spikes, u0=u0, v0=5)
        for name, x, y in zip("uvs", got, expected, strict=True):
            assert_identical(f"prepared {name}", x, y)


def test_hand_computed_trajectory():
    # One neuron, one input weighted 64 firing every step, du=4095 (u = a << 6 each step: no
    # memory), dv=0 (v integrates without decay), vth=100 (6400): a_in = 0, 64, 64, ...
    # u = 0, 4096, 4096, ...; v = 0, 4096, 8192 -> spike (8192 > 6400), reset to 0, 4096, ...
    u, v, s = run_dense_lif(torch.tensor([[64]]), torch.ones(6, 1, dtype=torch.long),
                            du=4095, dv=0, vth=100, backend="numba")
    assert u.view(-1).tolist() == [0, 4096, 4096, 4096, 4096, 4096]
    assert v.view(-1).tolist() == [0, 4096, 0, 4096, 0, 4096]
    assert s.view(-1).tolist() == [0, 0, 1, 0, 1, 0]


def test_threshold_exactly_reached_does_not_spike():
    # The bias alone brings v to vth << 6 = 6400: 6400 > 6400 is false (Lava's '>'). Next step
    # dv=4095 keeps tdiv(6400 * 1, 12) = 1 of it: 6401 spikes and v resets; then 6400 again.
    _, v, s = run_dense_lif(torch.zeros(1, 1, dtype=torch.long),
                            torch.zeros(3, 1, dtype=torch.long), du=0, dv=4095, vth=100,
                            bias_mant=100, bias_exp=6, backend="numba")
    assert v.view(-1).tolist() == [6400, 0, 6400]
    assert s.view(-1).tolist() == [0, 1, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_u_wraps_and_v_saturates(backend):
    dev = device_for(backend)
    # a_in = 255 << 3 per step, << 6 into u; du=-1 holds u: it passes 2^23 and wraps.
    u, v, _ = run_dense_lif(torch.full((1, 1), 255, device=dev),
                            torch.ones(80, 1, dtype=torch.long, device=dev), weight_exp=3, du=-1,
                            dv=0, vth=2**31 - 1, backend=backend)
    u = u.view(-1).cpu()
    assert int(u.max()) <= 2**23 and int(u.min()) > -(2**23)
    assert bool((u[1:] < u[:-1]).any())  # the wrap
    assert int(v.max()) == 2**23 - 1  # saturated, not wrapped


@pytest.mark.parametrize("backend", BACKENDS)
def test_int32_arithmetic_as_lava(backend):
    # a_in = 128 << 18 = 2^25 from step 1: Lava's int32 a_in << 6 is -2^31, which u's wrap moves
    # to -2^31 + 2^24; v saturates low and never spikes. In int64 u was +2^31 - 2^24 (cut to
    # int32 in the trace only), v saturated high and spiked. tests/golden's a_in_int32_wrap,
    # uv_int32_sum_wrap and graded_int32_dot check the same arithmetic against Lava itself.
    dev = device_for(backend)
    u, v, s = run_dense_lif(torch.tensor([[128]], device=dev),
                            torch.ones(4, 1, dtype=torch.long, device=dev), weight_exp=18,
                            du=4095, dv=4095, vth=10, backend=backend)
    assert u.view(-1).tolist() == [0] + [-(2**31) + 2**24] * 3
    assert v.view(-1).tolist() == [0] + [-(2**23) + 1] * 3
    assert s.view(-1).tolist() == [0] * 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_steps_give_empty_traces(backend):
    dev = device_for(backend)
    traces = run_dense_lif(torch.ones(2, 3, dtype=torch.long, device=dev),
                           torch.ones(0, 3, dtype=torch.long, device=dev), du=0, dv=0, vth=10,
                           backend=backend)
    for name, t in zip("uvs", traces, strict=True):
        assert t.shape == (0, 2) and t.dtype == torch.int32, (name, t.shape, t.dtype)


@pytest.mark.parametrize("weight_exp", [-31, 31, np.int64(-8), np.int32(7)],
                         ids=["min", "max", "np.int64", "np.int32"])
def test_weight_exp_bounds_agree_on_every_backend(weight_exp):
    case = random_case(3, True, "mixed")
    case["in_spikes"] = case["in_spikes"][:20] * 2**15  # |W @ s| past 2^31: all of it shifts
    case.update(weight_exp=weight_exp, num_message_bits=24, num_weight_bits=np.int64(8))
    results = {}
    for backend in BACKENDS:
        dev = device_for(backend)
        moved = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in case.items()}
        results[backend] = [t.cpu() for t in run_dense_lif(**moved, backend=backend)]
    assert bool((results["torch"][0] != 0).any())
    for a, b in itertools.combinations(BACKENDS, 2):
        for name, x, y in zip("uvs", results[a], results[b], strict=True):
            assert_identical(f"{a} vs {b} {name}", x, y)


@pytest.mark.parametrize("weights", [torch.tensor([[127, -3, 300, -400]], dtype=torch.int16),
                                     torch.tensor([[0, -3, -300]], dtype=torch.int16),
                                     torch.tensor([[0, -3, -300]])],
                         ids=["int16-mixed", "int16-inhibitory", "int64-inhibitory"])
def test_lava_weights_leaves_its_input_alone(weights):
    before = weights.clone()
    lava_weights(weights, num_weight_bits=5)
    assert torch.equal(weights, before)


def test_lava_weight_rules():
    assert lava_weights(torch.tensor([127, -3, 300, -400])).tolist() == [126, -4, 254, -256]
    assert lava_weights(torch.tensor([0, -3, -300])).tolist() == [0, -3, -255]  # inhibitory
    assert lava_weights(torch.tensor([3, 300]), num_weight_bits=6).tolist() == [0, 252]


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(du=4096), ValueError, r"du must lie in \[-1, 4095\]"),
        (dict(dv=-1), ValueError, r"dv must lie in \[0, 4095\]"),
        (dict(vth=1.5), TypeError, "vth must be integer"),
        (dict(bias_mant=torch.zeros(3, dtype=torch.long)), ValueError, r"shape \(2,\)"),
        (dict(num_weight_bits=9), ValueError, "num_weight_bits"),
        (dict(weights=torch.ones(2, 3)), TypeError, "weights must hold integers"),
        (dict(in_spikes=torch.ones(4, 5, dtype=torch.long)), ValueError, "5 inputs per step"),
        (dict(backend="cuda"), ValueError, "backend must be"),
        (dict(weights=torch.ones(0, 3, dtype=torch.long)), ValueError, r"got shape \(0, 3\)"),
        (dict(in_spikes=torch.ones(4, 3)), TypeError, "in_spikes must hold integers"),
        (dict(weight_exp=32), ValueError, r"weight_exp must be in -31\.\.31, got 32"),
        (dict(weight_exp=-64), ValueError, r"weight_exp must be in -31\.\.31, got -64"),
        (dict(weight_exp=1.5), TypeError, "weight_exp must be an int, got 1.5"),
        (dict(weight_exp=torch.tensor(2)), TypeError, "weight_exp must be an int"),
        (dict(num_weight_bits=7.0), TypeError, "num_weight_bits must be an int, got 7.0"),
        (dict(num_weight_bits=True), TypeError, "num_weight_bits must be an int, got True"),
    ],
)
def test_errors(kwargs, error, message):
    args = dict(weights=torch.ones(2, 3, dtype=torch.long),
                in_spikes=torch.ones(4, 3, dtype=torch.long), du=0, dv=0, vth=10)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        run_dense_lif(**args)


def test_dense_input_refuses_sums_float64_would_round():
    from neuro_emu.ops.loihi_lif import dense_input

    payload = torch.tensor([[0], [2**53 + 1]])  # float64 holds 2^53 + 1 as 2^53
    with pytest.raises(ValueError, match="beyond the 2\\^53 that float64 holds exactly"):
        dense_input(torch.ones(1, 1, dtype=torch.long), payload, 0, graded=True)
    with pytest.raises(TypeError, match="in_spikes must hold integers"):
        dense_input(torch.ones(1, 1, dtype=torch.long), payload.double(), 0, graded=True)


GOLDEN_STACK = GOLDEN_DIR / "lava_dense_lif_stack.npz"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", golden_configs(GOLDEN_STACK))
def test_stack_matches_lava_traces(config, backend):
    """Two chained Dense -> LIF layers against Lava's recording of the same network."""
    from neuro_emu.loihi import DenseLIF, run_dense_lif_stack

    with np.load(GOLDEN_STACK) as data:
        arrays = {key.split(".", 1)[1]: torch.from_numpy(data[key]) for key in data.files
                  if key.split(".")[0] == config}
    dev = device_for(backend)
    layers = []
    for k in (1, 2):
        a = {name: arrays[f"layer{k}.{name}"] for name in
             ("weights", "params", "bias_mant", "bias_exp", "u0", "v0")}
        params = dict(zip(PARAM_ORDER, (int(p) for p in a.pop("params")), strict=True))
        layers.append(DenseLIF(weights=a.pop("weights").to(dev), **params, **a))
    traces = run_dense_lif_stack(layers, arrays["in_spikes"].to(dev), backend=backend)
    for k, (u, v, s) in enumerate(traces, start=1):
        for name, ours in (("u", u), ("v", v), ("s", s)):
            assert_identical(f"{config} layer{k} {name}", ours.cpu().to(torch.int64),
                             arrays[f"layer{k}.{name}"])


def test_stack_is_the_composition_of_layers():
    from neuro_emu.loihi import DenseLIF, run_dense_lif_stack

    case = random_case(7, False, "mixed")
    first = DenseLIF(**{k: v for k, v in case.items() if k != "in_spikes"})
    second = DenseLIF(torch.randint(-255, 256, (5, 9), generator=torch.Generator().manual_seed(8)),
                      du=300, dv=20, vth=40, weight_exp=-2, num_weight_bits=6)
    (u1, v1, s1), (u2, v2, s2) = run_dense_lif_stack([first, second], case["in_spikes"])
    expected = run_dense_lif(second.weights, s1, du=300, dv=20, vth=40, weight_exp=-2,
                             num_weight_bits=6)
    for name, a, b in zip("uvs", (u2, v2, s2), expected, strict=True):
        assert_identical(name, a, b)
    with pytest.raises(ValueError, match="at least one"):
        run_dense_lif_stack([], case["in_spikes"])


def _float_and_loihi(num_weight_bits: int):
    from neuro_emu.loihi import run_dense_lif_stack
    from neuro_emu.loihi.quantize import quantize_linear_lif
    from neuro_emu.ops import multistep_lif

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 20, generator=gen) * 0.3
    bias = torch.randn(10, generator=gen) * 0.05
    spikes = (torch.rand(200, 20, generator=gen) < 0.3).float()
    layer, report = quantize_linear_lif(weight, bias, beta=0.9, v_th=1.0,
                                        num_weight_bits=num_weight_bits)
    float_spikes = multistep_lif(spikes @ weight.T + bias, beta=0.9, v_th=1.0, reset="zero",
                                 backend="torch")
    ((_, _, loihi_spikes),) = run_dense_lif_stack([layer], spikes.long())
    return layer, report, float_spikes, loihi_spikes


def test_quantized_layer_spikes_like_the_float_one():
    from neuro_emu.loihi.quantize import spike_agreement

    agreement = {}
    for bits in (8, 6, 4):
        layer, report, float_spikes, loihi_spikes = _float_and_loihi(bits)
        agreement[bits] = spike_agreement(float_spikes, loihi_spikes, depth=1)
        assert layer.du == 4095 and layer.dv == round(0.1 * 4096)
        assert abs(report.beta_error) < 2**-12 and abs(report.v_th_error) < 64 / report.scale
        assert report.weight_clipped == 0
        assert int(layer.bias_mant.abs().max()) <= 4095  # 13-bit signed mantissa
    assert agreement[8] >= 0.95, agreement
    assert agreement[8] >= agreement[6] >= agreement[4], agreement


def test_quantizer_rejects_what_it_cannot_map():
    from neuro_emu.loihi.quantize import quantize_linear_lif, spike_agreement

    with pytest.raises(ValueError, match="v_th > 0"):
        quantize_linear_lif(torch.ones(2, 2), None, beta=0.5, v_th=0.0)
    with pytest.raises(ValueError, match="all weights are zero"):
        quantize_linear_lif(torch.zeros(2, 2), None, beta=0.5, v_th=1.0)
    # The largest weight sets the scale (it lands on 254): a threshold 1000 times it needs
    # vth = 254000, a bias 100 times it bias_exp = 9; Loihi has 17 and 3 bits for them.
    with pytest.raises(ValueError, match=r"vth = 254000, beyond Loihi's 17-bit threshold"):
        quantize_linear_lif(torch.full((2, 2), 1e-3), None, beta=0.5, v_th=1.0)
    with pytest.raises(ValueError, match=r"needs bias_exp = 9 .* 3-bit bias_exp \(0\.\.7\)"):
        quantize_linear_lif(torch.ones(2, 2), torch.tensor([100.0, 0.0]), beta=0.5, v_th=1.0)
    layer, _ = quantize_linear_lif(torch.ones(2, 2), torch.tensor([32.0, 0.0]), beta=0.5,
                                   v_th=516.0)  # both just fit
    assert layer.bias_exp == 7 and layer.vth == 131064
    with pytest.raises(ValueError, match="more than 3 steps"):
        spike_agreement(torch.zeros(3, 2), torch.zeros(3, 2), depth=3)
