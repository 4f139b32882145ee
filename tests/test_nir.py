"""NIR export and import: exact round trips of the VGG and ResNet-18 SNNs on every backend, clear
errors for bad files and graphs, and interop with snnTorch, Norse and SpikingJelly.

Interop cases print one ``INTEROP`` row each (peer, direction, steps, deviations, notes): run with
``-s`` to see the table. Deviations are counted spike by spike over ``[T, B, N]``; where they are
not 0, a second run shows what convention of the peer's explains them by reproducing its spikes.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import warnings

import h5py
import nir
import numpy as np
import pytest
import torch
from torch import nn

from neuro_emu.layers import IF, LIF, SpikingNetwork
from neuro_emu.models import SNN_VGG_CONFIG, lif_neuron, resnet18, vgg
from neuro_emu.nir import (
    NIRExportError,
    NIRExportWarning,
    NIRImportError,
    NIRImportWarning,
    fold_batchnorm,
    from_nir,
    to_nir,
)
from neuro_emu.nir.modules import CubaLIF, GainLIF
from neuro_emu.ops import available_backends
from tests.cases import BACKENDS, assert_identical, device_for

# The peers call nirtorch APIs that nirtorch itself marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:nirtorch.*is being deprecated:DeprecationWarning")

# ---------------------------------------------------------------------------------------------
# Our networks


def _randomize_batchnorm(model: nn.Module, seed: int, gain: float = 1.0,
                         shift: float = 0.0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so that folding changes the weights (``gain``
    and ``shift`` keep the deeper layers of a network spiking)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            module.weight.data.copy_((torch.rand(n, generator=gen) + 0.5) * gain)
            module.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.1 + shift)
    return model.eval()


def _converted_neuron(backend: str):
    """What the ANN->SNN converter puts in place of a ReLU: IF with v_init = v_th / 2."""
    return functools.partial(IF, v_th=1.0, v_init=0.5, backend=backend, step_mode="folded")


def snn_vgg(width: float, image: int, timesteps: int, backend: str = "auto",
            converted: bool = False) -> SpikingNetwork:
    """The directly trained SNN-VGG of ``build_model("snn-vgg")`` (LIF tau 2, soft reset), or with
    ``converted`` the converter's IF neurons."""
    torch.manual_seed(0)
    neuron = _converted_neuron(backend) if converted else lif_neuron(backend=backend)
    body = vgg(SNN_VGG_CONFIG, neuron, width=width, image_size=image)
    with torch.no_grad():
        body.classifier[1].weight.mul_(8.0)  # the hidden layer has no BatchNorm to scale
    return _randomize_batchnorm(SpikingNetwork(body, timesteps), 1, gain=3.0, shift=0.3)


def resnet18_snn(width: float, timesteps: int, backend: str = "auto",
                 converted: bool = True) -> SpikingNetwork:
    """ResNet-18 as the ANN->SNN converter makes it (IF, v_init = v_th / 2, in place of the ReLUs:
    one module called twice per block, as in torchvision; residual additions kept), or with LIF
    neurons as trained directly."""
    torch.manual_seed(0)
    neuron = _converted_neuron(backend) if converted else lif_neuron(backend=backend)
    return _randomize_batchnorm(SpikingNetwork(resnet18(neuron, width=width), timesteps), 2)


MODELS = ["snn-vgg", "vgg-converted", "resnet18-lif", "resnet18-converted"]


def _build(name: str, backend: str, image: int, timesteps: int) -> SpikingNetwork:
    if name.startswith("resnet18"):
        return resnet18_snn(0.125, timesteps, backend, converted=name.endswith("converted"))
    width = 0.25 if image == 32 else 0.125
    return snn_vgg(width, image, timesteps, backend, converted=name == "vgg-converted")


def _export(model: SpikingNetwork, path=None, **kwargs) -> nir.NIRGraph:
    with pytest.warns(NIRExportWarning):
        return to_nir(model, path, **kwargs)


