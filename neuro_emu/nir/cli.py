"""``neuro-emu export`` and ``neuro-emu import``: NIR files from checkpoints, and runs of NIR files.

Exit status: 0 success, 2 a bad argument, checkpoint or file (the message says which).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter

CIFAR_SHAPE = (3, 32, 32)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(
            f"expected positive sizes separated by commas, e.g. 3,32,32; got {text!r}"
        )
    return shape


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _error(command: str, message: object) -> int:
    print(f"neuro-emu {command}: error: {message}", file=sys.stderr)
    return 2


def _node_summary(graph) -> str:
    counts = Counter(type(node).__name__ for node in graph.nodes.values())
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def _load_model(args: argparse.Namespace):
    """The SpikingNetwork to export: a checkpoint's (its config names the model) or, without one,
    ``--model`` built with random weights."""
    from neuro_emu.layers import SpikingNetwork
    from neuro_emu.models import MODELS, build_model

    if args.checkpoint:
        from neuro_emu.train.checkpoint import load_checkpoint
        from neuro_emu.train.trainer import load_trained

        config = load_checkpoint(args.checkpoint)["config"]
        if args.model and args.model != config.get("model"):
            raise ValueError(
                f"--model {args.model} disagrees with the checkpoint, which holds "
                f"{config.get('model')!r}"
            )
        name = config.get("model")
        if name in MODELS and not MODELS[name][1]:
            raise ValueError(_ann_message(name))
        model = load_trained(args.checkpoint)
        source = f"checkpoint {args.checkpoint}"
    else:
        if not args.model:
            raise ValueError("give --checkpoint CKPT, or --model NAME for random weights")
        if args.model in MODELS and not MODELS[args.model][1]:
            raise ValueError(_ann_message(args.model))
        model = build_model(args.model, width=args.width, timesteps=args.nir_timesteps or 4)
        source = f"{args.model} (width {args.width}, random weights)"
    if not isinstance(model, SpikingNetwork):
        raise ValueError(f"{source} is not a spiking network; NIR export takes SpikingNetworks")
    if args.nir_timesteps:
        model.timesteps = args.nir_timesteps
    return model.cpu().eval(), source


def _ann_message(name: str) -> str:
    return (f"model {name!r} is an ANN (ReLU activations); NIR export takes spiking networks: "
            "train an SNN (snn-vgg) or convert the ANN first")


def cmd_export(args: argparse.Namespace) -> int:
    import os

    from neuro_emu.nir import NIRExportError, NIRExportWarning, to_nir

    try:
        model, source = _load_model(args)
    except (FileNotFoundError, RuntimeError, ValueError, TypeError) as error:
        return _error("export", error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NIRExportWarning)
        try:
            graph = to_nir(model, args.out, dt=args.dt, input_shape=args.input_shape)
        except (NIRExportError, ValueError, OSError) as error:
            return _error("export", error)
    for warning in caught:
        print(f"note: {warning.message}", file=sys.stderr)
    print(f"exported {source} -> {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB)")
    print(f"  nodes: {_node_summary(graph)}; {len(graph.edges)} edges")
    print(f"  T = {model.timesteps}, dt = {args.dt}, input {tuple(args.input_shape)}")
    return 0


def _inputs(args: argparse.Namespace, shape: tuple[int, ...]):
    """(x, labels or None, what): the shipped CIFAR-10 test subset when asked for (or by default
    for 3x32x32 inputs), else uniform random values in [0, 1)."""
    import torch

    use_subset = args.data == "subset" or (args.data == "auto" and shape == CIFAR_SHAPE)
    if use_subset:
        if shape != CIFAR_SHAPE:
            raise ValueError(f"--data subset needs a 3x32x32 input, the graph takes {shape}")
        from neuro_emu.data import load_cifar10, normalize

        images, labels = load_cifar10("test", "subset", progress=False)
        images, labels = images[: args.batch], labels[: args.batch]
        x = normalize(torch.from_numpy(images))
        return x, torch.from_numpy(labels), f"{len(labels)} images of the shipped CIFAR-10 subset"
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand((args.batch, *shape), generator=gen)
    return x, None, f"random input {list(x.shape)} in [0, 1) (seed {args.seed})"


def cmd_import(args: argparse.Namespace) -> int:
    import torch

    from neuro_emu.nir import NIRImportError, NIRImportWarning, from_nir, read_nir

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NIRImportWarning)
        try:
            graph = read_nir(args.path)
            model = from_nir(graph, backend=args.backend, timesteps=args.nir_timesteps,
                             dt=args.dt)
        except (FileNotFoundError, NIRImportError, ValueError) as error:
            return _error("import", error)
    for warning in caught:
        print(f"note: {warning.message}", file=sys.stderr)
    source = next(n for n in graph.nodes.values() if type(n).__name__ == "Input")
    shape = tuple(int(s) for s in source.input_type["input"])
    try:
        x, labels, what = _inputs(args, shape)
    except (ValueError, RuntimeError) as error:
        return _error("import", error)
    device = torch.device("cuda" if torch.cuda.is_available() and args.backend != "numba"
                          else "cpu")
    model = model.to(device)
    with torch.no_grad(), model.record_spikes() as counts:
        out = model(x.to(device))
    params = sum(p.numel() for p in model.parameters())
    print(f"imported {args.path}: {_node_summary(graph)}; {len(graph.edges)} edges")
    print(f"  {params:,} parameters, {len(counts.spikes)} neuron layers, T = {model.timesteps}, "
          f"backend {args.backend} on {device}")
    print(f"  ran {what}: output {list(out.shape)}, mean {out.mean().item():.4f}")
    if labels is not None and out.dim() == 2:
        accuracy = (out.argmax(1).cpu() == labels).float().mean().item()
        print(f"  accuracy {accuracy:.4f} on those images")
    print(f"  spike rate {counts.overall():.4f} overall; per layer: "
          + ", ".join(f"{name} {rate:.3f}" for name, rate in counts.rates().items()))
    return 0


def add_nir_commands(subparsers) -> None:
    """Add ``export`` and ``import`` to the ``neuro-emu`` subcommands."""
    export = subparsers.add_parser(
        "export", help="write a spiking network (a training checkpoint) as a NIR file",
        description="Exports a checkpoint's SNN (or --model with random weights) to NIR: "
        "BatchNorm folded, residual additions as edges; what NIR cannot hold (reset by "
        "subtraction, v_init, T) goes into metadata that neuro-emu import reads back exactly.",
    )
    export.add_argument("--checkpoint", help="a neuro-emu train checkpoint (last.pt / best.pt)")
    export.add_argument("--model", help="model name: checked against the checkpoint, or built "
                        "with random weights without one")
    export.add_argument("--width", type=_positive_float, default=1.0,
                        help="channel multiplier for --model without a checkpoint")
    export.add_argument("--timesteps", "-T", dest="nir_timesteps", type=_positive_int,
                        default=None,
                        help="time steps T (default: the checkpoint's, or 4)")
    export.add_argument("--out", required=True, help="the .nir file to write")
    export.add_argument("--dt", type=_positive_float, default=1.0,
                        help="NIR time step (default 1; snnTorch and SpikingJelly read 1e-4)")
    export.add_argument("--input-shape", type=_shape, default=CIFAR_SHAPE,
                        help="one sample's shape (default 3,32,32)")
    export.set_defaults(func=cmd_export)

    imp = subparsers.add_parser(
        "import", help="load a NIR file, run it and print a summary",
        description="Builds the graph as a spiking network on --backend and runs the shipped "
        "CIFAR-10 test subset through it (3x32x32 inputs) or a random input.",
    )
    imp.add_argument("path", help="the .nir file")
    imp.add_argument("--backend", default="auto", choices=["auto", "torch", "numba", "triton"],
                     help="neuron backend (default auto: Triton on CUDA, Numba on CPU)")
    imp.add_argument("--timesteps", "-T", dest="nir_timesteps", type=_positive_int,
                     default=None,
                     help="time steps T (default: the file's; required for other tools' files)")
    imp.add_argument("--dt", type=_positive_float, default=None,
                     help="NIR time step (default: the file's, else 1e-4)")
    imp.add_argument("--data", choices=["auto", "subset", "random"], default="auto",
                     help="input: the CIFAR-10 subset (auto for 3x32x32 graphs) or random")
    imp.add_argument("--batch", type=_positive_int, default=32, help="inputs to run (default 32)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the random input")
    imp.set_defaults(func=cmd_import)
