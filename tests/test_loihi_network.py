"""Whole networks on the Loihi emulator: folding exact in float64, quantization reported, the
runner tied to the golden-tested Dense -> LIF path, backends identical, resources by hand."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import neuro_emu
from neuro_emu.layers import IF, LIF, Scale, SpikingNetwork
from neuro_emu.loihi import run_dense_lif
from neuro_emu.loihi.network import (
    LoihiLayer,
    LoihiNetwork,
    RunStats,
    Synapse,
    encode_input,
    evaluate_accuracy,
    fold_network,
    quantize_network,
    run_layers,
)
from neuro_emu.loihi.resources import (
    CORE_MEMORY_BITS,
    ENERGY_PER_SYNOP_PJ,
    STATE_BITS_PER_NEURON,
    resource_report,
)
from tests.cases import assert_identical, runnable_backends

BACKENDS = runnable_backends()


def neuron(v_th: float = 1.0, **kw) -> IF:
    return IF(v_th=v_th, v_init=v_th / 2, step_mode="folded", backend="torch", **kw)


def mlp(timesteps: int = 16, seed: int = 0) -> SpikingNetwork:
    """A converted-style MLP on [3, 2, 2] inputs: IF + Scale, one per-channel Scale."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Flatten(), nn.Linear(12, 20), neuron(), Scale(0.7),
                         nn.Linear(20, 16), neuron(0.8), Scale(torch.rand(16) + 0.5),
                         nn.Linear(16, 5))
    return SpikingNetwork(body, timesteps).eval()


def conv_net(timesteps: int = 8, seed: int = 0) -> SpikingNetwork:
    """Conv-BN-IF-Scale-AvgPool twice, then Flatten-Linear, on [3, 8, 8] inputs."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), neuron(), Scale(0.9),
                         nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, padding=1, bias=False),
                         nn.BatchNorm2d(6), neuron(), Scale(torch.rand(6) + 0.5),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
    for m in body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return SpikingNetwork(body, timesteps).eval()


class Residual(nn.Module):
    """A stem, a residual block (identity shortcut summed before the neuron), global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.if0, self.s0 = neuron(), Scale(0.8)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.if1, self.s1 = neuron(), Scale(0.6)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.if2, self.s2 = neuron(), Scale(0.9)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.s0(self.if0(self.conv0(x)))
        y = self.s1(self.if1(self.conv1(x)))
        z = self.s2(self.if2(self.conv2(y) + x))
        return self.fc(torch.flatten(self.pool(z), 1))


def residual(timesteps: int = 8) -> SpikingNetwork:
    torch.manual_seed(3)
    return SpikingNetwork(Residual(), timesteps).eval()


NETS = {"mlp": (mlp, (3, 2, 2)), "conv": (conv_net, (3, 8, 8)), "residual": (residual, (3, 6, 6))}


@pytest.mark.parametrize("name", list(NETS))
def test_folding_is_exact_in_float64(name):
    """The folded plan (BN, Scale, pools, flatten in the synapses) gives the float network's
    output in float64: same spikes everywhere, outputs equal to rounding."""
    make, shape = NETS[name]
    snn = make()
    plan = fold_network(snn, shape)
    x = torch.randn(5, *shape, dtype=torch.float64)
    with torch.no_grad():
        expected = snn.double()(x)
    got = plan.forward(x, snn.timesteps)
    assert float((got - expected).abs().max()) <= 1e-12 * max(1.0, float(expected.abs().max()))


def test_folded_synapses_have_the_expected_shapes():
    plan = fold_network(conv_net(), (3, 8, 8))
    first, second, readout = plan.layers
    assert (first.synapses[0].kind, first.synapses[0].stride) == ("conv", 1)
    # AvgPool(2) then Conv(3, pad 1): one conv, kernel 6, stride 2, padding 2.
    syn = second.synapses[0]
    assert tuple(syn.weight.shape) == (6, 4, 6, 6) and (syn.stride, syn.padding) == (2, 2)
    # AvgPool(2) then Flatten then Linear: the expanded [5, 6 * 4 * 4] matrix.
    assert readout.readout and tuple(readout.synapses[0].weight.shape) == (5, 96)
    assert [layer.depth for layer in plan.layers] == [1, 2, 3]


