"""CLI behaviour: commands, exit codes, output files, and what check/dump must not import."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
FFN = ROOT / "examples" / "ffn.arch"
X = ROOT / "examples" / "ffn_input.npy"


def test_check_prints_one_line_summary(capsys):
    assert main(["check", str(FFN)]) == 0
    out = capsys.readouterr().out
    assert out == (f"{FFN}: ok: model ffn(x: float64[T, 4]), 2 layers, 58 parameters, "
                   "10 nodes\n")


def test_user_errors_exit_2_without_traceback(arch_file, capsys):
    bad = arch_file("model m(x: float[T, 4]) {\n  y = rmsnrom(x)\n  return y\n}\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == (f"{bad}:2:7: error: unknown op or block `rmsnrom`\n"
                   "      y = rmsnrom(x)\n"
                   "          ^^^^^^^\n"
                   "hint: did you mean `rmsnorm`?\n")
    assert "Traceback" not in err


def test_missing_model_file(capsys):
    assert main(["dump", "nope.arch"]) == 2
    assert capsys.readouterr().err == "error: no such file: nope.arch\n"


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


def test_bad_input_shape_names_the_input(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((3, 5)))
    assert main(["run", str(FFN), "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{FFN}:7:11: error: input `x` has shape [3, 5] but the model "
                          "declares float64[T, 4]: axis 1 should be 4 = 4")


def test_output_npy_and_npz(tmp_path, capsys):
    assert main(["run", str(FFN), "-i", f"x={X}", "-o", str(tmp_path / "y.npy")]) == 0
    assert np.load(tmp_path / "y.npy").shape == (3, 4)
    assert main(["run", str(FFN), "-i", str(X), "-o", str(tmp_path / "all.npz")]) == 0
    with np.load(tmp_path / "all.npz") as z:
        assert z.files == ["y"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp left


def test_dump_formats(capsys, tmp_path):
    assert main(["dump", str(FFN), "--format", "json", "--dim", "T=3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"] == {"layers": 2, "params": 58, "flops": "112*T",
                             "bindings": {"T": 3}, "flops_value": 336}
    assert main(["dump", str(FFN), "-f", "dot", "-o", str(tmp_path / "g.dot")]) == 0
    assert (tmp_path / "g.dot").read_text().startswith('digraph "ffn"')
    assert main(["dump", str(FFN), "--input", str(X)]) == 0
    assert "FLOPs: 112*T = 336" in capsys.readouterr().out
    assert main(["dump", str(FFN), "--dim", "T=x"]) == 2


def test_dump_unknown_layer_hint(capsys):
    assert main(["dump", str(FFN), "--layer", "hiden"]) == 2
    assert capsys.readouterr().err == ("error: no layer named `hiden`\n"
                                       "hint: did you mean `hidden`?\n")


def test_the_command_skips_numbas_scipy_probe():
    # with SciPy installed, Numba's first kernel load would import scipy.linalg (0.1-0.25 s)
    # to check for a BLAS archc's kernels never call; the console entry blocks that import
    pytest.importorskip("scipy")
    code = ("import sys, atexit; from archc.cli import entry; "
            "atexit.register(lambda: print('LINALG' if 'scipy.linalg' in sys.modules else 'OK')); "
            f"sys.argv = ['archc', 'run', {str(FFN)!r}, '--input', {str(X)!r}]; entry()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("OK")


def test_check_and_dump_do_not_import_numba():
    # check --weights reads the checkpoint's config and headers, not its tensors
    gpt2, ckpt = ROOT / "examples" / "gpt2.arch", ROOT / "tests" / "fixtures" / "hf" / "gpt2"
    code = ("import sys; from archc.cli import main; "
            f"main(['check', {str(FFN)!r}]); main(['dump', {str(FFN)!r}]); "
            f"assert main(['check', {str(gpt2)!r}, '-w', {str(ckpt)!r}]) == 0; "
            "assert 'numba' not in sys.modules, 'numba imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
