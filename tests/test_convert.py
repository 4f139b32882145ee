"""ANN-to-SNN conversion: QCFS, its theorem, BN folding, the fx rewrite, the API, conformance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import neuro_emu
from neuro_emu.conformance import compare_models
from neuro_emu.convert import (
    QCFS,
    evaluate_timesteps,
    fold_batchnorm,
    qcfs_model,
    replace_activations,
)
from neuro_emu.data import BatchLoader, load_cifar10
from neuro_emu.layers import IF, SpikingConv2d, SpikingLinear, SpikingNetwork
from neuro_emu.models import build_model
from neuro_emu.ops import available_backends
from neuro_emu.train import TrainConfig, train
from neuro_emu.train.trainer import load_trained


def _randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine terms, as a trained model has."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)
    return model.eval()


def test_qcfs_matches_its_formula_and_passes_gradients():
    qcfs = QCFS(levels=4, threshold=2.0)
    x = torch.tensor([-1.0, 0.0, 0.24, 0.26, 1.0, 1.9, 2.5, 9.0], requires_grad=True)
    # 2 * clip(floor(x * 4 / 2 + 0.5) / 4, 0, 1)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 2.0, 2.0])
    out = qcfs(x)
    assert torch.equal(out, expected)
    out.sum().backward()
    assert x.grad is not None and qcfs.threshold.grad is not None


def test_per_channel_qcfs_uses_one_threshold_per_channel():
    qcfs = QCFS(levels=2, threshold=1.0, channels=3)
    qcfs.threshold.data = torch.tensor([1.0, 2.0, 4.0])
    x = torch.full((1, 3, 2, 2), 1.0)
    # lambda * floor(x * L / lambda + 1/2) / L: 1 * 2/2, 2 * 1/2, 4 * 1/2
    assert qcfs(x)[0, :, 0, 0].tolist() == [1.0, 1.0, 2.0]


@pytest.mark.parametrize("levels", [1, 4, 8, 16])
def test_qcfs_theorem_if_neuron_at_t_equal_l_is_exact(levels):
    """IF(v_th = lambda, v_init = lambda / 2) run for T = L steps on a constant input x in
    [0, lambda] fires, on average, exactly qcfs(x) / lambda."""
    lam = 2.0
    x = torch.arange(0, 257) / 256 * lam  # exact binary fractions over [0, lambda], ties included
    neuron = IF(v_th=lam, v_init=lam / 2, backend="torch")
    rate = neuron(x.expand(levels, -1).contiguous()).mean(0)
    assert torch.equal(lam * rate, QCFS(levels, lam)(x))


def test_converted_network_approaches_its_ann_as_t_grows():
    """For a constant input an IF layer run T steps computes the T-level staircase (the QCFS
    activation at L = T), so as T grows the SNN approaches the ANN whose activations are the
    staircase's limit, clip(x, 0, lambda): the mean error falls steadily."""
    torch.manual_seed(0)
    ann = _randomize_batchnorm(qcfs_model(build_model("ann-vgg", width=0.125), levels=4))
    for module in ann.modules():
        if isinstance(module, QCFS):
            module.threshold.data.fill_(1.5)
    snn = neuro_emu.convert(ann, timesteps=4, backend="torch")
    for module in ann.modules():
        if isinstance(module, QCFS):
            module.levels = 2**20  # the limit: clip(x, 0, lambda) up to 2^-20 lambda
    x = torch.randn(8, 3, 32, 32)
    expected = ann(x)
    errors = []
    for steps in (4, 16, 64, 256):
        snn.timesteps = steps
        errors.append((snn(x) - expected).abs().mean().item())
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < errors[0] / 10, errors


def test_batchnorm_folding_changes_nothing_beyond_rounding():
    torch.manual_seed(1)
    for name in ("ann-vgg", "resnet18"):
        model = _randomize_batchnorm(build_model(name, width=0.25))
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        x = torch.randn(4, 3, 32, 32)
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # not mutated


def test_batchnorm_after_a_linear_folds_only_on_flat_features():
    """On [B, S, F] BatchNorm1d(S) normalises dim 1 while the Linear makes dim 2: no fold there."""
    torch.manual_seed(6)
    tokens = _randomize_batchnorm(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    x = torch.randn(2, 4, 4)
    torch.testing.assert_close(fold_batchnorm(tokens)(x), tokens(x))
    flat = _randomize_batchnorm(nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.BatchNorm1d(4)))
    folded = fold_batchnorm(flat)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    torch.testing.assert_close(folded(x), flat(x))


