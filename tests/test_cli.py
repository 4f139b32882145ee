"""The neuro-emu console script: exit codes, messages, output files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neuro_emu.benchmarks import SUITES
from neuro_emu.cli import main


def test_conform_passes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "conform.json"
    status = main(["conform", "--steps", "3", "--size", "31", "-q", "--json", str(out)])
    text = capsys.readouterr().out
    assert status == 0, text
    assert "0 deviations beyond the contract, 0 failing cases" in text
    rows = json.loads(out.read_text())
    assert rows and all(r["ok"] for r in rows)
    assert {r["quantity"] for r in rows} == {"spikes", "v_final", "grad_x", "grad_v_init"}


def test_conform_exits_one_on_deviation(monkeypatch, capsys):
    from neuro_emu import conformance

    real = conformance.multistep_lif

    def broken(x, v, *, backend, **kw):
        out = real(x, v, backend=backend, **kw)
        return (out[0] * 0, out[1]) if backend == "numba" else out

    monkeypatch.setattr(conformance, "multistep_lif", broken)
    status = main(["conform", "--steps", "2", "--size", "50", "-q", "--backends", "torch,numba"])
    text = capsys.readouterr().out
    assert status == 1
    assert "DEVIATES" in text and "FAIL" in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["conform", "--backends", "torch"], "at least two"),
        (["conform", "--backends", "torch,cupy"], "at least two of"),
        (["conform", "--steps", "0"], "--steps must be >= 1"),
        (["bench", "--suite", "nope"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_two(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        status = main(argv)
        raise SystemExit(status)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


TRAIN = ["train", "--model", "ann-vgg", "--width", "0.125", "--epochs", "1", "--max-steps", "1",
         "--batch-size", "16", "--data", "subset"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--width", "inf"], "width must be a finite number > 0"),
        (["--lr", "nan"], "lr must be a finite number > 0"),
        (["--label-smoothing", "2"], "label_smoothing must be a finite number in [0, 1.0]"),
        (["--max-steps", "0"], "--max-steps must be >= 1"),
        (["--device", "foo"], "device 'foo'"),
        (["--batch-size", "5000"], "more than the 3000 training images"),
        (["--data", "{tmp}/empty"], "not found in"),
        (["--out", "{tmp}/a-file"], "is not a folder"),
        (["--out", "{tmp}/a-file/run"], "is not a folder"),
        (["--resume", "--out", "{tmp}/cut"], "not a readable checkpoint"),
    ],
)
def test_train_user_errors_are_one_line_and_exit_two(extra, message, tmp_path, capsys):
    """Caught before any training where they can be (a bad --out too), each is one line on
    stderr, no traceback."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "last.pt").write_bytes(b"PK\x03\x04 half a checkpoint")
    argv = [*TRAIN, "--out", str(tmp_path / "run"), *[a.format(tmp=tmp_path) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_a_gpu_says_so(tmp_path, capsys):
    assert main([*TRAIN, "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "neuro_emu.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "conform" in result.stdout and "bench" in result.stdout


@pytest.mark.parametrize("suite", SUITES)
def test_bench_quick_writes_its_report(suite):
    """The benchmark suites run end to end on small shapes (their timings are not checked)."""
    from neuro_emu.benchmarks import bench_device, device_label

    result = subprocess.run(
        [sys.executable, "-m", "neuro_emu.cli", "bench", "--suite", suite, "--quick"],
        capture_output=True, text=True, cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    name = f"{suite}-{device_label(bench_device())}-quick.json"
    report = Path(__file__).parents[1] / "bench" / "results" / name
    rows = json.loads(report.read_text())["rows"]
    assert rows and all(row["median_s"] > 0 for row in rows)


def test_setup_lists_every_package():
    """A package missing from setup.py's list is silently left out of a (non-editable) install."""
    import ast

    root = Path(__file__).resolve().parents[1]
    call = next(node for node in ast.walk(ast.parse((root / "setup.py").read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    listed = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "packages"))
    inits = root.glob("neuro_emu/**/__init__.py")
    found = {".".join(p.parent.relative_to(root).parts) for p in inits}
    assert found <= set(listed), sorted(found - set(listed))


def test_lava_timing_of_this_cpu_first_else_another_cpus(tmp_path, monkeypatch):
    """The Loihi suite compares with Lava timed on this CPU when there is such a file, else with
    another CPU's (its report then names that CPU); the CPU label carries the vector extension."""
    import torch

    from neuro_emu.benchmarks import device_label
    from neuro_emu.benchmarks.loihi import LAVA_TIMING_ENV, lava_timing_path

    monkeypatch.delenv(LAVA_TIMING_ENV, raising=False)
    own = tmp_path / f"lava-timing-{device_label(torch.device('cpu'))}.json"
    assert lava_timing_path(tmp_path) == own  # nothing there: this CPU's name, absent
    other = tmp_path / "lava-timing-cpu-other-8cores.json"
    other.write_text("{}")
    assert lava_timing_path(tmp_path) == other
    own.write_text("{}")
    assert lava_timing_path(tmp_path) == own
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and " avx2" in cpuinfo.read_text():
        assert "-avx2-" in own.name or "-avx512-" in own.name
