"""The training-step benchmark suite: one SGD step of SNN-VGG with each LIF backend, and the ANN.

Subjects, all in the same run on the same batch:

- ``step/<backend>``: a whole training step of the SNN-VGG (forward over T steps, cross-entropy,
  BPTT backward, SGD update) with its LIF layers on ``<backend>`` ("torch" is the PyTorch loop,
  the baseline; "numba" on CPU, "triton" on CUDA are the fused kernels);
- ``neurons/<backend>``: the LIF layers alone, forward and backward, on inputs of the shapes the
  network feeds them (recorded from one forward): the neuron share of the step;
- ``step/ann``: the same step of the ANN-VGG (ReLU), for scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from neuro_emu.benchmarks import stamp_rows, write_json
from neuro_emu.layers import LIF
from neuro_emu.models import build_model
from neuro_emu.ops import available_backends, multistep_lif

STEPS = 4  # T of the recipe


@dataclass(frozen=True)
class Case:
    """``subject`` ("step/<backend>", "neurons/<backend>" or "step/ann") at ``width``, ``batch``."""

    subject: str
    width: float
    batch: int

    @property
    def id(self) -> str:
        return f"w{self.width}-b{self.batch}-{self.subject.replace('/', '-')}"

    def info(self) -> dict[str, object]:
        return {"subject": self.subject, "width": self.width, "batch": self.batch, "T": STEPS}


def cases(device: torch.device, quick: bool = False) -> list[Case]:
    """One shape per device: width 0.25, batch 32 on CPU; the recipe's width 1, batch 128 on
    CUDA; quick: width 0.125, batch 8."""
    width, batch = (0.125, 8) if quick else (1.0, 128) if device.type == "cuda" else (0.25, 32)
    fused = [b for b in available_backends(device) if b != "torch"
             and (b != "triton" or device.type == "cuda")]
    found = [Case("step/ann", width, batch)]
    for backend in ["torch", *fused]:
        found += [Case(f"step/{backend}", width, batch), Case(f"neurons/{backend}", width, batch)]
    return found


def _batch(case: Case, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(case.batch, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (case.batch,), generator=gen)
    return images.to(device), labels.to(device)


def make_workload(case: Case, device: torch.device) -> Callable[[], None]:
    """The call to time for ``case``; models and inputs are made here, outside the timing."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    kind, backend = case.subject.split("/")
    torch.manual_seed(0)
    model = build_model("ann-vgg" if backend == "ann" else "snn-vgg", width=case.width,
                        timesteps=STEPS, backend="torch" if backend == "ann" else backend)
    model = model.to(device)
    images, labels = _batch(case, device)
    if kind == "step":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sync()

        return step
    inputs = [x.requires_grad_() for x in _neuron_inputs(model, images)]
    grads = [torch.randn_like(x) for x in inputs]
    params = [n.kwargs for _, n in model.neurons()]

    def neurons() -> None:
        for x, grad, kwargs in zip(inputs, grads, params, strict=True):
            spikes = multistep_lif(x, **kwargs, backend=backend)
            spikes.backward(grad)
        sync()

    return neurons


@torch.no_grad()
def _neuron_inputs(model, images: torch.Tensor) -> list[torch.Tensor]:
    """The ``[T, B, ...]`` input of every LIF layer on one forward of ``images``."""
    recorded: list[torch.Tensor] = []
    hooks = [n.register_forward_hook(lambda m, i, o: recorded.append(
        i[0].detach().unflatten(0, (m.timesteps, -1)).clone())) for _, n in model.neurons()
        if isinstance(n, LIF)]
    model(images)
    for hook in hooks:
        hook.remove()
    return recorded


def write_report(rows: list[dict], skipped: list[dict], meta: dict, stem: Path) -> list[Path]:
    """Write ``<stem>.json`` and ``<stem>.md``: step and neuron times per backend, the fused
    backends' speed-ups over the PyTorch loop, and the neuron share of each step."""
    by_subject = {row["subject"]: row for row in rows}
    for row in rows:
        kind, backend = row["subject"].split("/")
        loop = by_subject.get(f"{kind}/torch")
        row["x_torch_loop"] = None if loop is None or backend == "ann" else (
            loop["median_s"] / row["median_s"])
        if kind == "step" and f"neurons/{backend}" in by_subject:
            row["neuron_share"] = by_subject[f"neurons/{backend}"]["median_s"] / row["median_s"]
    table = stamp_rows(rows, meta)
    report = {"suite": "train_step", "meta": meta, "T": STEPS, "rows": table, "skipped": skipped}
    json_path, md_path = write_json(stem.with_suffix(".json"), report), stem.with_suffix(".md")
    lines = [
        f"# Training-step benchmark: {meta['device']}",
        "",
        f"Commit `{meta['commit']}`, {meta['date']}, `{meta['command']}`; torch {meta['torch']} "
        f"({meta['torch_threads']} threads), numba {meta['numba']}, triton {meta['triton']}.",
        "",
        f"One SGD step of SNN-VGG (T = {STEPS}, LIF tau 2, ATan) on random images; "
        "`neurons/*` times the LIF layers alone (forward + backward on the shapes the network "
        "feeds them), and 'neuron share' is that over the whole step of the same backend.",
        "",
        "| subject | width | batch | median ms | min ms | rounds | x torch loop | neuron share |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in table:
        speed = "" if row.get("x_torch_loop") is None else f"{row['x_torch_loop']:.2f}"
        share = "" if row.get("neuron_share") is None else f"{100 * row['neuron_share']:.0f}%"
        lines.append(f"| {row['subject']} | {row['width']} | {row['batch']} | "
                     f"{1e3 * row['median_s']:.3g} | {1e3 * row['min_s']:.3g} | {row['rounds']} "
                     f"| {speed} | {share} |")
    lines += [""] + [f"- not measured: `{s['case']}`: {s['reason']}" for s in skipped]
    md_path.write_text("\n".join(lines) + "\n")
    return [json_path, md_path]
