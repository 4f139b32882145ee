"""Cross-backend conformance: run the same inputs on several backends and count deviations.

The numerics contract (DESIGN.md section 2) says forward spikes and membranes agree bit for bit on
every backend, and so do gradients wherever the operations are the same; the one exception here is
the sigmoid surrogate, whose ``exp`` differs in its last bit between libraries
(:data:`GRAD_ATOL_PER_STEP`). A report lists, for every pair of backends and every quantity, how
many elements differ and by how much, and whether that breaks the contract.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from neuro_emu.layers import LIF
from neuro_emu.ops import available_backends, multistep_lif

# Gradient tolerance per time step, by surrogate; absent means exact. sigmoid's exp is rounded
# differently by Sleef (torch), libm (Numba) and CUDA/numpy (Triton): a few ulp of g <= alpha/4 per
# step, summed by BPTT over at most T steps.
GRAD_ATOL_PER_STEP: dict[str, float] = {"sigmoid": 1e-6}


@dataclass(frozen=True)
class Mismatch:
    """How two tensors differ: NaN matches NaN, and ``atol`` 0 means bit-for-bit."""

    count: int
    total: int
    max_abs_diff: float
    first: list[tuple[tuple[int, ...], float, float]]

    def describe(self) -> str:
        shown = "; ".join(f"{i}: {a!r} vs {b!r}" for i, a, b in self.first)
        return f"{self.count} of {self.total} differ (max abs diff {self.max_abs_diff:.3g})" + (
            f", first at {shown}" if shown else ""
        )


def compare_tensors(a: torch.Tensor, b: torch.Tensor, atol: float = 0.0) -> Mismatch:
    """Count the elements of ``a`` and ``b`` further apart than ``atol`` (same shape required)."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare shapes {tuple(a.shape)} and {tuple(b.shape)}")
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    both_nan = a64.isnan() & b64.isnan()
    diff = (a64 - b64).abs().masked_fill(both_nan, 0.0).nan_to_num(nan=float("inf"))
    differs = ~((a64 == b64) | both_nan | (diff <= atol))
    where = differs.nonzero()[:5].tolist()
    first = [(tuple(i), a64[tuple(i)].item(), b64[tuple(i)].item()) for i in where]
    max_diff = diff.max().item() if diff.numel() else 0.0
    return Mismatch(int(differs.sum()), a.numel(), max_diff, first)


@dataclass(frozen=True)
class Deviation:
    """One quantity compared between two backends."""

    backends: tuple[str, str]
    quantity: str
    mismatch: Mismatch
    atol: float

    @property
    def ok(self) -> bool:
        return self.mismatch.count == 0


@dataclass
class ConformanceReport:
    """All pairwise deviations of one case; ``ok`` is True when the contract holds."""

    case: str
    backends: list[str]
    deviations: list[Deviation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.deviations)

    @property
    def checks(self) -> int:
        return sum(d.mismatch.total for d in self.deviations)

    def format(self) -> str:
        lines = [f"{self.case}: {'ok' if self.ok else 'DEVIATES'} ({', '.join(self.backends)})"]
        for d in self.deviations:
            contract = "exact" if d.atol == 0 else f"atol {d.atol:g}"
            verdict = "ok" if d.ok else "FAIL"
            lines.append(
                f"  {d.backends[0]:>6} vs {d.backends[1]:<6} {d.quantity:<12} {contract:<12} "
                f"{verdict:<4} {d.mismatch.describe()}"
            )
        return "\n".join(lines)