def test_residual_shortcut_gets_an_aligning_delay():
    plan = fold_network(residual(), (3, 6, 6))
    block_out = plan.layers[2]
    delays = sorted((s.source, s.delay) for s in block_out.synapses)
    assert delays == [(0, 1), (1, 0)]  # the shortcut skips one layer: one extra step
    assert block_out.synapses[[s.source for s in block_out.synapses].index(0)].groups == 4


def _agreement(net: LoihiNetwork, x: torch.Tensor) -> tuple[float, float]:
    """(argmax agreement, max |output diff| / output range) of the integer network with the
    float64 plan under Loihi's hard reset."""
    out = net(x).double()
    ref = net.plan.forward(x, net.timesteps, reset="zero")
    same = float((out.argmax(1) == ref.argmax(1)).double().mean())
    return same, float((out - ref).abs().max() / (ref.max() - ref.min()))


@pytest.mark.parametrize("name", list(NETS))
def test_integer_network_tracks_the_hard_reset_float_network(name):
    make, shape = NETS[name]
    torch.manual_seed(1)
    x = torch.randn(16, *shape).clamp(-2.5, 2.5)
    net = LoihiNetwork(make(), input_shape=shape, input_range=2.5)
    same, diff = _agreement(net, x)
    assert same >= 0.8 and diff < 0.1, (same, diff)
    assert net.stats.input_clipped == 0 and net.stats.samples == 16


def test_backends_give_identical_traces():
    """Integer arithmetic: every backend gives the same spikes in every layer and the same
    readout (tiny shapes: Triton may run in its interpreter)."""
    snn = residual(timesteps=3)
    x = torch.randn(2, 3, 6, 6)
    results = {}
    for backend in BACKENDS:
        layers, _ = quantize_network(fold_network(snn, (3, 6, 6)), 3, input_range=2.5)
        payload, _ = encode_input(x, 2.5)
        out, spikes = run_layers(layers, payload, 3, backend=backend, record=True)
        results[backend] = (out, spikes)
    assert len(results) >= 2
    for a, b in itertools.combinations(results, 2):
        assert_identical(f"{a} vs {b} readout", results[a][0], results[b][0])
        for k, (sa, sb) in enumerate(zip(results[a][1], results[b][1], strict=True)):
            assert_identical(f"{a} vs {b} layer {k} spikes", sa, sb)


def test_runner_equals_run_dense_lif_layer_by_layer():
    """The network runner's first two layers are exactly run_dense_lif (the path checked
    against Lava's traces) on the same integers, sample by sample."""
    net = LoihiNetwork(mlp(timesteps=6), input_shape=(3, 2, 2), input_range=2.5)
    x = torch.randn(3, 3, 2, 2)
    payload, _ = encode_input(x, 2.5)
    _, spikes = run_layers(net.layers, payload, 6, record=True)
    steps = 6 + net.layers[-1].depth
    first, second = net.layers[:2]
    for b in range(3):
        stream = torch.zeros(steps, 12, dtype=torch.long)
        stream[:6] = payload[b].flatten()
        upstream = stream
        for layer, recorded in ((first, spikes[0]), (second, spikes[1])):
            (syn,) = layer.synapses
            _, _, s = run_dense_lif(syn.weights, upstream, weight_exp=syn.weight_exp,
                                    num_message_bits=syn.num_message_bits, du=layer.du,
                                    dv=layer.dv, vth=layer.vth, bias_mant=layer.bias_mant,
                                    bias_exp=layer.bias_exp, v0=layer.v0)
            assert_identical(f"sample {b} {layer.name}", s, recorded[:, b].to(torch.int32))
            upstream = s.long()


def test_runner_conv_layers_equal_run_conv_lif():
    """The conv layers (the first on graded payloads, the second a pool-folded 6x6 stride-2
    conv on spikes) are exactly run_conv_lif, checked against Lava in tests/golden."""
    from neuro_emu.loihi import run_conv_lif

    net = LoihiNetwork(conv_net(timesteps=4), input_shape=(3, 8, 8), input_range=2.5)
    x = torch.randn(2, 3, 8, 8)
    payload, _ = encode_input(x, 2.5)
    _, spikes = run_layers(net.layers, payload, 4, record=True)
    steps = 4 + net.layers[-1].depth
    for b in range(2):
        upstream = torch.zeros(steps, 3, 8, 8, dtype=torch.long)
        upstream[:4] = payload[b]
        for layer, recorded in zip(net.layers[:2], spikes, strict=True):
            (syn,) = layer.synapses
            _, _, s = run_conv_lif(syn.weights, upstream, stride=syn.stride, padding=syn.padding,
                                   weight_exp=syn.weight_exp,
                                   num_message_bits=syn.num_message_bits, du=layer.du,
                                   dv=layer.dv, vth=layer.vth,
                                   bias_mant=layer.bias_mant.view(layer.shape),
                                   bias_exp=layer.bias_exp, v0=layer.v0.view(layer.shape),
                                   backend="torch")
            assert_identical(f"sample {b} {layer.name}", s, recorded[:, b].to(torch.int32))
            assert int(s.sum()) > 0
            upstream = s.long()


