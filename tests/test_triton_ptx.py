"""The Triton kernels as an H100 would run them: compiled to PTX here, no GPU needed.

The interpreter that runs the Triton kernels on CPU checks their arithmetic, not their code
generation. This test compiles every kernel variant for sm_90 and reads the PTX for the numerics
contract: float32 multiplies and adds rounded one by one (no fused multiply-add), and divisions
that round correctly (``div.rn``, not the approximate ``div.full``/``div.approx``); and the
spike-sparse kernels accumulate with atomic adds of their mode's type. Compiling
needs the kernels defined without the interpreter, hence a subprocess without TRITON_INTERPRET.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

DTYPES = {"float32": "*fp32", "bfloat16": "*bf16", "float16": "*fp16"}
FORWARD_VARIANTS = list(itertools.product([0, 1, 2], DTYPES))  # (reset, dtype)
BACKWARD_VARIANTS = [  # (reset, surrogate, detach_reset, dtype)
    (reset, surrogate, detach, "float32")
    for reset, surrogate, detach in itertools.product([0, 1, 2], range(4), [False, True])
    if not (reset == 2 and detach)  # nothing to detach without a reset
] + [(0, 0, False, "bfloat16"), (1, 0, False, "float16")]
PREFETCH = [False, True]  # every variant with and without the next row's loads hoisted
SPARSE_VARIANTS = [("float32", "*fp32", "*fp32"), ("int8", "*i8", "*i32")]  # (mode, weight, out)


def _ptx_ops_of_every_variant() -> dict[str, list[str]]:
    """Runs in the subprocess: {variant id: float32 PTX instructions (neuron kernels) or atomic
    instructions (spike-sparse kernels) used}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from neuro_emu.kernels import multistep_lif as kernels

    float_ops = re.compile(r"\b(fma|mad|mul|add|sub|div)\.([a-z0-9.]+)\.f32\b")

    def ops(kernel, signature, constexprs):
        source = ASTSource(kernel, signature | dict.fromkeys(constexprs, "constexpr"), constexprs)
        options = {"num_warps": kernels.NUM_WARPS, "enable_fp_fusion": False}
        ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
        return sorted({f"{op}.{mode}" for op, mode in float_ops.findall(ptx)})

    found = {}
    for (reset, dtype), prefetch in itertools.product(FORWARD_VARIANTS, PREFETCH):
        signature = {
            "x_ptr": DTYPES[dtype], "v_init_ptr": "*fp32", "s_ptr": DTYPES[dtype],
            "v_out_ptr": "*fp32", "T": "i32", "N": "i32", "beta": "fp32", "v_th": "fp32",
            "v_reset": "fp32",
        }
        constexprs = {"RESET": reset, "HAS_V_INIT": True, "BLOCK": kernels.BLOCK,
                      "PREFETCH": prefetch}
        found[f"fwd-{reset}-{dtype}-{prefetch}"] = ops(kernels._multistep_lif_fwd_kernel,
                                                       signature, constexprs)
    for (reset, surrogate, detach, dtype), prefetch in itertools.product(BACKWARD_VARIANTS,
                                                                         PREFETCH):
        ptr = DTYPES[dtype]
        signature = {
            "x_ptr": ptr, "v_init_ptr": "*fp32", "grad_s_ptr": ptr, "grad_v_ptr": "*fp32",
            "h_ptr": "*fp32", "grad_x_ptr": ptr, "grad_v_init_ptr": "*fp32", "T": "i32",
            "N": "i32", "beta": "fp32", "v_th": "fp32", "v_reset": "fp32", "sg_a": "fp32",
            "sg_b": "fp32",
        }
        constexprs = {
            "RESET": reset, "SURROGATE": surrogate, "DETACH_RESET": detach, "HAS_V_INIT": False,
            "HAS_GRAD_V": True, "BLOCK": kernels.BLOCK, "PREFETCH": prefetch,
        }
        found[f"bwd-{reset}-{surrogate}-{detach}-{dtype}-{prefetch}"] = ops(
            kernels._multistep_lif_bwd_kernel, signature, constexprs
        )
    from neuro_emu.kernels import spike_conv

    atomics = re.compile(r"\b(red|atom)\.[a-z0-9.]*\.(f32|s32|u32)\b")
    for mode, weight, out in SPARSE_VARIANTS:
        conv = {"events_ptr": "*i64", "w_ptr": weight, "out_ptr": out} | dict.fromkeys(
            ["E", "C", "H", "W", "OH", "OW", "C_PER_G", "OG", "CO", "KH", "KW", "SH", "SW", "PH",
             "PW", "DH", "DW"], "i32")
        linear = {"events_ptr": "*i64", "w_ptr": weight, "out_ptr": out, "E": "i32", "F": "i32",
                  "CO": "i32"}
        for name, kernel, signature in [("conv2d", spike_conv._spike_conv2d_kernel, conv),
                                        ("linear", spike_conv._spike_linear_kernel, linear)]:
            constexprs = {"BLOCK_E": 8, "BLOCK_O": spike_conv.MAX_BLOCK_O}
            source = ASTSource(kernel, signature | dict.fromkeys(constexprs, "constexpr"),
                               constexprs)
            options = {"num_warps": spike_conv.NUM_WARPS, "enable_fp_fusion": False}
            ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                 options=options).asm["ptx"]
            found[f"sparse-{name}-{mode}"] = sorted({m.group(0) for m in atomics.finditer(ptx)})
    return found


@pytest.fixture(scope="module")
def ptx_ops() -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import json, tests.test_triton_ptx as m; "
        "print(json.dumps(m._ptx_ops_of_every_variant()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[1], env=env,
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_contract(ops: list[str]) -> None:
    fused = [op for op in ops if op.startswith(("fma", "mad"))]
    assert not fused, f"fused multiply-adds in the PTX: {fused}"
    inexact = [op for op in ops if not op.endswith(".rn")]
    assert not inexact, f"float ops that do not round to nearest one by one: {inexact}"


@pytest.mark.parametrize("prefetch", PREFETCH)
@pytest.mark.parametrize("reset,dtype", FORWARD_VARIANTS)
def test_forward_ptx(ptx_ops, reset, dtype, prefetch):
    ops = ptx_ops[f"fwd-{reset}-{dtype}-{prefetch}"]
    assert_contract(ops)
    assert {"mul.rn", "add.rn"} <= set(ops)  # h = v * beta + x, unfused


@pytest.mark.parametrize("prefetch", PREFETCH)
@pytest.mark.parametrize("reset,surrogate,detach,dtype", BACKWARD_VARIANTS)
def test_backward_ptx(ptx_ops, reset, surrogate, detach, dtype, prefetch):
    ops = ptx_ops[f"bwd-{reset}-{surrogate}-{detach}-{dtype}-{prefetch}"]
    assert_contract(ops)
    if surrogate in (0, 1):  # atan and sigmoid divide
        assert "div.rn" in ops


@pytest.mark.parametrize("kernel", ["conv2d", "linear"])
@pytest.mark.parametrize("mode", [m for m, _, _ in SPARSE_VARIANTS])
def test_sparse_kernels_compile_to_atomic_adds(ptx_ops, kernel, mode):
    """The spike-sparse kernels compile for sm_90, adding with atomics of the mode's type."""
    ops = ptx_ops[f"sparse-{kernel}-{mode}"]
    expected = "f32" if mode == "float32" else "32"
    assert ops and all(op.endswith(expected) and ".add." in op for op in ops), ops