def _run_counting(model: SpikingNetwork, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The output and the spikes of each neuron layer."""
    with torch.no_grad(), model.record_spikes() as counts:
        out = model(x)
    return out, {name: float(count) for name, count in counts.spikes.items()}


def _image(model: str, backend: str) -> int:
    """The Triton interpreter is slow: 8x8 images there (the VGG at width 1/8); the VGG runs
    CIFAR's 32x32 elsewhere, ResNet-18 16x16 (its stem keeps the resolution)."""
    if backend == "triton":
        return 8
    return 16 if model.startswith("resnet18") else 32


ROUND_TRIP = [
    pytest.param(model, backend, _image(model, backend), id=f"{model}-{backend}")
    for model in MODELS for backend in BACKENDS
]


@pytest.mark.parametrize("model_name, backend, image", ROUND_TRIP)
def test_round_trip_is_exact(model_name, backend, image, tmp_path):
    device = device_for(backend)
    if backend not in available_backends(device):
        pytest.skip(f"backend {backend} is not available on {device}")
    model = _build(model_name, backend, image, timesteps=3)
    before = copy.deepcopy(model.state_dict())
    path = tmp_path / "net.nir"
    _export(model, path, input_shape=(3, image, image))
    imported = from_nir(path, backend=backend).to(device)
    folded = fold_batchnorm(model).to(device)

    # The user's model is untouched: BatchNorm still there, same tensors.
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    params, folded_params = dict(imported.named_parameters()), dict(folded.named_parameters())
    assert sorted(params) == sorted(folded_params)
    for name, value in folded_params.items():
        assert_identical(f"parameter {name}", params[name], value)
    ours = {name: (type(n), n.kwargs, n.v_init) for name, n in folded.neurons()}
    theirs = {name: (type(n), n.kwargs, n.v_init) for name, n in imported.neurons()}
    assert ours == theirs
    assert imported.timesteps == model.timesteps

    x = torch.rand(2, 3, image, image, generator=torch.Generator().manual_seed(3)).to(device) * 2
    expected, spikes = _run_counting(folded, x)
    got, imported_spikes = _run_counting(imported, x)
    assert (got - expected).abs().max().item() == 0.0
    assert_identical("output", got.cpu(), expected.cpu())
    assert imported_spikes == spikes
    assert all(s > 0 for s in spikes.values()), f"a silent layer makes a weak test: {spikes}"


@pytest.mark.parametrize("per_channel", [False, True], ids=["lambda-per-layer", "per-channel"])
def test_round_trip_of_the_converters_output(per_channel, tmp_path):
    """neuro_emu.convert's SNN (IF neurons between Scale(lambda) modules) round trips exactly, and
    its Scale modules come back as they were."""
    from neuro_emu import convert
    from neuro_emu.models import build_model

    torch.manual_seed(0)
    ann = build_model("resnet18", width=0.125).eval()
    qcfs = convert.qcfs_model(ann, levels=4, threshold=0.5, per_channel=per_channel)
    snn = convert.convert(qcfs, timesteps=3, progress=False, backend="numba")
    _export(snn, tmp_path / "converted.nir", input_shape=(3, 16, 16))
    imported = from_nir(tmp_path / "converted.nir", backend="numba")
    folded = fold_batchnorm(snn)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2
    expected, spikes = _run_counting(folded, x)
    got, imported_spikes = _run_counting(imported, x)
    assert_identical("output", got, expected)
    assert imported_spikes == spikes and sum(spikes.values()) > 0
    assert _leaves(imported) == _leaves(folded)  # the converter's Scale included


def _leaves(model: nn.Module) -> dict[str, type]:
    """The modules that hold weights, buffers or neuron state (a torch.flatten call comes back as
    an nn.Flatten, and an Identity is no node)."""
    return {name: type(m) for name, m in model.named_modules()
            if isinstance(m, LIF) or any(True for _ in m.parameters(recurse=False))
            or any(True for _ in m.buffers(recurse=False))}


def test_public_api():
    import neuro_emu
    import neuro_emu.nir

    assert neuro_emu.to_nir is neuro_emu.nir.to_nir
    assert neuro_emu.from_nir is neuro_emu.nir.from_nir


def test_folding_is_the_eval_network_and_nir_reads_the_file(tmp_path):
    """The folded conv is BatchNorm(conv) to float32 rounding; NIR's own reader (with its type
    checks) loads our file; and exporting twice gives the same graph."""
    model = resnet18_snn(0.125, timesteps=2)
    folded = fold_batchnorm(model)
    conv, bn = model.body.layer1[0].conv1, model.body.layer1[0].bn1
    x = torch.randn(4, conv.in_channels, 8, 8)
    with torch.no_grad():
        got = folded.body.get_submodule("layer1.0.conv1")(x)
        torch.testing.assert_close(got, bn(conv(x)), atol=1e-5, rtol=1e-5)
    path = tmp_path / "resnet.nir"
    graph = _export(model, path, input_shape=(3, 32, 32))
    read = nir.read(path)
    assert set(read.nodes) == set(graph.nodes) and read.edges == graph.edges
    adds = [n for n in graph.nodes if sum(dst == n for _, dst in graph.edges) == 2]
    assert len(adds) == 8, "one two-edge node per BasicBlock (the residual sum)"
    assert _export(model, input_shape=(3, 32, 32)).edges == graph.edges


def test_neuron_mapping_follows_nir_definitions():
    """tau = dt / (1 - beta), r = tau / dt, IF r = 1 / dt, v_threshold one float32 below v_th."""
    body = nn.Sequential(nn.Linear(4, 3), LIF(beta=0.75, v_th=0.5, reset="zero", v_reset=-0.25,
                                                step_mode="folded"),
                         nn.Linear(3, 2), IF(v_th=2.0, step_mode="folded"))
    graph = _export(SpikingNetwork(body, 5), dt=1e-3, input_shape=(4,))
    lif, if_ = graph.nodes["1"], graph.nodes["3"]
    assert isinstance(lif, nir.LIF) and isinstance(if_, nir.IF)
    np.testing.assert_allclose(lif.tau, 4e-3, rtol=1e-15)
    np.testing.assert_allclose(lif.r, 4.0, rtol=1e-15)
    assert not lif.v_leak.any() and (lif.v_reset == -0.25).all()
    assert (lif.v_threshold == np.nextafter(np.float32(0.5), np.float32(0))).all()
    np.testing.assert_allclose(if_.r, 1e3, rtol=1e-15)
    assert (if_.v_reset == 0).all()  # reset by subtraction: NIR has none; 0 written, metadata kept
    meta = json.loads(graph.nodes["3"].metadata["neuro_emu"])
    assert meta["neuron"]["reset"] == "subtract" and meta["neuron"]["class"] == "IF"
    assert json.loads(graph.metadata["neuro_emu"])["timesteps"] == 5


def test_export_warns_naming_nodes():
    body = nn.Sequential(nn.Linear(4, 3), IF(v_init=0.5, step_mode="folded"))
    with pytest.warns(NIRExportWarning, match=r"v_init != 0 \(NIR starts at rest\): '1'"):
        to_nir(SpikingNetwork(body, 2), input_shape=(4,))


class _Scaled(nn.Module):
    """A body with ``x * number`` (as a converter may scale a layer's output)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.neuron = LIF(beta=0.5, step_mode="folded")

    def forward(self, x):
        return self.neuron(self.fc(x) * 1.7)


def test_multiplication_by_a_number_is_a_scale_node():
    torch.manual_seed(0)
    model = SpikingNetwork(_Scaled(), 4)
    graph = _export(model, input_shape=(4,))
    assert isinstance(graph.nodes["mul"], nir.Scale)
    x = torch.rand(5, 4) * 2
    with torch.no_grad():
        assert_identical("output", from_nir(graph)(x), model(x))


def test_reexport_of_an_imported_peer_graph_is_exact():
    """GainLIF and CubaLIF (from other tools' graphs) export back to the nodes they came from."""
    tau = np.full(3, 4e-3)
    nodes = {
        "input": nir.Input(np.array([4])),
        "w1": nir.Affine(np.random.default_rng(0).uniform(-1, 2, (3, 4)).astype(np.float32),
                         np.zeros(3, np.float32)),
        "lif": nir.LIF(tau=tau, r=np.ones(3), v_leak=np.full(3, 0.1), v_threshold=np.full(3, 0.4)),
        "w2": nir.Linear(np.random.default_rng(1).uniform(0, 1, (2, 3)).astype(np.float32)),
        "cuba": nir.CubaLIF(tau_syn=np.full(2, 2e-3), tau_mem=np.full(2, 3e-3), r=np.full(2, 2.0),
                            v_leak=np.zeros(2), v_threshold=np.full(2, 0.3), w_in=np.full(2, 1.5)),
        "output": nir.Output(np.array([2])),
    }
    edges = [("input", "w1"), ("w1", "lif"), ("lif", "w2"), ("w2", "cuba"), ("cuba", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    first = from_nir(graph, timesteps=6, dt=1e-3)
    assert isinstance(first.body.lif, GainLIF) and isinstance(first.body.cuba, CubaLIF)
    second = from_nir(_export(first, input_shape=(4,)))
    x = torch.rand(3, 4) * 3
    with torch.no_grad():
        assert_identical("output", second(x), first(x))
    assert first(x).sum() > 0


# ---------------------------------------------------------------------------------------------
# Export errors


@pytest.mark.parametrize(
    "body, match",
    [
        pytest.param(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), r"node '1': ReLU",
                     id="relu-is-no-neuron"),
        pytest.param(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), r"node '1': MaxPool2d",
                     id="maxpool"),
        pytest.param(nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3)),
                     r"node '0': BatchNorm folds only into", id="batchnorm-first"),
    ],
)
def test_export_names_the_node_it_cannot_map(body, match):
    with pytest.raises(NIRExportError, match=match):
        to_nir(SpikingNetwork(body.eval(), 2), input_shape=(1, 6, 6) if
               isinstance(body[0], (nn.Conv2d, nn.BatchNorm2d)) else (4,))