def test_compile_loihi2_sim_works_with_evaluate():
    snn = mlp()
    net = neuro_emu.compile(snn, target="loihi2_sim", input_shape=(3, 2, 2), input_range=2.5)
    assert isinstance(net, LoihiNetwork) and net.float_net is snn
    torch.manual_seed(2)
    images = torch.randn(12, 3, 2, 2).clamp(-2.5, 2.5)
    with torch.no_grad():
        labels = snn(images).argmax(1)  # labels the float network gets right
    loader = [(images[:6], labels[:6]), (images[6:], labels[6:])]
    acc = neuro_emu.evaluate(net, loader)
    manual = float((net(images).argmax(1) == labels).double().mean())
    assert acc == pytest.approx(manual)
    result = evaluate_accuracy(net, loader, progress=False)
    assert result["float"] == 1.0 and result["samples"] == 12
    assert result["loihi"] == pytest.approx(acc)
    assert 0.0 <= result["float_hard_reset"] <= 1.0
    seen = net.stats.samples
    overall, per_layer = neuro_emu.measure_sparsity(net, loader, per_layer=True)
    assert net.stats.samples == seen  # its own counters, the network's left as they were
    net.reset_stats()
    net(images)
    hidden = [net.stats.layers[layer.name] for layer in net.layers[:-1]]
    spikes, steps = sum(c.spikes for c in hidden), sum(c.neuron_steps for c in hidden)
    assert steps == 12 * (16 + 3) * (20 + 16) and 0 < spikes < steps
    assert overall == pytest.approx(1 - spikes / steps) and len(per_layer) == 2
    with pytest.raises(TypeError, match="set its .timesteps"):
        neuro_emu.evaluate_timesteps(net, loader, [1, 2])
    with pytest.raises(ValueError, match="apply to target 'loihi2_sim' only"):
        neuro_emu.compile(snn, "cpu", timesteps=3)
    with pytest.raises(TypeError, match="SpikingNetwork"):
        neuro_emu.compile(nn.Linear(2, 2), "loihi2_sim")


def test_timesteps_setter_requantizes_the_readout():
    net = LoihiNetwork(mlp(), input_shape=(3, 2, 2), input_range=2.5)
    scale_16 = net.layers[-1].scale
    net.timesteps = 64
    assert net.report.timesteps == 64 and net.layers[-1].scale < scale_16


def test_directly_trained_snn_vgg_folds_batchnorm():
    from neuro_emu.models import build_model

    snn = build_model("snn-vgg", width=0.0625, timesteps=2, backend="torch").eval()
    plan = fold_network(snn, (3, 32, 32))
    assert len(plan.layers) == 8 and all(layer.beta == 0.5 for layer in plan.layers[:-1])
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = snn.double()(x)
    assert float((plan.forward(x, 2) - expected).abs().max()) <= 1e-12
    layers, report = quantize_network(plan, 2)
    assert all(layer.dv == 2048 for layer in layers[:-1])  # beta 0.5
    assert all(q.reset_mismatch for q in report.layers[:-1])
    assert "hard*" in report.format()


def test_quantization_report_uses_the_8_bit_range():
    plan = fold_network(conv_net(), (3, 8, 8))
    layers, report = quantize_network(plan, 8)
    for layer, q in zip(layers, report.layers, strict=True):
        lead = max(int(s.weights.abs().max()) for s in layer.synapses)
        assert lead in (254, 255)  # the largest weight sits on the top of the grid
        for syn, sq in zip(layer.synapses, q.synapses, strict=True):
            assert sq.weight_exp == syn.weight_exp and sq.weight_clipped == 0
            assert sq.weight_rel_error <= 1 / 254 + 1e-9  # half a step of 2 in 254
            assert torch.equal(syn.weights_lava(), syn.weights)  # already on Lava's grid
        assert q.clipped == 0
        assert abs(q.v_th_rel_error) <= 64 / (q.scale * 0.5) or q.readout