def test_fx_rewrite_of_a_residual_graph_keeps_the_ann_output():
    torch.manual_seed(2)
    model = _randomize_batchnorm(build_model("resnet18", width=0.25))
    rewritten = replace_activations(model, lambda name, node: nn.ReLU())
    relus = [m for m in rewritten.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 17  # the stem and two call sites in each of the 8 blocks
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(rewritten(x), model(x))
    adds = [n for n in rewritten.graph.nodes if n.op == "call_function" and "add" in n.name]
    assert len(adds) == 8  # one residual addition per block, kept


def test_unconvertible_layers_are_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.LazyLinear(10))
    model(torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="layer '2' of type MaxPool2d"):
        neuro_emu.convert(qcfs_model(model))
    gelu = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    with pytest.raises(TypeError, match="GELU"):
        neuro_emu.convert(gelu)
    with pytest.raises(ValueError, match="cal_loader"):
        neuro_emu.convert(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    batch_statistics = nn.Sequential(nn.Conv2d(3, 4, 3),
                                     nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU())
    with pytest.raises(TypeError, match="layer '1': a BatchNorm without running statistics"):
        neuro_emu.convert(qcfs_model(batch_statistics))


class _NoBatches:
    """A loader that fails the test if anything iterates it."""

    def __iter__(self):
        raise AssertionError("the loader was used before the arguments were checked")


@pytest.mark.parametrize("argument, match", [
    ({"backend": "bogus"}, "backend must be one of"),
    ({"levels": 0}, "levels must be an int >= 1"),
    ({"percentile": 150.0}, r"percentile must be a number in \[0, 100\]"),
    ({"percentile": float("nan")}, r"percentile must be a number in \[0, 100\]"),
])
def test_bad_convert_arguments_raise_before_calibration(argument, match):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ValueError, match=match):
        neuro_emu.convert(model, _NoBatches(), progress=False, **argument)


def test_measurements_without_samples_raise():
    snn = neuro_emu.convert(qcfs_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU())), timesteps=2,
                            backend="torch")
    batches = [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))]
    for measure in (neuro_emu.evaluate, neuro_emu.measure_sparsity,
                    lambda net, loader: evaluate_timesteps(net, loader, [1, 2])):
        with pytest.raises(ValueError, match="the loader yielded no samples"):
            measure(snn, [])
    for max_batches in (0, -1):
        with pytest.raises(ValueError, match="max_batches must be an int >= 1 or None"):
            neuro_emu.measure_sparsity(snn, batches, max_batches=max_batches)
    assert 0.0 <= neuro_emu.measure_sparsity(snn, batches, max_batches=1) <= 1.0
    for steps in ([2.5], [True]):  # not truncated to an int
        with pytest.raises(ValueError, match="timesteps must be ints >= 1"):
            evaluate_timesteps(snn, batches, steps)


def test_one_run_t_sweep_equals_separate_runs():
    torch.manual_seed(3)
    ann = _randomize_batchnorm(qcfs_model(build_model("resnet18", width=0.125), levels=4))
    snn = neuro_emu.convert(ann, timesteps=2, backend="torch")
    images, labels = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    loader = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    sweep = evaluate_timesteps(snn, loader, [1, 3, 5])
    for steps in (1, 3, 5):
        snn.timesteps = steps
        assert sweep[steps]["acc"] == neuro_emu.evaluate(snn, loader)
        assert sweep[steps]["sparsity"] == pytest.approx(neuro_emu.measure_sparsity(snn, loader))
    assert snn.timesteps == 5