def test_export_argument_errors():
    model = SpikingNetwork(nn.Sequential(nn.Linear(4, 3), LIF(tau=2.0, step_mode="folded")), 2)
    with pytest.raises(TypeError, match="SpikingNetwork"):
        to_nir(model.body, input_shape=(4,))
    with pytest.raises(ValueError, match="input_shape"):
        to_nir(model, input_shape=(2, 4, 4, 0))
    with pytest.raises(ValueError, match="dt"):
        to_nir(model, dt=0.0, input_shape=(4,))
    with pytest.raises(NIRExportError, match="input_shape given"):
        to_nir(model, input_shape=(5,))


# ---------------------------------------------------------------------------------------------
# Import errors


def _small_graph() -> dict:
    return {
        "input": nir.Input(np.array([4])),
        "fc": nir.Affine(np.ones((3, 4), np.float32), np.zeros(3, np.float32)),
        "lif": nir.LIF(tau=np.full(3, 2.0), r=np.full(3, 2.0), v_leak=np.zeros(3),
                       v_threshold=np.ones(3)),
        "output": nir.Output(np.array([3])),
    }


_EDGES = [("input", "fc"), ("fc", "lif"), ("lif", "output")]


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "small.nir"
    nir.write(path, nir.NIRGraph(nodes=_small_graph(), edges=list(_EDGES)))
    return path