def test_quantizer_clips_and_counts():
    plan = fold_network(mlp(), (3, 2, 2))
    first = plan.layers[0].name
    auto, _ = quantize_network(plan, 16)
    # A scale 64x the automatic one with the automatic exponent: weights overflow the 8-bit
    # range, and the threshold its 17 bits; both are clipped and counted.
    layers, report = quantize_network(plan, 16, scales={first: auto[0].scale * 64},
                                      weight_exps={first: auto[0].synapses[0].weight_exp})
    q = report.layers[0]
    raw = plan.layers[0].synapses[0].weight * report.input_step * auto[0].scale * 64 / (
        64 * 2.0 ** auto[0].synapses[0].weight_exp)
    expected = int(((torch.round(raw / 2) * 2).abs() > 254).sum())
    assert q.synapses[0].weight_clipped == expected > 0
    assert q.vth_clipped == 1 and layers[0].vth == 2**17 - 1
    assert int(layers[0].synapses[0].weights.abs().max()) <= 256
    with pytest.raises(ValueError, match="unknown layers"):
        quantize_network(plan, 16, scales={"nope": 1.0})
    # Inputs beyond input_range: clipped to the payload range and counted.
    payload, clipped = encode_input(torch.tensor([[0.5, 3.0, -4.0, 2.5]]), 2.5)
    assert clipped == 2 and payload.tolist() == [[25, 127, -127, 127]]


def _layer(**kw) -> LoihiLayer:
    args = dict(name="l", shape=(2,), synapses=(), du=0, dv=0, vth=10,
                bias_mant=torch.zeros(2, dtype=torch.long), bias_exp=0,
                v0=torch.zeros(2, dtype=torch.long), scale=1.0)
    args.update(kw)
    return LoihiLayer(**args)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(vth=2**17), r"vth must lie in \[0, 131071\] \(Loihi's range\), got 131072"),
        (dict(du=4096), r"du must lie in \[-1, 4095\] .*got 4096"),
        (dict(dv=-1), r"dv must lie in \[0, 4095\] .*got -1"),
        (dict(bias_mant=torch.tensor([0, 5000])), r"bias_mant must lie in \[-4096, 4095\] .*5000"),
        (dict(bias_exp=8), r"bias_exp must lie in \[0, 7\] .*got 8"),
        (dict(v0=torch.tensor([0, -(2**23)])), r"v0 must lie in .*-8388608"),
    ],
)
def test_out_of_range_parameters_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _layer(**kwargs)


def test_out_of_range_weights_are_errors():
    with pytest.raises(ValueError, match=r"weights must lie in \[-256, 255\] .*got 300"):
        Synapse(-1, "dense", torch.tensor([[1, 300]]))
    with pytest.raises(ValueError, match=r"num_weight_bits must lie in \[1, 8\] .*got 9"):
        Synapse(-1, "dense", torch.tensor([[1, 3]]), num_weight_bits=9)
    with pytest.raises(TypeError, match="weights must be an integer"):
        Synapse(-1, "dense", torch.tensor([[1.0]]))


def test_saturations_are_counted():
    """One neuron held at u (du = -1) fed 255 << 7 per step: u wraps past 2^23; a second one
    with a large bias and no leak saturates v. Expected counts from a scalar loop of the spec."""
    syn = Synapse(-1, "dense", torch.tensor([[255], [0]]), weight_exp=7)
    layer = _layer(shape=(2,), synapses=(syn,), du=-1, dv=0, vth=2**17 - 1,
                   bias_mant=torch.tensor([0, 4095]), bias_exp=7)
    readout = _layer(name="r", shape=(1,), synapses=(Synapse(0, "dense", torch.tensor([[1, 1]])),),
                     du=4095, vth=2**17 - 1, bias_mant=torch.zeros(1, dtype=torch.long),
                     v0=torch.zeros(1, dtype=torch.long), readout=True, depth=2)
    stats = RunStats()
    steps = 40
    run_layers([layer, readout], torch.ones(1, 1, dtype=torch.long), steps - 2, stats=stats)
    wraps = sats = 0
    for bias, weight in ((0, 255 << 7), (4095 << 7, 0)):
        u = v = 0
        for k in range(steps):
            a = weight if 1 <= k <= steps - 2 else 0  # input at steps 0..T-1, one step late
            u = u + (a << 6)
            if u > 2**23 or u <= -(2**23):
                wraps += 1
                u = u - 2**24 if u > 0 else u + 2**24
            v = v + u + bias
            if abs(v) > 2**23 - 1:
                sats += 1
                v = max(-(2**23 - 1), min(2**23 - 1, v))
            if v > (2**17 - 1) << 6:
                v = 0
    assert stats.layers["l"].u_wraps == wraps > 0
    assert stats.layers["l"].v_saturations == sats > 0


