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