def test_bad_files(tmp_path, small_file):
    text = tmp_path / "text.nir"
    text.write_text("not a graph")
    with pytest.raises(NIRImportError, match="not a NIR file"):
        from_nir(text, timesteps=2)
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(small_file.read_bytes()[: small_file.stat().st_size // 2])
    with pytest.raises(NIRImportError, match="truncated"):
        from_nir(truncated, timesteps=2)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    with pytest.raises(NIRImportError, match="no 'node' group"):
        from_nir(other, timesteps=2)
    with pytest.raises(FileNotFoundError):
        from_nir(tmp_path / "missing.nir")


def test_unknown_node_type_in_a_file(small_file):
    with h5py.File(small_file, "r+") as f:
        del f["node/nodes/lif/type"]
        f["node/nodes/lif"].create_dataset("type", data="Hodgkin", dtype=h5py.string_dtype())
    with pytest.raises(NIRImportError, match="node 'lif' has unknown NIR node type 'Hodgkin'"):
        from_nir(small_file, timesteps=2)


def test_malformed_node_in_a_file(small_file):
    with h5py.File(small_file, "r+") as f:
        del f["node/nodes/lif/tau"]
    with pytest.raises(NIRImportError, match=r"node 'lif' \(LIF\) is malformed"):
        from_nir(small_file, timesteps=2)


def _graph(nodes=None, edges=None) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes or _small_graph(), edges=edges or list(_EDGES),
                        type_check=False)


def _with(**replace) -> dict:
    nodes = _small_graph()
    nodes.update(replace)
    return nodes


@pytest.mark.parametrize(
    "graph, match",
    [
        pytest.param(lambda: _graph(_with(fc=nir.Affine(np.ones((3, 5), np.float32),
                                                        np.zeros(3, np.float32)))),
                     r"node 'fc' takes input of shape \(5,\), but 'input' gives \(4,\)",
                     id="shape-mismatch"),
        pytest.param(lambda: _graph(_with(output=nir.Output(np.array([7])))),
                     r"node 'output' takes input of shape \(7,\), but 'lif' gives \(3,\)",
                     id="output-shape"),
        pytest.param(lambda: _graph(edges=[*_EDGES, ("fc", "ghost")]),
                     "names node 'ghost', which the graph does not have", id="edge-to-nowhere"),
        pytest.param(lambda: _graph(edges=[*_EDGES, ("lif", "fc")]), "lie on a cycle",
                     id="cycle"),
        pytest.param(lambda: _graph(edges=[("input", "fc"), ("lif", "output")]),
                     "node 'fc' has no outgoing edge", id="dangling"),
        pytest.param(lambda: _graph(_with(lif=nir.LIF(
            tau=np.array([2.0, 2.0, 3.0]), r=np.full(3, 2.0), v_leak=np.zeros(3),
            v_threshold=np.ones(3)))), r"node 'lif': tau differs between neurons", id="per-neuron"),
        pytest.param(lambda: _graph(_with(lif=nir.LI(tau=np.full(3, 2.0), r=np.ones(3),
                                                     v_leak=np.zeros(3)))),
                     r"node 'lif': NIR LI .* not supported", id="unsupported-LI"),
        pytest.param(lambda: _graph(_with(lif=nir.LIF(
            tau=np.full(3, 0.5), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)))),
                     r"node 'lif': tau = 0.5 is below dt = 1.0", id="tau-below-dt"),
    ],
)
def test_inconsistent_graphs_name_the_problem(graph, match):
    with pytest.raises(NIRImportError, match=match):
        from_nir(graph(), timesteps=2, dt=1.0)


def test_a_layer_torch_rejects_is_named():
    conv = nir.Conv2d(input_shape=None, weight=np.ones((2, 1, 3, 3), np.float32), stride=2,
                      padding="same", dilation=1, groups=1, bias=np.zeros(2, np.float32))
    nodes = {"input": nir.Input(np.array([1, 6, 6])), "conv": conv,
             "output": nir.Output(np.array([2, 3, 3]))}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "output")],
                         type_check=False)
    with pytest.raises(NIRImportError, match=r"node 'conv' \(Conv2d\): ValueError: .*same"):
        from_nir(graph, timesteps=2, dt=1.0)


def test_import_argument_errors(small_file):
    with pytest.raises(ValueError, match="backend"):
        from_nir(small_file, backend="cuda", timesteps=2)
    with pytest.raises(ValueError, match="no timesteps"):
        from_nir(small_file, dt=1.0)
    with pytest.warns(NIRImportWarning, match="assuming dt = 0.0001"):
        from_nir(small_file, timesteps=2)
    for steps in (2.5, True):  # not truncated to an int
        with pytest.raises(ValueError, match="timesteps must be an int >= 1"):
            from_nir(small_file, timesteps=steps, dt=1.0)
    meta = {"neuro_emu": json.dumps({"timesteps": 2.7, "dt": 1.0})}
    graph = nir.NIRGraph(nodes=_small_graph(), edges=list(_EDGES), metadata=meta)
    with pytest.raises(ValueError, match="the graph's timesteps must be an int >= 1"):
        from_nir(graph)


def test_node_names_that_are_module_attributes_import_and_run():
    """Nodes named like a GraphModule's own attributes get a ``_`` appended; others keep theirs."""
    nodes = _small_graph()
    nodes["forward"], nodes["training"] = nodes.pop("fc"), nodes.pop("lif")
    edges = [("input", "forward"), ("forward", "training"), ("training", "output")]
    net = from_nir(_graph(nodes, edges), timesteps=2, dt=1.0)
    assert [name for name, _ in net.body.named_children()] == ["forward_", "training_"]
    plain = from_nir(_graph(), timesteps=2, dt=1.0)
    assert [name for name, _ in plain.body.named_children()] == ["fc", "lif"]
    x = torch.rand(2, 4)
    assert torch.equal(net(x), plain(x))