def test_resource_report_by_hand():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), neuron(0.5), nn.Linear(3, 2))
    with torch.no_grad():
        body[1].weight.copy_(torch.tensor([[1.0, 0, -1, 0.5], [0, 0, 0, 1], [0.2, 0.3, 0, 0]]))
        body[1].bias.zero_()
        body[3].weight.copy_(torch.tensor([[1.0, -1, 0], [0, 0.5, 0.5]]))
        body[3].bias.zero_()
    snn = SpikingNetwork(body, 4).eval()
    net = LoihiNetwork(snn, input_shape=(4,), input_range=2.0)
    x = torch.tensor([[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5]])
    payload, _ = encode_input(x, 2.0)
    _, spikes = run_layers(net.layers, payload, 4, record=True)
    net(x)
    report = resource_report(net)
    hidden, out = report.layers
    assert (hidden.neurons, hidden.synapses, hidden.connections) == (3, 6, 6)
    assert (out.neurons, out.synapses, out.connections) == (2, 4, 4)
    assert hidden.synaptic_memory_bits == 3 * 4 * 8 and out.synaptic_memory_bits == 2 * 3 * 8
    assert hidden.state_memory_bits == 3 * STATE_BITS_PER_NEURON
    assert report.cores == 2 and report.chips == 1
    # Synaptic ops: every nonzero payload (6 steps x nonzero pixels, T=4 presented) times the
    # nonzero weights in its column; then every hidden spike times its column's nonzero count.
    column_nnz = torch.tensor([2, 1, 1, 2])
    expected_in = int(((payload != 0).long() * column_nnz).sum()) * 4
    assert hidden.synops == expected_in
    hidden_nnz = torch.tensor([1, 2, 1])
    assert out.synops == int((spikes[0].long() * hidden_nnz).sum())
    assert hidden.spikes == int(spikes[0].sum())
    assert report.samples == 2
    assert report.energy_per_image_uj() == pytest.approx(
        (hidden.synops + out.synops) / 2 * ENERGY_PER_SYNOP_PJ * 1e-6)
    text = report.format()
    assert "23.6 pJ" in text and "open-neuromorphic.org" in text and "unknown" in text
    assert CORE_MEMORY_BITS == 1_048_576


