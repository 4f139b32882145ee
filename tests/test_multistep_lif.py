"""multistep_lif on every backend: against each other, hand-computed trajectories, gradcheck."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuro_emu.conformance import GRAD_ATOL_PER_STEP
from neuro_emu.ops import lif_params, multistep_if, multistep_lif
from neuro_emu.ops.multistep_lif import multistep_lif_torch, resolve_backend
from tests.cases import (
    BACKENDS,
    CASE_PARAMS,
    CASES,
    assert_close,
    assert_identical,
    backend_pairs,
    device_for,
)


@functools.cache
def run_case(case, backend: str) -> dict[str, torch.Tensor]:
    """Forward and backward of ``case`` on ``backend`` with fixed random output gradients."""
    dev = device_for(backend)
    x, v_init = case.make_inputs()
    x = x.to(dev).requires_grad_()
    if v_init is not None:
        v_init = v_init.to(dev).requires_grad_()
    spikes, v_final = multistep_lif(
        x, v_init, **case.op_kwargs(), backend=backend, return_state=True
    )
    gen = torch.Generator().manual_seed(1)
    grad_s = torch.randn(spikes.shape, generator=gen).to(dev, spikes.dtype)
    grad_v = torch.randn(v_final.shape, generator=gen).to(dev)
    torch.autograd.backward([spikes, v_final], [grad_s, grad_v])
    out = {"spikes": spikes.detach(), "v_final": v_final.detach(), "grad_x": x.grad}
    if v_init is not None:
        out["grad_v_init"] = v_init.grad
    return out


@pytest.mark.parametrize(
    "case,pair",
    [
        pytest.param(case, pair, id=f"{case.name}-{pair[0]}-vs-{pair[1]}")
        for case in CASES
        for pair in backend_pairs(case)
    ],
)
def test_backends_agree(case, pair):
    a, b = (run_case(case, backend) for backend in pair)
    assert_identical("spikes", a["spikes"], b["spikes"])
    assert_identical("v_final", a["v_final"], b["v_final"])
    for name in ("grad_x", "grad_v_init"):
        if name not in a:
            continue
        if case.surrogate in GRAD_ATOL_PER_STEP:
            atol = GRAD_ATOL_PER_STEP[case.surrogate] * case.steps
            assert_close(name, a[name], b[name], atol)
        else:
            assert_identical(name, a[name], b[name])


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_spec_definition(case):
    """The torch backend is the spec: spikes are exactly ``h >= v_th`` of its own membrane."""
    out = run_case(case, "torch")
    assert set(out["spikes"].unique().tolist()) <= {0.0, 1.0}
    assert out["spikes"].dtype == case.dtype
    assert out["v_final"].dtype == torch.float32
    if case.inputs == "threshold":
        # Step 0 starts from rest, so h = x: on v_th fires, one ulp below does not, one above does.
        assert out["spikes"][0, :3].tolist() == [1.0, 0.0, 1.0]
    if case.inputs == "nonfinite":
        spikes_1 = out["spikes"][1, :3].tolist()
        assert spikes_1 == [0.0, 1.0, 0.0]  # NaN never fires, +Inf fires, -Inf does not
        assert math.isnan(out["v_final"][0].item())  # NaN stays in the membrane


GOLDEN = [
    # (kwargs, x, spikes, v_final): exact binary fractions, worked out by hand.
    (dict(beta=0.5), [0.75] * 4, [0, 1, 0, 1], 0.15625),
    (dict(beta=0.5, reset="zero", v_reset=-0.5), [0.75] * 4, [0, 1, 0, 1], -0.5),
    (dict(beta=1.0), [0.5] * 4, [0, 1, 0, 1], 0.0),
    (dict(beta=0.5, reset="none"), [0.75] * 3, [0, 1, 1], 0.75 / 4 + 0.75 / 2 + 0.75),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs,x,spikes,v_final", GOLDEN)
def test_golden_trajectories(backend, kwargs, x, spikes, v_final):
    xt = torch.tensor(x, device=device_for(backend)).view(-1, 1)
    s, v = multistep_lif(xt, **kwargs, backend=backend, return_state=True)
    assert s.view(-1).tolist() == spikes
    assert v.item() == v_final


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_gradient(backend):
    # beta 0.5, rectangle alpha 1 (g = 1 for |h - v_th| < 0.5), detached soft reset (dv/dh = 1):
    # h = [0.75, 1.125]; grad_h1 = 1; grad_h0 = 1 + 0.5 * 1 = 1.5; grad_v_init = 0.5 * 1.5.
    dev = device_for(backend)
    x = torch.tensor([[0.75], [0.75]], device=dev, requires_grad=True)
    v0 = torch.zeros(1, device=dev, requires_grad=True)
    s = multistep_lif(x, v0, beta=0.5, surrogate="rectangle", alpha=1.0, detach_reset=True,
                      backend=backend)
    s.sum().backward()
    assert x.grad.view(-1).tolist() == [1.5, 1.0]
    assert v0.grad.tolist() == [0.75]


@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "triangle", "rectangle"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_gradcheck_float64(surrogate, reset):
    """The hand-written BPTT step is the true derivative once H is replaced by the smooth step
    whose derivative is the surrogate (``smooth=True``), so gradcheck can hold it to account.
    (A detached reset changes the gradient on purpose, so no forward has it as its derivative:
    those are checked by hand in test_golden_gradient and across backends.)"""
    p = lif_params(0.8, 1.0, reset, -0.2, surrogate, 2.0, False)
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(5, 6, generator=gen, dtype=torch.float64) * 1.4).requires_grad_()
    v0 = torch.rand(6, generator=gen, dtype=torch.float64).requires_grad_()

    def run(x, v0):
        spikes, v = multistep_lif_torch(x, v0, p, smooth=True)
        return spikes, v

    assert torch.autograd.gradcheck(run, (x, v0), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_carries_across_chunks(backend):
    x = torch.rand(7, 3, 40, device=device_for(backend)) * 1.5
    kw = dict(beta=0.75, backend=backend, return_state=True)
    whole, v_whole = multistep_lif(x, **kw)
    first, v_mid = multistep_lif(x[:3], **kw)
    second, v_end = multistep_lif(x[3:], v_mid, **kw)
    assert_identical("spikes", whole, torch.cat([first, second]))
    assert_identical("v_final", v_whole, v_end)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_input(backend):
    base = torch.rand(6, 40, 5, device=device_for(backend)) * 1.5
    x = base.transpose(1, 2)[:, :, ::2]  # [6, 5, 20], strided
    assert not x.is_contiguous()
    assert_identical(
        "spikes",
        multistep_lif(x, beta=0.5, backend=backend),
        multistep_lif(x.contiguous(), beta=0.5, backend=backend),
    )


@pytest.mark.parametrize("backend", ["numba", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_saves_only_the_inputs(backend, dtype):
    """Backward keeps references to x and v_init (recomputing h from them): no new memory."""
    dev = device_for(backend)
    x = (torch.rand(4, 100, device=dev) * 1.5).to(dtype).requires_grad_()
    v_init = torch.rand(100, device=dev, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        multistep_lif(x, v_init, beta=0.5, backend=backend)
    assert [t.data_ptr() for t in saved] == [x.data_ptr(), v_init.data_ptr()]


@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_inference_saves_nothing(backend):
    x = torch.rand(4, 100, device=device_for(backend))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        multistep_lif(x, beta=0.5, backend=backend)
    assert saved == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_order_gradients_under_create_graph_and_a_clear_second_order_error(backend):
    """create_graph=True (gradient penalties) gives the usual first-order gradients on every
    backend; differentiating them again is an error on every backend, not a wrong or silently
    missing second derivative (the kernels' backward has no backward of its own)."""
    dev = device_for(backend)
    x = torch.randn(4, 3, device=dev, requires_grad=True)
    v_init = torch.rand(3, device=dev, requires_grad=True)
    spikes = multistep_lif(x, v_init, beta=0.5, backend=backend)
    expected = torch.autograd.grad((spikes * spikes).sum(), (x, v_init), retain_graph=True)
    grads = torch.autograd.grad((spikes * spikes).sum(), (x, v_init), create_graph=True)
    for got, want in zip(grads, expected, strict=True):
        assert_identical("create_graph gradient", got, want)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grads[0].sum().backward()


def test_if_alias_is_beta_one():
    x = torch.rand(5, 20) * 1.2
    assert_identical("spikes", multistep_if(x, backend="numba"), multistep_lif(x, beta=1.0))


def test_auto_backend_picks_numba_on_cpu():
    assert resolve_backend("auto", torch.rand(2, 3)) == "numba"
    assert resolve_backend("auto", torch.rand(2, 3, dtype=torch.float64)) == "torch"


@settings(max_examples=60, deadline=None)
@given(
    steps=st.integers(1, 12),
    n=st.integers(1, 300),
    beta=st.floats(0.0, 1.0),
    v_th=st.floats(0.05, 4.0),
    reset=st.sampled_from(["subtract", "zero", "none"]),
    surrogate=st.sampled_from(["atan", "triangle", "rectangle"]),
    detach_reset=st.booleans(),
    with_v_init=st.booleans(),
    scale=st.floats(0.1, 10.0),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_numba_triton_torch(steps, n, beta, v_th, reset, surrogate, detach_reset,
                                 with_v_init, scale, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(steps, n, generator=gen) * scale).to(dtype)
    v_init = torch.randn(n, generator=gen) if with_v_init else None
    grad_s = torch.randn(steps, n, generator=gen).to(dtype)
    results = []
    for backend in BACKENDS:
        dev = device_for(backend)
        # copy=True: a leaf of its own per backend, or the CPU ones would share (and sum) x.grad
        xb = x.to(dev, copy=True).requires_grad_()
        vb = None if v_init is None else v_init.to(dev, copy=True).requires_grad_()
        s, v = multistep_lif(xb, vb, beta=beta, v_th=v_th, reset=reset, v_reset=-v_th / 3,
                             surrogate=surrogate, detach_reset=detach_reset, backend=backend,
                             return_state=True)
        (s * grad_s.to(dev)).sum().backward()
        results.append((s, v, xb.grad, None if vb is None else vb.grad))
    for other in results[1:]:
        names = ("spikes", "v_final", "grad_x", "grad_v_init")
        for name, a, b in zip(names, results[0], other, strict=True):
            if a is not None:
                assert_identical(name, a.detach(), b.detach())