def test_edited_metadata_loses_to_the_nir_fields(tmp_path):
    model = SpikingNetwork(nn.Sequential(nn.Linear(4, 3), LIF(tau=2.0, step_mode="folded")), 2)
    graph = _export(model, input_shape=(4,))
    graph.nodes["1"].tau = graph.nodes["1"].tau * 2  # another tool edits tau only
    with pytest.warns(NIRImportWarning, match=r"node '1': the NIR fields give beta = 0.75"):
        imported = from_nir(graph)
    neuron = imported.body.get_submodule("1")  # r stayed: the input gain dt * r / tau is now 1/2
    assert isinstance(neuron, GainLIF) and neuron.gain == 0.5
    assert neuron.neuron.kwargs["beta"] == 0.75


# ---------------------------------------------------------------------------------------------
# Interop with the peers. Small nets (Linear + neuron, or a tiny conv net), few steps.

STEPS, BATCH, N_IN, N_OUT = 8, 4, 6, 16


def _row(peer: str, direction: str, deviations: int, total: int, notes: str) -> None:
    print(f"\nINTEROP | {peer} | {direction} | {STEPS} | {deviations} / {total} | {notes}")


def _linear(seed: int) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(N_IN, N_OUT)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(N_OUT, N_IN, generator=gen) * 0.9 - 0.3)
        layer.bias.copy_(torch.rand(N_OUT, generator=gen) * 0.2)
    return layer


def _input(shape=(BATCH, N_IN)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(7))