def test_conv_connections_count_borders():
    """A 3x3 conv with padding 1 on 4x4: each output sees 9, 6 or 4 in-bounds inputs."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), neuron(), nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        body[0].weight.fill_(0.5)
    net = LoihiNetwork(SpikingNetwork(body, 2).eval(), input_shape=(1, 4, 4), input_range=1.0)
    first = resource_report(net).layers[0]
    assert first.synapses == 9 and first.connections == 4 * 9 + 8 * 6 + 4 * 4
    assert first.shared_kernel_bits == 9 * 8 and first.synaptic_memory_bits == 100 * 8
    assert first.cores == max(1, math.ceil((100 * 8 + 16 * STATE_BITS_PER_NEURON)
                                           / CORE_MEMORY_BITS))
    # Synaptic ops of a run: every nonzero payload times the synapses it feeds, counted here
    # directly by convolving the event map with the nonzero kernel.
    x = torch.randn(3, 1, 4, 4)
    x[0, 0, :2] = 0.0
    net(x)
    payload, _ = encode_input(x, 1.0)
    events = (payload != 0).double()
    direct = torch.nn.functional.conv2d(events, torch.ones(1, 1, 3, 3, dtype=torch.float64),
                                        padding=1).sum() * net.timesteps
    assert net.stats.layers[net.layers[0].name].synops == int(direct)


@pytest.mark.parametrize(
    "body,error,message",
    [
        (lambda: nn.Sequential(nn.Conv2d(3, 2, 3), neuron(), nn.MaxPool2d(2), nn.Flatten(),
                               nn.Linear(2, 2)), TypeError, r"module '2'.*MaxPool2d"),
        (lambda: nn.Sequential(nn.Conv2d(3, 2, 3), nn.AvgPool2d(2), neuron(), nn.Flatten(),
                               nn.Linear(2, 2)), TypeError, "between a synapse and its neuron"),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 4),
                               IF(v_th=1.0, reset="none", step_mode="folded"),
                               nn.Linear(4, 2)), ValueError, "reset='none'"),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 4), nn.Linear(4, 4),
                               LIF(tau=2.0, step_mode="folded"), nn.Linear(4, 2)),
         TypeError, "no neuron between"),
    ],
    ids=["maxpool", "pool-before-neuron", "no-reset", "linear-linear"],
)
def test_unmappable_networks_are_refused(body, error, message):
    with pytest.raises(error, match=message):
        fold_network(SpikingNetwork(body(), 2), (3, 4, 4))


def test_synapse_delay_beyond_the_run_delivers_nothing():
    syn = Synapse(-1, "dense", torch.ones(2, 3, dtype=torch.long), delay=5)
    a = syn.current(torch.ones(3, 4, 3, dtype=torch.long), "torch")
    assert a.shape == (3, 4, 2) and not bool(a.any())
    with pytest.raises(ValueError, match=r"weight_exp must be in -31\.\.31, got 40"):
        Synapse(-1, "dense", torch.ones(2, 3, dtype=torch.long), weight_exp=40)


def _snn_checkpoint(path, **changes):
    """A saved (untrained) SNN-VGG checkpoint on the shipped subset; ``changes`` alter the config
    it records, not the weights."""
    import dataclasses

    from neuro_emu.train import TrainConfig
    from neuro_emu.train.checkpoint import save_checkpoint
    from neuro_emu.train.trainer import model_from_config

    config = TrainConfig(model="snn-vgg", width=0.0625, data="subset", backend="torch")
    model = model_from_config(config)
    return save_checkpoint({"model": model.state_dict(),
                            "config": dataclasses.asdict(dataclasses.replace(config, **changes))},
                           path)


def test_cli_loihi_prints_the_reports(tmp_path, capsys):
    """``neuro-emu loihi`` on an (untrained) SNN-VGG checkpoint and 10 subset images."""
    from neuro_emu.cli import main

    path = _snn_checkpoint(tmp_path / "best.pt")
    json_path = tmp_path / "loihi.json"
    assert main(["loihi", "--checkpoint", str(path), "-T", "2", "--max-images", "10", "-q",
                 "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy on 10 test images (T=2)" in out and "Loihi 2 resources" in out
    assert "features.2" in out and "hard*" in out and json_path.exists()
    assert main(["loihi", "--checkpoint", str(tmp_path / "missing.pt")]) == 2


@pytest.mark.parametrize(
    "make,extra,message",
    [
        (lambda d: d.joinpath("best.pt").write_bytes(b"not a checkpoint"), [],
         "is not a readable checkpoint"),
        (lambda d: torch.save({"weights": 1}, d / "best.pt"), [], "is not a neuro-emu checkpoint"),
        (lambda d: _snn_checkpoint(d / "best.pt", width=0.125), [],
         "Error(s) in loading state_dict for SpikingNetwork: size mismatch"),
        # --json is checked before the (corrupt) checkpoint is even read.
        (lambda d: d.joinpath("best.pt").write_bytes(b""), ["--json", "{d}"],
         "--json {d} is a folder, not a file path"),
        (lambda d: d.joinpath("best.pt").write_bytes(b""), ["--json", "{d}/none/out.json"],
         "--json {d}/none/out.json: the folder {d}/none does not exist"),
    ],
    ids=["corrupt", "not-ours", "other-width", "json-folder", "json-missing-folder"],
)
def test_cli_loihi_user_errors_end_in_one_line(tmp_path, capsys, make, extra, message):
    from neuro_emu.cli import main

    make(tmp_path)
    argv = ["loihi", "--checkpoint", str(tmp_path / "best.pt"), "-q",
            *(a.format(d=tmp_path) for a in extra)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("neuro-emu loihi: error: "), err
    assert message.format(d=tmp_path) in err