def _run_op(x, v_init, grad_s, grad_v, backend, kwargs) -> dict[str, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    v = None if v_init is None else v_init.detach().clone().requires_grad_()
    spikes, v_final = multistep_lif(x, v, **kwargs, backend=backend, return_state=True)
    torch.autograd.backward([spikes, v_final], [grad_s, grad_v])
    out = {"spikes": spikes.detach(), "v_final": v_final.detach(), "grad_x": x.grad}
    if v is not None:
        out["grad_v_init"] = v.grad
    return out


def _pairwise(case: str, results: dict[str, dict[str, torch.Tensor]], grad_atol: float):
    report = ConformanceReport(case, list(results))
    for a, b in itertools.combinations(results, 2):
        for quantity in results[a]:
            atol = grad_atol if quantity.startswith("grad") else 0.0
            mismatch = compare_tensors(results[a][quantity], results[b][quantity], atol)
            report.deviations.append(Deviation((a, b), quantity, mismatch, atol))
    return report


def compare_backends(
    x: torch.Tensor,
    v_init: torch.Tensor | None = None,
    *,
    backends: Sequence[str] | None = None,
    seed: int = 0,
    case: str = "multistep_lif",
    **neuron_kwargs,
) -> ConformanceReport:
    """Run ``multistep_lif(x, v_init, **neuron_kwargs)`` forward and backward on each backend.

    Args:
        x: ``[T, *shape]`` input; v_init: ``[*shape]`` or None.
        backends: at least two of "torch", "numba", "triton" (default: all available for x).
        seed: for the random output gradients fed to backward (the same on every backend).
        neuron_kwargs: the op's parameters (beta, v_th, reset, surrogate, ...).

    Returns:
        The report: spike and membrane deviations (must be zero), gradient deviations (zero, or
        within :data:`GRAD_ATOL_PER_STEP` x T for the sigmoid surrogate).
    """
    backends = list(backends or available_backends(x.device))
    if len(backends) < 2:
        raise ValueError(f"conformance needs at least two backends, got {backends}")
    gen = torch.Generator().manual_seed(seed)
    grad_s = torch.randn(x.shape, generator=gen).to(x.dtype).to(x.device)
    grad_v = torch.randn(x.shape[1:], generator=gen).to(x.device)
    results = {b: _run_op(x, v_init, grad_s, grad_v, b, neuron_kwargs) for b in backends}
    surrogate = neuron_kwargs.get("surrogate", "atan")
    return _pairwise(case, results, GRAD_ATOL_PER_STEP.get(surrogate, 0.0) * x.shape[0])


def compare_models(
    model: nn.Module,
    x: torch.Tensor,
    *,
    backends: Sequence[str] | None = None,
    seed: int = 0,
    case: str | None = None,
) -> ConformanceReport:
    """Run ``model(x)`` with every LIF/IF layer switched to each backend in turn; compare the
    output, every neuron layer's spikes (``layer.<name>``) and the input gradient.

    The model's neuron backends are restored afterwards."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LIF)}
    if not layers:
        raise ValueError("the model has no neuro_emu LIF/IF layers to compare")
    backends = list(backends or available_backends(x.device))
    original = {name: m.backend for name, m in layers.items()}
    try:
        results = {b: _run_model(model, layers, x, b, seed) for b in backends}
    finally:
        for name, m in layers.items():
            m.backend = original[name]
            m.reset_state()
    surrogates = {m.kwargs["surrogate"] for m in layers.values()}
    steps = x.shape[0] if x.dim() > 1 else 1
    atol = max(GRAD_ATOL_PER_STEP.get(s, 0.0) for s in surrogates) * steps * len(layers)
    return _pairwise(case or type(model).__name__, results, atol)


def _run_model(model, layers, x, backend, seed) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}

    def capture(name):
        return lambda _module, _inputs, spikes: captured.__setitem__(name, spikes.detach())

    hooks = [m.register_forward_hook(capture(name)) for name, m in layers.items()]
    for m in layers.values():
        m.backend = backend
        m.reset_state()  # every backend starts single-step layers from rest
    xb = x.detach().clone().requires_grad_()
    try:
        out = model(xb)
    finally:
        for hook in hooks:
            hook.remove()
    gen = torch.Generator().manual_seed(seed)
    out.backward(torch.randn(out.shape, generator=gen).to(out))
    return {"output": out.detach(), "grad_x": xb.grad} | {
        f"layer.{name}": spikes for name, spikes in captured.items()
    }


@dataclass(frozen=True)
class SuiteCase:
    name: str
    steps: int
    size: int
    kwargs: dict


def default_suite(steps: int = 16, size: int = 10_007) -> list[SuiteCase]:
    """IF and LIF, every reset mode and surrogate, attached and detached reset."""
    cases = []
    for (neuron, beta), reset, surrogate, detach in itertools.product(
        [("if", 1.0), ("lif", 0.5)],
        ["subtract", "zero", "none"],
        ["atan", "sigmoid", "triangle", "rectangle"],
        [False, True],
    ):
        name = f"{neuron}-{reset}-{surrogate}{'-detach' if detach else ''}"
        kwargs = dict(beta=beta, reset=reset, v_reset=-0.25, surrogate=surrogate,
                      detach_reset=detach)
        cases.append(SuiteCase(name, steps, size, kwargs))
    return cases


def run_suite(
    cases: Iterable[SuiteCase],
    backends: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[ConformanceReport]:
    """Run each case on random inputs around the threshold, with a random initial membrane."""
    reports = []
    cases = list(cases)
    for i, case in enumerate(tqdm(cases, desc="conformance", disable=not progress)):
        gen = torch.Generator().manual_seed(seed + i)
        x = torch.rand(case.steps, case.size, generator=gen) * 1.6 - 0.3
        v_init = torch.rand(case.size, generator=gen)
        reports.append(
            compare_backends(x, v_init, backends=backends, seed=seed + i, case=case.name,
                             **case.kwargs)
        )
    return reports