def _ours(model: SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    """Our spikes [T, B, ...] for ``x`` repeated at every step (direct encoding)."""
    with torch.no_grad():
        folded = x.unsqueeze(0).expand(STEPS, *x.shape).flatten(0, 1)
        return model.body(folded).unflatten(0, (STEPS, x.shape[0]))


def _stepped(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A peer's imported graph module run step by step (nirtorch's ``(out, state)`` protocol)."""
    outs, state = [], None
    with torch.no_grad():
        for _ in range(STEPS):
            out, state = module(x, state)
            outs.append(out[0] if isinstance(out, tuple) else out)
    return torch.stack(outs)


def _net(neuron: LIF, seed: int = 0) -> SpikingNetwork:
    return SpikingNetwork(nn.Sequential(_linear(seed), neuron), STEPS)


def _quiet_export(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRExportWarning)
        return to_nir(model, **kwargs)


def _tiny_conv(first: LIF, second: LIF) -> SpikingNetwork:
    """Conv 2->4 (3x3, padding 1), neuron, 2x2 average pool, Flatten, Linear 64->5, neuron, on
    8x8 inputs; weights drawn so that both neuron layers spike at moderate rates."""
    gen = torch.Generator().manual_seed(5)
    body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), first, nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 5), second)
    with torch.no_grad():
        for layer, scale, low in ((body[0], 0.5, -0.15), (body[4], 0.12, -0.03)):
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * scale + low)
            layer.bias.zero_()
    return SpikingNetwork(body, STEPS)


def _lif(reset):
    return LIF(beta=0.5, v_th=1.0, reset=reset, step_mode="folded")


def _if(reset):
    return IF(v_th=1.0, reset=reset, step_mode="folded")


@pytest.fixture
def snntorch():
    snntorch = pytest.importorskip("snntorch", reason="snnTorch is not installed ([peers] extra)")
    from snntorch import utils
    from snntorch.import_nir import import_from_nir

    def load(graph):
        module = import_from_nir(graph)
        utils.reset(module)
        return module

    return snntorch, load


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_snntorch_runs_our_lif(snntorch, reset, capsys):
    """snnTorch reads LIF with its dt = 1e-4 and always resets to zero: export with dt=1e-4."""
    _, load = snntorch
    model, x = _net(_lif(reset)), _input()
    ours, theirs = _ours(model, x), _stepped(load(_quiet_export(model, dt=1e-4,
                                                                input_shape=(N_IN,))), x)
    deviations = int((ours != theirs).sum())
    if reset == "zero":
        assert deviations == 0
        _row("snnTorch", "ours -> snnTorch (LIF, zero reset)", 0, ours.numel(), "exact")
        return
    assert deviations > 0
    as_zero = _ours(_net(_lif("zero")), x)
    assert torch.equal(theirs, as_zero), "snnTorch ran it as a zero-reset neuron"
    _row("snnTorch", "ours -> snnTorch (LIF, subtract reset)", deviations, ours.numel(),
         "snnTorch resets to v_reset (NIR has no reset by subtraction); equal to our zero reset")


def test_snntorch_runs_our_if_as_a_leaky_neuron(snntorch):
    """snnTorch 1.0.0 maps nir.IF to Leaky(beta=0.9, reset by subtraction), and asserts r = 1:
    our IF exported at dt = 1e-4 (r = 1e4) fails its import with AssertionError (pinned)."""
    _, load = snntorch
    model, x = _net(_if("zero")), _input()
    with pytest.raises(AssertionError, match="r != 1 not supported"):
        load(_quiet_export(model, dt=1e-4, input_shape=(N_IN,)))
    theirs = _stepped(load(_quiet_export(model, dt=1.0, input_shape=(N_IN,))), x)
    deviations = int((_ours(model, x) != theirs).sum())
    assert deviations > 0
    leaky = _ours(_net(LIF(beta=0.9, v_th=1.0, reset="subtract", step_mode="folded")), x)
    assert torch.equal(theirs, leaky)
    _row("snnTorch", "ours -> snnTorch (IF)", deviations, theirs.numel(),
         "snnTorch builds nir.IF as Leaky(beta=0.9, subtract reset); equal to our LIF of that kind")


def test_snntorch_conv_graph_runs_at_batch_one_only(snntorch):
    """snnTorch uses NIR's Flatten dims as torch's (NIR's count without the batch): at batch 1
    the batch dim is flattened away and the spikes match; at batch 2 the Linear fails (pinned)."""
    _, load = snntorch
    model = _tiny_conv(_lif("zero"), _lif("zero"))
    x = _input((2, 2, 8, 8))
    graph = _quiet_export(model, dt=1e-4, input_shape=(2, 8, 8))
    one = _stepped(load(graph), x[:1])
    ours = _ours(model, x[:1])
    assert one.shape == ours.shape[:1] + ours.shape[2:]  # snnTorch dropped the batch dim
    assert torch.equal(one, ours[:, 0]) and ours.sum() > 0
    _row("snnTorch", "ours -> snnTorch (conv, batch 1)", 0, ours.numel(), "exact")
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        _stepped(load(graph), x)


def test_snntorch_export_with_scalar_parameters_fails(snntorch):
    """Pinned: snnTorch 1.0.0's export of Linear + Leaky, as its docstring shows it (scalar beta,
    sample data with a batch), fails NIR 1.0.8's type inference with ValueError. The exports
    below pass per-neuron beta and threshold vectors and a sample without the batch instead."""
    snn, _ = snntorch
    from snntorch.export_nir import export_to_nir

    net = nn.Sequential(nn.Linear(N_IN, N_OUT), snn.Leaky(beta=0.5, init_hidden=True))
    with pytest.raises(ValueError, match="type mismatch"):
        export_to_nir(net, torch.rand(1, N_IN))


@pytest.mark.parametrize("kind", ["Leaky", "Synaptic"])
def test_snntorch_graphs_run_here(snntorch, kind):
    snn, _ = snntorch
    from snntorch import utils
    from snntorch.export_nir import export_to_nir

    common = dict(beta=torch.full((N_OUT,), 0.5), threshold=torch.ones(N_OUT),
                  reset_mechanism="zero", reset_delay=False, init_hidden=True)
    neuron = (snn.Leaky(**common) if kind == "Leaky"
              else snn.Synaptic(alpha=torch.full((N_OUT,), 0.5), **common))
    net = nn.Sequential(_linear(1), neuron)
    graph = export_to_nir(net, torch.rand(N_IN))
    x = _input()
    utils.reset(net)
    with torch.no_grad():
        theirs = torch.stack([net(x) for _ in range(STEPS)])
    ours = _ours(from_nir(graph, timesteps=STEPS, dt=1e-4), x)
    assert torch.equal(ours, theirs) and theirs.sum() > 0
    node = "LIF" if kind == "Leaky" else "CubaLIF"
    _row("snnTorch", f"snnTorch -> ours ({kind} -> {node})", 0, ours.numel(),
         "exact (dt=1e-4; per-neuron beta/threshold vectors, see the pinned export failure)")


@pytest.fixture
def norse():
    return pytest.importorskip("norse.torch", reason="Norse is not installed ([peers] extra)")


@pytest.fixture
def quiet_norse_logs():
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # Norse logs "r is expected to be 1" at WARNING
    yield
    logger.setLevel(level)


def test_norse_runs_our_if(norse, quiet_norse_logs):
    model, x = _net(_if("zero")), _input()
    theirs = _stepped(norse.from_nir(_quiet_export(model, dt=1.0, input_shape=(N_IN,))), x)
    assert torch.equal(_ours(model, x), theirs) and theirs.sum() > 0
    _row("Norse", "ours -> Norse (IF, zero reset)", 0, theirs.numel(), "exact (dt=1: r = 1)")


def test_threshold_equality_matches_strict_and_non_strict_peers(norse, spikingjelly,
                                                                quiet_norse_logs):
    """A membrane landing exactly on v_th spikes here (h >= v_th); Norse spikes on v > v_threshold
    (as NIR defines it) and SpikingJelly on v >= v_threshold. With v_threshold written one float32
    below v_th, both spike on the same step as we do."""
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.25)
    model, x = SpikingNetwork(nn.Sequential(layer, _if("zero")), STEPS), torch.ones(1, 1)
    ours = _ours(model, x)
    assert ours.flatten().tolist() == [0, 0, 0, 1] * 2  # v = 0.25, 0.5, 0.75, 1.0 == v_th
    graph = _quiet_export(model, dt=1.0, input_shape=(1,))
    assert torch.equal(_stepped(norse.from_nir(graph), x), ours)
    assert torch.equal(_stepped(spikingjelly.import_from_nir(graph, dt=1.0), x), ours)


def test_norse_ignores_r_of_our_lif(norse, quiet_norse_logs):
    """Norse's LIFBoxCell steps ``v + dt/tau * (x - v)``: NIR's r (here tau/dt = 2) is ignored,
    so its input is halved. Scaling its Linear by r restores our spikes exactly."""
    model, x = _net(_lif("zero")), _input()
    ours = _ours(model, x)
    imported = norse.from_nir(_quiet_export(model, dt=1e-3, input_shape=(N_IN,)), dt=1e-3)
    deviations = int((ours != _stepped(imported, x)).sum())
    assert deviations > 0
    for module in imported.modules():
        if isinstance(module, nn.Linear):
            with torch.no_grad():
                module.weight.mul_(2.0)
                module.bias.mul_(2.0)
    assert torch.equal(ours, _stepped(imported, x))
    _row("Norse", "ours -> Norse (LIF)", deviations, ours.numel(),
         "Norse ignores r (input gain dt/tau = 0.5 instead of 1); with its Linear scaled by r: 0")


def test_norse_conv_graph_loses_its_avgpool(norse, quiet_norse_logs):
    """Pinned: Norse 1.1.0's from_nir has no AvgPool2d mapping and drops the node, which breaks
    the graph: depending on the hash seed (nirtorch.load's walk order), running it raises
    RuntimeError at the Linear or returns the first layer's [B, 4, 8, 8] instead of [B, 5]."""
    graph = _quiet_export(_tiny_conv(_if("zero"), _if("zero")), dt=1.0, input_shape=(2, 8, 8))
    imported = norse.from_nir(graph)
    assert not any(isinstance(m, nn.AvgPool2d) for m in imported.modules())
    try:
        out, _ = imported(_input((1, 2, 8, 8)), None)
    except RuntimeError as error:
        assert "cannot be multiplied" in str(error)
    else:
        assert out.shape == (1, 4, 8, 8)


@pytest.mark.parametrize("kind", ["LIFBoxCell", "IAFCell"])
def test_norse_graphs_run_here(norse, kind):
    """Norse writes tau = dt / tau_mem_inv (not 1 / tau_mem_inv): its LIF steps decay by
    dt * tau_mem_inv, which is NIR's dt' / tau for dt' = dt**2, the dt we import it with. Its IF
    ignores dt (v + x), i.e. NIR's IF with r = 1 at dt = 1."""
    gen = torch.Generator().manual_seed(2)
    layer = nn.Linear(N_IN, N_OUT)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(N_OUT, N_IN, generator=gen) * 2.5 - 0.5)
    if kind == "LIFBoxCell":
        cell = norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.as_tensor(300.0)))
        dt = 1e-3**2
    else:
        cell, dt = norse.IAFCell(), 1.0
    net = norse.SequentialState(layer, cell)
    graph = norse.to_nir(net, torch.rand(N_IN))  # a sample without batch: NIR shapes have none
    x = _input()
    theirs = _stepped(net, x)
    ours = _ours(from_nir(graph, timesteps=STEPS, dt=dt), x)
    deviations = int((ours != theirs).sum())
    assert deviations == 0 and theirs.sum() > 0
    why = ("Norse's tau = dt / tau_mem_inv, see the pinned test" if kind == "LIFBoxCell"
           else "Norse's IF adds its input as is: NIR's IF with r = 1 at dt = 1")
    _row("Norse", f"Norse -> ours ({kind})", deviations, ours.numel(),
         f"exact with dt={dt:g} ({why})")


