"""The conformance module: it finds real deviations and reports them readably."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuro_emu.conformance import (
    compare_backends,
    compare_models,
    compare_tensors,
    default_suite,
    run_suite,
)
from neuro_emu.layers import IF, LIF


def test_compare_tensors_counts_and_locates():
    a = torch.tensor([[0.0, 1.0], [float("nan"), 2.0]])
    b = torch.tensor([[0.0, 1.5], [float("nan"), 2.0000002]])  # one ulp above 2
    exact = compare_tensors(a, b)
    assert exact.count == 2 and exact.total == 4
    assert exact.first[0] == ((0, 1), 1.0, 1.5)
    assert "2 of 4 differ" in exact.describe()
    assert compare_tensors(a, b, atol=1e-6).count == 1


def test_nan_against_number_is_a_deviation():
    m = compare_tensors(torch.tensor([float("nan")]), torch.tensor([0.0]))
    assert m.count == 1 and m.max_abs_diff == float("inf")


def test_backends_conform_on_an_op():
    x = torch.rand(9, 333) * 1.6 - 0.3
    report = compare_backends(x, torch.rand(333), beta=0.8, reset="zero", v_reset=-0.2)
    assert report.ok, report.format()
    quantities = {d.quantity for d in report.deviations}
    assert quantities == {"spikes", "v_final", "grad_x", "grad_v_init"}


def test_report_flags_a_contract_break(monkeypatch):
    """A backend that rounds differently (here: a threshold one ulp off) must be caught."""
    from neuro_emu import conformance

    real = conformance.multistep_lif

    def off_by_an_ulp(x, v, *, backend, v_th=1.0, **kw):
        if backend == "numba":
            v_th = torch.nextafter(torch.tensor(v_th), torch.tensor(2.0)).item()
        return real(x, v, backend=backend, v_th=v_th, **kw)

    monkeypatch.setattr(conformance, "multistep_lif", off_by_an_ulp)
    x = torch.full((1, 4), 1.0)
    report = compare_backends(x, backends=["torch", "numba"], beta=0.5)
    assert not report.ok
    spikes = next(d for d in report.deviations if d.quantity == "spikes")
    assert spikes.mismatch.count == 4
    assert "FAIL" in report.format() and "DEVIATES" in report.format()


def test_sigmoid_gradients_get_their_stated_tolerance():
    x = torch.rand(8, 500) * 1.6 - 0.3
    report = compare_backends(x, beta=0.5, surrogate="sigmoid")
    assert report.ok, report.format()
    grads = [d for d in report.deviations if d.quantity == "grad_x"]
    assert all(d.atol == pytest.approx(8e-6) for d in grads)


def test_models_conform_layer_by_layer():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(12, 20), LIF(tau=2.0), nn.Linear(20, 20), IF(), nn.Linear(20, 3)
    )
    report = compare_models(model, torch.rand(6, 4, 12) * 2)
    assert report.ok, report.format()
    assert {"output", "grad_x", "layer.1", "layer.3"} <= {d.quantity for d in report.deviations}
    assert model[1].backend == "auto"  # restored


def test_single_step_models_start_each_backend_from_rest():
    torch.manual_seed(0)
    layer = LIF(tau=2.0, step_mode="single")
    model = nn.Sequential(nn.Linear(8, 8), layer)
    report = compare_models(model, torch.rand(4, 8) * 2, backends=["torch", "numba"])
    assert report.ok, report.format()
    assert layer.v is None


def test_default_suite_covers_every_mode():
    cases = default_suite(steps=3, size=17)
    assert len(cases) == 2 * 3 * 4 * 2
    reports = run_suite(cases[:4], backends=["torch", "numba"], progress=False)
    assert all(r.ok for r in reports)
