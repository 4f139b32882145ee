"""Bad inputs fail at the boundary, with a message naming the argument, what was expected and
what was given."""

from __future__ import annotations

import importlib

import pytest
import torch

from neuro_emu.ops import backend_unavailable_reason, multistep_lif
from tests.cases import BACKENDS, device_for


@pytest.mark.parametrize(
    "x,v_init,kwargs,error,message",
    [
        pytest.param(torch.tensor(1.0), None, {}, ValueError, "0-dim", id="rank-0"),
        pytest.param(torch.rand(0, 4), None, {}, ValueError, "T = 0", id="T-zero"),
        pytest.param(torch.ones(3, 4, dtype=torch.int32), None, {}, TypeError, "int32", id="int"),
        pytest.param(torch.ones(3, 4, dtype=torch.bool), None, {}, TypeError, "bool", id="bool"),
        pytest.param(torch.rand(3, 4).to(torch.float8_e4m3fn), None, {}, TypeError, "float8",
                     id="float8"),
        pytest.param([[1.0]], None, {}, TypeError, "torch.Tensor", id="list"),
        pytest.param(torch.rand(3, 4), torch.rand(5), {}, ValueError, r"\(4,\), got \(5,\)",
                     id="v_init-shape"),
        pytest.param(torch.rand(3, 4), torch.ones(4, dtype=torch.int64), {}, TypeError,
                     "v_init must be a floating", id="v_init-dtype"),
        pytest.param(torch.rand(3, 4), None, dict(beta=-0.1), ValueError, "beta", id="beta"),
        pytest.param(torch.rand(3, 4), None, dict(v_th=float("nan")), ValueError, "v_th",
                     id="v_th-nan"),
        pytest.param(torch.rand(3, 4), None, dict(reset="soft-ish"), ValueError, "reset",
                     id="reset"),
        pytest.param(torch.rand(3, 4), None, dict(alpha=0), ValueError, "alpha", id="alpha"),
        pytest.param(torch.rand(3, 4), None, dict(alpha=1e39), ValueError, "overflows",
                     id="alpha-overflows-float32"),
        pytest.param(torch.rand(3, 4), None, dict(v_th=1e39), ValueError, "finite float32",
                     id="v_th-overflows-float32"),
        pytest.param(torch.rand(3, 4), None, dict(v_th=1e-46), ValueError, "v_th",
                     id="v_th-underflows-to-zero"),
        pytest.param(torch.rand(3, 4), None, dict(backend="cupy"), RuntimeError,
                     "unknown backend 'cupy'", id="backend-unknown"),
        pytest.param(torch.rand(3, 4, dtype=torch.float64), None, dict(backend="numba"),
                     TypeError, "float64", id="float64-kernel"),
    ],
)
def test_errors(x, v_init, kwargs, error, message):
    kwargs = {"beta": 0.5, **kwargs}
    with pytest.raises(error, match=message):
        multistep_lif(x, v_init, **kwargs)


def test_devices_must_match():
    v_init = torch.zeros(4, device="meta")
    with pytest.raises(ValueError, match="v_init is on meta"):
        multistep_lif(torch.rand(3, 4), v_init, beta=0.5)


def test_triton_without_gpu_or_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="needs a CUDA tensor.*TRITON_INTERPRET=1"):
        multistep_lif(torch.rand(3, 4), beta=0.5, backend="triton")


def test_custom_op_called_directly_checks_its_backend():
    with pytest.raises(ValueError, match="backend 'numba' or 'triton'"):
        torch.ops.neuro_emu.multistep_lif_fwd(
            torch.rand(2, 3, dtype=torch.float64), None, 0.5, 1.0, 0, 0.0, 0, 1.0, 1.0, False,
            "numba",
        )


def test_missing_package_is_named(monkeypatch):
    op = importlib.import_module("neuro_emu.ops.multistep_lif")  # the module, not the function
    monkeypatch.setitem(op._INSTALLED, "numba", False)  # as found at import without numba
    assert "'numba' package, which is not installed" in backend_unavailable_reason(
        "numba", torch.device("cpu")
    )


def test_numba_refuses_gpu_tensors():
    assert "runs on CPU tensors" in backend_unavailable_reason("numba", torch.device("cuda"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_neuron_shape_is_fine(backend):
    x = torch.rand(3, 0, device=device_for(backend))
    spikes, v = multistep_lif(x, beta=0.5, backend=backend, return_state=True)
    assert spikes.shape == (3, 0) and v.shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(backend, dtype):
    # 1 + 1/256 rounds back to 1 in bfloat16 (and 1.5 + 1/256 in float16): a 16-bit membrane
    # would stall. In float32 the 128th step reaches exactly 1.5 = v_th.
    x = torch.full((130, 1), 1 / 256, dtype=dtype, device=device_for(backend))
    v_init = torch.ones(1, device=device_for(backend))
    spikes, v = multistep_lif(x, v_init, beta=1.0, v_th=1.5, backend=backend, return_state=True)
    assert spikes.dtype == dtype and v.dtype == torch.float32
    assert spikes.view(-1).nonzero().view(-1).tolist() == [127]
    assert v.item() == 2 / 256