def test_norse_own_round_trip_changes_tau(norse, quiet_norse_logs):
    """Pinned: Norse 1.1.0 exports tau = dt / tau_mem_inv and imports tau_mem_inv = 1 / tau, so its
    own export -> import multiplies tau_mem_inv by 1 / dt (here 500 -> 5e5)."""
    cell = norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.as_tensor(500.0)))
    graph = norse.to_nir(norse.SequentialState(nn.Linear(N_IN, N_OUT), cell), torch.rand(N_IN))
    back = [m for m in norse.from_nir(graph).modules() if isinstance(m, norse.LIFBoxCell)][0]
    assert torch.allclose(back.p.tau_mem_inv, torch.tensor(5e5))


def test_norse_graph_cannot_be_written(norse, tmp_path):
    """Pinned: nir.write of Norse 1.1.0's to_nir graph fails (its LIF parameters are 0-d tensors,
    and NIR compresses every array: TypeError from h5py). The in-memory graph imports fine."""
    graph = norse.to_nir(norse.SequentialState(nn.Linear(N_IN, N_OUT), norse.LIFBoxCell()),
                         torch.rand(N_IN))
    with pytest.raises(TypeError, match="Scalar datasets"):
        nir.write(tmp_path / "norse.nir", graph)


@pytest.fixture
def spikingjelly():
    exchange = pytest.importorskip("spikingjelly.activation_based.nir_exchange",
                                   reason="SpikingJelly is not installed ([peers] extra)")
    return exchange


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("neuron", ["LIF", "IF"])
def test_spikingjelly_runs_our_neurons(spikingjelly, neuron, reset):
    make = _lif if neuron == "LIF" else _if
    model, x = _net(make(reset)), _input()
    theirs = _stepped(spikingjelly.import_from_nir(
        _quiet_export(model, dt=1e-4, input_shape=(N_IN,)), dt=1e-4), x)
    deviations = int((_ours(model, x) != theirs).sum())
    if reset == "zero":
        assert deviations == 0 and theirs.sum() > 0
        _row("SpikingJelly", f"ours -> SpikingJelly ({neuron})", 0, theirs.numel(), "exact")
        return
    assert torch.equal(theirs, _ours(_net(make("zero")), x)) and deviations > 0
    _row("SpikingJelly", f"ours -> SpikingJelly ({neuron}, subtract reset)", deviations,
         theirs.numel(), "NIR has no reset by subtraction; equal to our zero reset")


