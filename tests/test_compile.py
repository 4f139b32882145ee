"""torch.library registration: opcheck, and torch.compile tracing around the custom ops (CPU)."""

from __future__ import annotations

import pytest
import torch

from neuro_emu.layers import LIF
from neuro_emu.ops import multistep_lif
from tests.cases import assert_identical, device_for


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "transposed"])
@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_opcheck(backend, contiguous):
    dev = device_for(backend)
    x = torch.rand(5, 2, 9, device=dev) * 1.5
    x = (x if contiguous else x.transpose(1, 2).contiguous().transpose(1, 2)).requires_grad_()
    v_init = torch.rand(2, 9, device=dev, requires_grad=True)
    args = (x, v_init, 0.5, 1.0, 0, 0.0, 0, 3.14159, 1.0, False, backend)
    torch.library.opcheck(torch.ops.neuro_emu.multistep_lif_fwd.default, args)


def test_torch_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    layer = LIF(tau=2.0, backend="numba")
    linear = torch.nn.Linear(16, 16)

    def step(x):
        return layer(linear(x)).sum(0)

    compiled = torch.compile(step, fullgraph=True)
    x = torch.rand(4, 3, 16, requires_grad=True)
    eager_out = step(x)
    (eager_grad,) = torch.autograd.grad(eager_out.sum(), x)
    compiled_out = compiled(x)
    (compiled_grad,) = torch.autograd.grad(compiled_out.sum(), x)
    assert_identical("spikes", eager_out, compiled_out)
    torch.testing.assert_close(compiled_grad, eager_grad)


def test_torch_compile_op_directly():
    torch._dynamo.reset()

    def f(x, v):
        return multistep_lif(x, v, beta=0.75, reset="zero", backend="numba", return_state=True)

    x, v = (torch.rand(6, 50, 3) * 1.5).transpose(1, 2), torch.rand(3, 50)  # strided x
    for eager, compiled in zip(f(x, v), torch.compile(f, fullgraph=True)(x, v), strict=True):
        assert_identical("output", eager, compiled)


@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_eager_path_equals_the_registered_op(backend):
    """Eager calls skip torch.library's dispatch; outputs and both gradients stay bit-identical to
    the registered op's (which torch.compile traces)."""
    dev = device_for(backend)
    gen = torch.Generator().manual_seed(3)
    x0, v0 = torch.rand(5, 2, 9, generator=gen) * 1.5, torch.rand(2, 9, generator=gen)
    params = (0.5, 1.0, 0, 0.0, 0, 3.14159, 1.0, False, backend)
    results = []
    for call in (lambda x, v: multistep_lif(x, v, beta=0.5, backend=backend, return_state=True),
                 lambda x, v: torch.ops.neuro_emu.multistep_lif_fwd(x, v, *params)):
        x, v = x0.to(dev).requires_grad_(), v0.to(dev).requires_grad_()
        spikes, v_final = call(x, v)
        (spikes.sum() * 0.5 + v_final.square().sum()).backward()
        results.append((spikes, v_final, x.grad, v.grad))
    for name, eager, op in zip(("spikes", "v_final", "grad_x", "grad_v_init"), *results,
                               strict=True):
        assert_identical(name, eager, op)