def test_compile_targets():
    snn = neuro_emu.convert(qcfs_model(build_model("ann-vgg", width=0.125)).eval(), timesteps=2)
    assert neuro_emu.compile(snn, "torch") is snn
    assert all(n.backend == "torch" for _, n in snn.neurons())
    neuro_emu.compile(snn, "cpu")
    assert all(n.backend == "numba" for _, n in snn.neurons())
    from neuro_emu.loihi.network import LoihiNetwork

    loihi = neuro_emu.compile(snn, "loihi2_sim")
    assert isinstance(loihi, LoihiNetwork) and loihi.float_net is snn
    assert loihi.timesteps == snn.timesteps and loihi.layers[-1].readout
    with pytest.raises(ValueError, match="target must be one of"):
        neuro_emu.compile(snn, "tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            neuro_emu.compile(snn, "gpu")
    with pytest.raises(TypeError, match="SpikingNetwork"):
        neuro_emu.compile(nn.Linear(2, 2), "cpu")


@pytest.fixture(scope="module")
def trained_qcfs(tmp_path_factory, request):
    """A small QCFS VGG trained on the shipped subset (about 10 s on 2 cores)."""
    out = tmp_path_factory.mktemp("qcfs")
    config = TrainConfig(model="ann-vgg", width=0.25, epochs=3, batch_size=64, data="subset",
                         lr=0.05, qcfs_levels=4, max_steps=25)
    train(config, out, progress=False)
    images, labels = load_cifar10("test", "subset", progress=False)
    loader = BatchLoader(images[::2], labels[::2], 250, train=False)  # 500 images, 50 a class
    request.config.cache_checkpoint = out / "best.pt"  # for the CLI test below
    return load_trained(out / "best.pt"), loader


def test_end_to_end_snn_accuracy_approaches_the_ann(trained_qcfs):
    ann, loader = trained_qcfs
    ann_acc = neuro_emu.evaluate(ann, loader)
    assert ann_acc > 0.25  # it learned something: chance is 0.10
    snn = neuro_emu.convert(ann, timesteps=32)
    neuro_emu.compile(snn, "cpu")
    sweep = evaluate_timesteps(snn, loader, [1, 4, 32])
    gaps = [abs(ann_acc - sweep[t]["acc"]) for t in (1, 4, 32)]
    assert gaps[-1] <= 0.03 and gaps[-1] < gaps[0], (ann_acc, sweep)
    overall, per_layer = neuro_emu.measure_sparsity(snn, loader, per_layer=True, max_batches=1)
    assert 0.0 < overall < 1.0 and len(per_layer) == 7


def test_calibrated_relu_model_converts(trained_qcfs):
    ann, loader = trained_qcfs
    plain = build_model("ann-vgg", width=0.25)
    # the trained weights in a plain ReLU model: calibration must find thresholds itself
    weights = {k: v for k, v in ann.state_dict().items() if "threshold" not in k}
    plain.load_state_dict(weights)
    plain.eval()
    snn = neuro_emu.convert(plain, loader, timesteps=16, progress=False)
    assert isinstance(snn, SpikingNetwork)
    assert neuro_emu.evaluate(snn, loader) > 0.5 * neuro_emu.evaluate(plain, loader)


def test_converted_network_conforms_across_backends(trained_qcfs):
    ann, loader = trained_qcfs
    snn = neuro_emu.convert(ann, timesteps=4)
    images, _ = next(iter(loader))
    report = compare_models(snn, images[:2], backends=available_backends("cpu"))
    assert report.ok, report.format()
    assert report.checks > 0


def test_convert_command_prints_the_sweep(trained_qcfs, request, tmp_path, capsys, monkeypatch):
    from neuro_emu.cli import main
    from neuro_emu.convert import sweep

    loader_labels = []

    def recording_loader(images, labels, *args, **kwargs):
        loader_labels.append(labels)
        return BatchLoader(images, labels, *args, **kwargs)

    monkeypatch.setattr(sweep, "BatchLoader", recording_loader)
    checkpoint = request.config.cache_checkpoint
    args = ["convert", "--checkpoint", str(checkpoint), "--timesteps", "2", "8", "--data",
            "subset", "--max-images", "100", "--out", str(tmp_path), "-q", "--sparse"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| 8 |" in printed and "ANN accuracy" in printed and "Spike-sparse" in printed
    assert (tmp_path / "sweep.json").is_file() and (tmp_path / "sweep.png").stat().st_size > 0
    # the split is sorted by class: its first 100 images would all be one class
    assert len(set(loader_labels[0].tolist())) == 10
    assert main(["convert", "--checkpoint", str(tmp_path / "none.pt")]) == 2


def test_convert_command_checks_out_before_any_work(trained_qcfs, request, tmp_path, capsys,
                                                    monkeypatch):
    from neuro_emu.cli import main
    from neuro_emu.convert import sweep

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(sweep, "load_trained", no_work)
    occupied = tmp_path / "results"
    occupied.write_text("")
    args = ["convert", "--checkpoint", str(request.config.cache_checkpoint), "--data", "subset",
            "--out", str(occupied), "-q"]
    assert main(args) == 2
    assert capsys.readouterr().err == (f"neuro-emu convert: error: cannot make the out folder "
                                       f"{str(occupied)!r}: File exists\n")
    checkpoint = request.config.cache_checkpoint
    assert main(["convert", "--checkpoint", str(checkpoint), "--model", "resnet18", "-q"]) == 2
    assert capsys.readouterr().err == (f"neuro-emu convert: error: {checkpoint} holds the model "
                                       "'ann-vgg', not 'resnet18' as asked\n")


def test_sparsified_network_computes_the_same(trained_qcfs):
    ann, loader = trained_qcfs
    snn = neuro_emu.convert(ann, timesteps=8)
    sparse = neuro_emu.convert.sparsify(snn)
    layers = [m for m in sparse.modules() if isinstance(m, SpikingConv2d)]
    assert len(layers) == 3  # the VGG convolutions right after a neuron (not after pooling)
    images, _ = next(iter(loader))
    with torch.no_grad():
        dense_out, sparse_out = snn(images[:16]), sparse(images[:16])
    assert all(layer.last_sparsity is not None for layer in layers)
    # (w * lambda) . s against w . (lambda * s): float rounding apart
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("per_channel", [False, True])
def test_sparsify_keeps_a_linear_on_tokens_dense(per_channel):
    """A Linear fed [T * B, S, F] spikes stays nn.Linear (SpikingLinear takes [T * B, F] only,
    and a per-channel Scale multiplies dim S, not the Linear's features); one fed [T * B, F]
    still runs spike-sparse."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.Flatten(), nn.ReLU(),
                          nn.Linear(8, 3)).eval()
    x = torch.randn(4, 4, 4)  # S = F = 4: a per-channel factor would fit the wrong axis
    snn = neuro_emu.convert(model, [(x, torch.zeros(4, dtype=torch.long))], timesteps=8,
                            per_channel=per_channel, backend="torch", progress=False)
    sparse = neuro_emu.convert.sparsify(snn)
    linears = [type(m) for m in sparse.body.modules() if isinstance(m, nn.Linear)]
    assert linears == [nn.Linear, nn.Linear, SpikingLinear]
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), snn(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padding", [
    {"padding": 1, "padding_mode": "circular"},
    {"padding": 1, "padding_mode": "reflect"},
    {"padding": "same"},
])
def test_sparsify_keeps_convolutions_it_cannot_pad_dense(padding):
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, **padding),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(4, 3, 6, 6)
    snn = neuro_emu.convert(model, [(x, torch.zeros(4, dtype=torch.long))], timesteps=8,
                            backend="torch", progress=False)
    sparse = neuro_emu.convert.sparsify(snn)
    assert not any(isinstance(m, SpikingConv2d) for m in sparse.modules())
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), snn(x))


class _UserBlock(nn.Module):
    """A residual block as tutorials write it: functional relu, in-place ReLU, `out += x`."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        out = torch.nn.functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.act(out)


def test_tutorial_style_code_runs_unchanged():
    """convert / compile / evaluate / measure_sparsity / a T sweep, as the published tutorial
    calls them, on a torch DataLoader and a user-written residual model."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _UserBlock(8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    data = torch.utils.data.TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    device = torch.device("cpu")
    ann_acc = neuro_emu.evaluate(model, loader, device=device)
    results = {}
    for steps in (4, 16):
        snn = neuro_emu.convert(model, loader, timesteps=steps, device=device, progress=False)
        snn = neuro_emu.compile(snn, target="cpu")
        results[steps] = (neuro_emu.evaluate(snn, loader, device=device),
                          neuro_emu.measure_sparsity(snn, loader, device=device))
    assert 0.0 <= ann_acc <= 1.0
    assert all(0.0 <= acc <= 1.0 and 0.0 <= sparsity <= 1.0 for acc, sparsity in results.values())
    assert len(list(snn.neurons())) == 3  # the stem, and two call sites in the block