def test_spikingjelly_runs_our_conv_net(spikingjelly):
    model, x = _tiny_conv(_if("zero"), _lif("zero")), _input((BATCH, 2, 8, 8))
    theirs = _stepped(spikingjelly.import_from_nir(
        _quiet_export(model, dt=1e-4, input_shape=(2, 8, 8)), dt=1e-4), x)
    ours = _ours(model, x)
    assert torch.equal(ours, theirs) and 0 < ours.sum() < ours.numel()
    _row("SpikingJelly", "ours -> SpikingJelly (conv, IF, pool, LIF)", 0, ours.numel(), "exact")


@pytest.mark.parametrize("kind", ["LIFNode", "IFNode"])
def test_spikingjelly_graphs_run_here(spikingjelly, kind):
    from spikingjelly.activation_based import functional, layer, neuron

    cell = (neuron.LIFNode(tau=2.0, decay_input=False, v_reset=0.0) if kind == "LIFNode"
            else neuron.IFNode(v_reset=0.0))
    net = nn.Sequential(layer.Linear(N_IN, N_OUT), cell)
    with torch.no_grad():
        net[0].weight.copy_(_linear(3).weight)
        net[0].bias.copy_(_linear(3).bias)
    graph = spikingjelly.export_to_nir(net, torch.rand(1, N_IN), dt=1e-4)
    x = _input()
    functional.reset_net(net)
    with torch.no_grad():
        theirs = torch.stack([net(x) for _ in range(STEPS)])
    ours = _ours(from_nir(graph, timesteps=STEPS, dt=1e-4), x)
    assert torch.equal(ours, theirs) and theirs.sum() > 0
    _row("SpikingJelly", f"SpikingJelly -> ours ({kind})", 0, ours.numel(), "exact (dt=1e-4)")


# ---------------------------------------------------------------------------------------------
# Command line


@pytest.fixture
def checkpoint(tmp_path):
    from neuro_emu.models import build_model

    model = build_model("snn-vgg", width=0.125, timesteps=2)
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(),
                "config": {"model": "snn-vgg", "width": 0.125, "timesteps": 2}}, path)
    return path


def test_cli_export_then_import(checkpoint, tmp_path, capsys):
    from neuro_emu.cli import main

    out = tmp_path / "net.nir"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "-T", "3"]) == 0
    captured = capsys.readouterr()
    assert "6 Conv2d" in captured.out and "T = 3" in captured.out
    assert "reset by subtracting v_th" in captured.err  # the export's warning, as a note
    assert main(["import", str(out), "--backend", "numba", "--batch", "4"]) == 0
    text = capsys.readouterr().out
    assert "4 images of the shipped CIFAR-10 subset" in text and "accuracy" in text
    assert "7 neuron layers, T = 3" in text
    assert main(["import", str(out), "--backend", "torch", "--data", "random", "--batch", "2"]) == 0
    assert "random input [2, 3, 32, 32]" in capsys.readouterr().out


def test_cli_errors(checkpoint, tmp_path, capsys):
    from neuro_emu.cli import main

    out = str(tmp_path / "x.nir")
    assert main(["export", "--model", "ann-vgg", "--out", out]) == 2
    assert "is an ANN" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(checkpoint), "--model", "resnet18",
                 "--out", out]) == 2
    assert "disagrees with the checkpoint" in capsys.readouterr().err
    assert main(["import", str(checkpoint)]) == 2
    assert "is not a NIR file" in capsys.readouterr().err
    foreign = tmp_path / "foreign.nir"
    nir.write(foreign, nir.NIRGraph(nodes=_small_graph(), edges=list(_EDGES)))
    assert main(["import", str(foreign)]) == 2
    assert "pass timesteps=T" in capsys.readouterr().err
    assert main(["import", str(foreign), "-T", "2", "--dt", "1"]) == 0
    assert "random input [32, 4]" in capsys.readouterr().out


def test_peers_do_not_map_nir_scale(snntorch, norse, spikingjelly, quiet_norse_logs):
    """Pinned: none of the peers maps NIR's Scale, which converted networks (IF between
    Scale(lambda) nodes) and ``x * number`` export to: snnTorch 1.0.0 and SpikingJelly 2.0.0
    raise ValueError, Norse 1.1.0 drops the node silently (so its network computes without it)."""
    graph = _quiet_export(SpikingNetwork(_Scaled(), STEPS), dt=1e-4, input_shape=(4,))
    _, load = snntorch
    with pytest.raises(ValueError, match="Unknown node type .*Scale"):
        load(graph)
    with pytest.raises(ValueError, match="Unknown node type .*Scale"):
        spikingjelly.import_from_nir(graph, dt=1e-4)
    kept = [type(m).__name__ for m in norse.from_nir(graph).children()]
    assert kept == ["Identity", "Linear", "LIFBoxCell", "Identity"]
