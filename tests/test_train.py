"""Direct training: models, spike counts, op counts, resume, atomic saves, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from neuro_emu.layers import LIF, SpikingNetwork
from neuro_emu.models import build_model
from neuro_emu.ops import available_backends
from neuro_emu.train import TrainConfig, count_synaptic_ops, load_checkpoint, train
from neuro_emu.train import checkpoint as checkpoint_module
from neuro_emu.train import trainer as trainer_module
from neuro_emu.train.report import compare_runs

TINY = dict(width=0.125, batch_size=32, data="subset", max_steps=3, lr=0.05)


def test_models_share_structure_and_parameter_count():
    snn, ann = build_model("snn-vgg", width=0.25), build_model("ann-vgg", width=0.25)
    assert isinstance(snn, SpikingNetwork)
    assert [tuple(p.shape) for p in snn.body.parameters()] == [
        tuple(p.shape) for p in ann.parameters()
    ]
    x = torch.randn(3, 3, 32, 32)
    assert snn(x).shape == ann(x).shape == (3, 10)
    assert sum(p.numel() for p in build_model("snn-vgg").parameters()) == 3_249_098


def test_folded_neuron_equals_multi_step():
    x = torch.randn(3, 2, 5, 4) * 1.5  # [T, B, ...]
    multi = LIF(tau=2.0, backend="torch")(x)
    folded = LIF(tau=2.0, backend="torch", step_mode="folded", timesteps=3)(x.flatten(0, 1))
    assert torch.equal(folded, multi.flatten(0, 1))
    with pytest.raises(ValueError, match="does not split into T = 3"):
        LIF(tau=2.0, step_mode="folded", timesteps=3)(torch.randn(4, 2))
    with pytest.raises(ValueError, match="needs timesteps"):
        LIF(tau=2.0, step_mode="folded")(torch.randn(4, 2))


def test_spiking_network_rejects_multi_step_neurons_and_bad_timesteps():
    with pytest.raises(ValueError, match="step_mode='folded'"):
        SpikingNetwork(nn.Sequential(LIF(tau=2.0)), 4)
    net = build_model("snn-vgg", width=0.125)
    with pytest.raises(ValueError, match="timesteps must be an int >= 1"):
        net.timesteps = 0
    net.timesteps = 2
    assert all(neuron.timesteps == 2 for _, neuron in net.neurons())


def test_record_spikes_counts_every_layer():
    torch.manual_seed(0)
    net = build_model("snn-vgg", width=0.125, timesteps=3, backend="torch")
    seen = {}
    hooks = [n.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
             for name, n in net.neurons()]
    with net.record_spikes() as counts:
        net(torch.randn(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert set(counts.rates()) == set(seen)
    for name, spikes in seen.items():
        assert counts.rates()[name] == pytest.approx(spikes.mean().item())
    total = sum(s.sum().item() for s in seen.values()) / sum(s.numel() for s in seen.values())
    assert counts.overall() == pytest.approx(total)


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_synaptic_ops_count_every_spike_synapse_pair(stride, padding, groups):
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, groups=groups, bias=False)
    spikes = (torch.rand(2, 4, 7, 7) < 0.3).float()
    report = count_synaptic_ops(nn.Sequential(conv), spikes)
    # By brute force: weight entries hit by a nonzero input, one per (input, synapse) product.
    ones = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, groups=groups, bias=False)
    nn.init.ones_(ones.weight)
    expected = ones(spikes).sum().item()
    (layer,) = report.layers
    assert layer.kind == "AC" and layer.ops == expected
    analog = torch.randn(2, 4, 7, 7)
    dense = count_synaptic_ops(nn.Sequential(conv), analog, skip_zeros=False).layers[0]
    assert dense.kind == "MAC" and dense.ops == conv(analog).numel() * (4 // groups) * 9
    sparse_analog = count_synaptic_ops(nn.Sequential(conv), spikes * 0.25).layers[0]
    assert sparse_analog.kind == "MAC" and sparse_analog.ops == expected


def test_linear_ops_and_energy():
    linear = nn.Linear(8, 5)
    spikes = (torch.rand(3, 8) < 0.5).float()
    report = count_synaptic_ops(nn.Sequential(linear), spikes)
    assert report.layers[0].ops == spikes.sum().item() * 5
    assert report.energy_per_image_uj() == pytest.approx(spikes.sum().item() * 5 * 0.9e-6 / 3)


@pytest.mark.parametrize("model", ["snn-vgg", "ann-vgg"])
def test_training_lowers_the_loss(model, tmp_path):
    # width 0.25, 12 batches an epoch: the smallest run whose SNN loss falls from epoch to epoch
    config = TrainConfig(model=model, epochs=3, **{**TINY, "width": 0.25, "max_steps": 12,
                                                   "lr": 0.1})
    history = train(config, tmp_path, progress=False)
    losses = [e["train_loss"] for e in history["epochs"]]
    assert losses[-1] < losses[0], losses
    assert 0.0 <= history["best_acc"] <= 1.0
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["epochs"] == history["epochs"]
    if model == "snn-vgg":
        rates = [e["test_spike_rate"] for e in history["epochs"]]
        assert all(0.0 < r < 1.0 for r in rates)
        assert len(history["epochs"][0]["test_layer_rates"]) == 7


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    config = TrainConfig(model="snn-vgg", epochs=3, **TINY)
    train(config, tmp_path / "whole", progress=False)

    real_epoch = trainer_module._train_epoch

    def interrupted(*args, **kwargs):
        if args[-1] == 1:  # the second epoch
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "split", progress=False)
    assert len(load_checkpoint(tmp_path / "split" / "last.pt")["history"]["epochs"]) == 1
    monkeypatch.setattr(trainer_module, "_train_epoch", real_epoch)
    with pytest.raises(FileExistsError, match="resume"):
        train(config, tmp_path / "split", progress=False)
    history = train(config, tmp_path / "split", resume=True, progress=False)

    whole = _weights(tmp_path / "whole" / "last.pt")
    split = _weights(tmp_path / "split" / "last.pt")
    assert whole.keys() == split.keys()
    for name in whole:
        assert torch.equal(whole[name], split[name]), name
    assert [e["train_loss"] for e in history["epochs"]] == [
        e["train_loss"] for e in json.loads((tmp_path / "whole" / "history.json").read_text())[
            "epochs"]
    ]
    with pytest.raises(ValueError, match="different config"):
        train(TrainConfig(model="snn-vgg", epochs=5, **TINY), tmp_path / "split", resume=True)


def test_a_save_killed_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    config = TrainConfig(model="ann-vgg", epochs=2, **TINY)
    real_save = torch.save
    calls = []

    def dies_while_writing(obj, file, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # epoch 1 wrote last.pt and best.pt; die inside epoch 2's save
            file.write(b"half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, progress=False)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    state = load_checkpoint(tmp_path / "last.pt")
    assert len(state["history"]["epochs"]) == 1
    assert not list(tmp_path.glob(".*.tmp"))
    history = train(config, tmp_path, resume=True, progress=False)
    assert len(history["epochs"]) == 2


def test_last_checkpoint_is_written_last_and_resume_repairs_the_history(tmp_path, monkeypatch):
    """Each epoch writes best.pt, history.json, then last.pt (the point a resume starts from):
    a run killed before its last.pt redoes that epoch; a resume rewrites a history.json cut
    short. The files get the mode a plain open() gives (mkstemp's alone is 0600)."""
    config = TrainConfig(model="ann-vgg", epochs=2, **TINY)
    real_save = checkpoint_module.save_checkpoint

    def dies_before_last(state, path):
        if Path(path).name == "last.pt" and len(state["history"]["epochs"]) == 2:
            raise KeyboardInterrupt
        return real_save(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", dies_before_last)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, progress=False)
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    assert len(json.loads((tmp_path / "history.json").read_text())["epochs"]) == 2
    assert len(load_checkpoint(tmp_path / "last.pt")["history"]["epochs"]) == 1
    history = train(config, tmp_path, resume=True, progress=False)
    assert len(history["epochs"]) == 2

    (tmp_path / "history.json").write_text(json.dumps(history)[:50])  # cut short
    assert train(config, tmp_path, resume=True, progress=False) == history
    assert json.loads((tmp_path / "history.json").read_text()) == history
    umask = os.umask(0)
    os.umask(umask)
    for name in ("last.pt", "best.pt", "history.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "last.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("backend", [b for b in available_backends("cpu") if b != "torch"])
def test_fused_training_step_equals_the_torch_loop(backend):
    images = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])
    results = []
    for name in ("torch", backend):
        torch.manual_seed(0)
        net = build_model("snn-vgg", width=0.125, timesteps=3, backend=name)
        loss = nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in net.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


def test_report_compares_the_two_runs(tmp_path, monkeypatch):
    from neuro_emu.train import report

    for model in ("snn-vgg", "ann-vgg"):
        train(TrainConfig(model=model, epochs=1, **TINY), tmp_path / model, progress=False)
    energy_labels = []
    real_loader = report.BatchLoader
    monkeypatch.setattr(report, "BatchLoader", lambda images, labels, *a, **k: (
        energy_labels.append(labels) or real_loader(images, labels, *a, **k)))
    results = compare_runs(tmp_path / "snn-vgg", tmp_path / "ann-vgg", tmp_path)
    # The energy counts average over test images of every class (the split is sorted by class).
    assert [len(set(labels.tolist())) for labels in energy_labels] == [10, 10]
    snn, ann = results["models"]["snn-vgg"], results["models"]["ann-vgg"]
    assert results["gap_points"] == pytest.approx(100 * (ann["best_acc"] - snn["best_acc"]))
    assert 0 < results["layer_energy_ratio"]
    for name in ("results.json", "results.md", "accuracy.png", "spike_rate.png",
                 "layer_rates.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "Horowitz" in (tmp_path / "results.md").read_text()


def test_ddp_two_processes_with_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", "29517", "-m", "neuro_emu.cli", "train", "--model", "ann-vgg",
        "--width", "0.125", "--epochs", "1", "--max-steps", "2", "--batch-size", "16",
        "--data", "subset", "--device", "cpu", "--out", str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["world_size"] == 2 and len(history["epochs"]) == 1


def test_cli_compares_the_snn_with_the_ann_of_its_architecture():
    from neuro_emu.cli import comparison_pair

    assert comparison_pair(["snn-vgg", "vgg16", "ann-vgg"]) == ("snn-vgg", "ann-vgg")
    assert comparison_pair(["resnet18", "snn-vgg"]) == ("snn-vgg", "resnet18")
    assert comparison_pair(["ann-vgg"]) is None
    assert comparison_pair(["ann-vgg", "vgg16"]) is None


def test_cli_train_refuses_to_overwrite(tmp_path):
    from neuro_emu.cli import main

    args = ["train", "--model", "ann-vgg", "--width", "0.125", "--epochs", "1", "--max-steps",
            "1", "--batch-size", "16", "--data", "subset", "--out", str(tmp_path)]
    assert main(args) == 0
    assert main(args) == 2
    assert main([*args, "--resume"]) == 0
