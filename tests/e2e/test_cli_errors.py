"""Bad inputs, weights and resources through the CLI: the exact message, exit code 2, and no
traceback. In-process (`archc.cli.main`) for speed; two subprocess runs prove the real entry
point behaves the same."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from archc.cli import main

MODEL = """\
model m(ids: int[B, T], x: float[B, T, 4]) {
    e = Embedding(ids, 10, 4)
    return e + x
}
"""
DECL_X = ("    model m(ids: int[B, T], x: float[B, T, 4]) {\n"
          "                            ^^^^^^^^^^^^^^^^^\n")
DECL_IDS = ("    model m(ids: int[B, T], x: float[B, T, 4]) {\n"
            "            ^^^^^^^^^^^^^^\n")


class Boom:
    """Unpickling this would create the file named in PWNED."""

    def __reduce__(self):
        return (open, (os.environ["ARCHC_TEST_PWNED"], "w"))


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A directory with the model and a set of good and bad files; messages use short names."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(MODEL)
    np.save("ids.npy", np.array([[1, 2, 3]]))
    np.save("x.npy", np.zeros((1, 3, 4), np.float32))
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err
    return code, out, err


def run_m(capsys, *extra):
    return run(capsys, "run", "m.arch", "--input", "ids=ids.npy", *extra)


# ---- inputs -----------------------------------------------------------------------------

def test_missing_input_file(work, capsys):
    assert run_m(capsys, "--input", "x=nope.npy")[::2] == (
        2, "error: input `x` file not found: nope.npy\n")


def test_input_that_is_not_npy(work, capsys):
    (work / "x.txt").write_text("1 2 3")
    assert run_m(capsys, "--input", "x=x.txt")[::2] == (
        2, "error: input `x` x.txt is not a .npy file (it does not start with the NumPy magic "
           "bytes)\nhint: save arrays with numpy.save(path, array)\n")


def test_pickled_npy_is_refused_and_never_unpickled(work, capsys, monkeypatch):
    pwned = work / "PWNED"
    monkeypatch.setenv("ARCHC_TEST_PWNED", str(pwned))
    np.save("evil.npy", np.array([Boom()], dtype=object), allow_pickle=True)
    # the file really is a working exploit: loading it with pickle allowed has the effect
    np.load("evil.npy", allow_pickle=True)
    assert pwned.exists()
    pwned.unlink()
    assert run_m(capsys, "--input", "x=evil.npy")[::2] == (
        2, "error: input `x` evil.npy holds pickled Python objects; archc never unpickles "
           "files\nhint: save a plain numeric array (not dtype=object)\n")
    assert not pwned.exists()


def test_truncated_npy(work, capsys):
    data = (work / "x.npy").read_bytes()
    (work / "t.npy").write_bytes(data[:-10])
    assert run_m(capsys, "--input", "x=t.npy")[::2] == (
        2, "error: input `x` t.npy is truncated or corrupt: its header says shape [1, 3, 4] "
           "(48 bytes) but the file holds 38\n")


def test_npy_header_claiming_a_huge_shape_is_refused_before_allocating(work, capsys):
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 200000000000, 4), }"
    hdr = hdr.ljust(118) + "\n"
    (work / "liar.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little")
                                    + hdr.encode() + bytes(48))
    assert run_m(capsys, "--input", "x=liar.npy")[::2] == (
        2, "error: input `x` liar.npy is truncated or corrupt: its header says shape "
           "[1, 200000000000, 4] (3,200,000,000,000 bytes) but the file holds 48\n")


def test_npy_with_a_mangled_header(work, capsys):
    data = bytearray((work / "x.npy").read_bytes())
    i = data.index(b"}")
    data[i:i + 1] = b"("          # found by tests/fuzz/fuzz_arch.py: tokenize.TokenError
    (work / "h.npy").write_bytes(bytes(data))
    assert run_m(capsys, "--input", "x=h.npy")[::2] == (
        2, "error: input `x` h.npy has a corrupt .npy header: ('EOF in multi-line statement', "
           "(2, 0))\n")


def test_pickled_member_of_npz_is_refused(work, capsys):
    np.savez("evil.npz", ids=np.array([[1, 2, 3]]), x=np.array([1, None], dtype=object))
    assert run(capsys, "run", "m.arch", "--input", "evil.npz")[::2] == (
        2, "error: input evil.npz[x.npy] holds pickled Python objects; archc never unpickles "
           "files\nhint: save a plain numeric array (not dtype=object)\n")


def test_wrong_dtype(work, capsys):
    np.save("fids.npy", np.array([[1.0, 2.0, 3.0]]))
    assert run(capsys, "run", "m.arch", "--input", "ids=fids.npy", "--input", "x=x.npy")[::2] == (
        2, "m.arch:1:9: error: input `ids` has dtype float64; expected int[B, T] (integer token "
           "ids)\n" + DECL_IDS + "hint: save ids with an integer dtype, e.g. np.int64\n")


def test_non_numeric_dtype(work, capsys):
    np.save("s.npy", np.array([["a"]]))
    assert run_m(capsys, "--input", "x=s.npy")[::2] == (
        2, "error: input `x` s.npy has dtype <U1; expected numbers (float or int)\n")


def test_wrong_rank(work, capsys):
    np.save("x2.npy", np.zeros((3, 4), np.float32))
    assert run_m(capsys, "--input", "x=x2.npy")[::2] == (
        2, "m.arch:1:25: error: input `x` has shape [3, 4] (2-D) but the model declares "
           "float[B, T, 4]\n" + DECL_X)


def test_wrong_size(work, capsys):
    np.save("x5.npy", np.zeros((1, 3, 5), np.float32))
    assert run_m(capsys, "--input", "x=x5.npy")[::2] == (
        2, "m.arch:1:25: error: input `x` has shape [1, 3, 5] but the model declares "
           "float[B, T, 4]: axis 2 should be 4 = 4\n" + DECL_X)


def test_empty_input(work, capsys):
    np.save("x0.npy", np.zeros((1, 0, 4), np.float32))
    np.save("ids0.npy", np.zeros((1, 0), np.int64))
    assert run(capsys, "run", "m.arch", "--input", "ids=ids0.npy", "--input", "x=x0.npy")[::2] == (
        2, "m.arch:1:9: error: input `ids` is empty: shape [1, 0]\n" + DECL_IDS +
           "hint: every axis needs at least one element\n")


def test_inconsistent_symbolic_dims_across_inputs(work, capsys):
    np.save("x7.npy", np.zeros((1, 7, 4), np.float32))
    assert run_m(capsys, "--input", "x=x7.npy")[::2] == (
        2, "m.arch:1:25: error: input `x` has T = 7 (axis 1) but `ids` has T = 3\n" + DECL_X +
           "hint: every input must agree on T\n")


def test_token_ids_outside_the_vocabulary(work, capsys):
    np.save("big.npy", np.array([[1, 12, -1]]))
    assert run(capsys, "run", "m.arch", "--input", "ids=big.npy", "--input", "x=x.npy")[::2] == (
        2, "m.arch:2:9: error: token id 12 is outside the vocabulary (0..9); 2 ids out of range\n"
           "        e = Embedding(ids, 10, 4)\n"
           "            ^^^^^^^^^^^^^^^^^^^^^\n")


def test_nan_and_inf_inputs_are_warned_by_name(work, capsys):
    x = np.zeros((1, 3, 4), np.float32)
    x[0, 0, 0], x[0, 1, 1] = np.nan, np.inf
    np.save("nan.npy", x)
    code, out, err = run_m(capsys, "--input", "x=nan.npy")
    assert code == 0
    assert err == "warning: input `x` contains 2 NaN/Inf values\n"


def test_unknown_and_missing_input_names(work, capsys):
    assert run(capsys, "run", "m.arch", "--input", "ids=ids.npy", "--input", "y=x.npy")[::2] == (
        2, "error: the model has no input named `y`\n"
           "hint: inputs: ids: int[B, T], x: float[B, T, 4]\n")
    assert run_m(capsys)[::2] == (
        2, "error: missing input: `x` (float[B, T, 4])\nhint: pass each as --input NAME=file.npy\n")


# ---- weights ----------------------------------------------------------------------------

def test_weights_not_safetensors(work, capsys):
    (work / "w.safetensors").write_text("hello world, not a checkpoint")
    code, _, err = run_m(capsys, "--input", "x=x.npy", "-w", "w.safetensors")
    assert code == 2
    assert err == ("error: weights w.safetensors is not a safetensors file, or it is truncated "
                   f"(its header claims {int.from_bytes(b'hello wo', 'little')} bytes)\n"
                   "hint: save weights with safetensors.numpy.save_file or "
                   "save_pretrained(safe_serialization=True)\n")


def test_weights_truncated(work, capsys):
    save_file({"embedding.weight": np.zeros((10, 4), np.float32)}, "ok.safetensors")
    data = (work / "ok.safetensors").read_bytes()
    (work / "w.safetensors").write_bytes(data[:-20])
    assert run_m(capsys, "--input", "x=x.npy", "-w", "w.safetensors")[::2] == (
        2, "error: weights w.safetensors is corrupted or truncated: tensor embedding.weight's "
           "bytes 0..160 are outside the 140 bytes of data\n")


def test_weights_header_lies_about_shape(work, capsys):
    hdr = b'{"a":{"dtype":"F32","shape":[100000000000],"data_offsets":[0,4]}}'
    (work / "w.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 4)
    assert run_m(capsys, "--input", "x=x.npy", "-w", "w.safetensors")[::2] == (
        2, "error: weights w.safetensors: tensor a: shape [100000000000] of F32 needs "
           "400,000,000,000 bytes, the header gives it 4\n")


def test_weights_problems_are_all_listed_at_once(work, capsys):
    save_file({"embedding.weight": np.zeros((10, 5), np.float32),
               "extra": np.zeros(3, np.float32)}, "w.safetensors")
    assert run_m(capsys, "--input", "x=x.npy", "-w", "w.safetensors")[::2] == (
        2, "error: weights w.safetensors do not match the model (2 problems):\n"
           "  mis-shaped: embedding.weight is [10, 5] in the file, the model expects [10, 4]\n"
           "  unexpected: extra [3]\n")
    save_file({"other": np.zeros(3, np.float32)}, "w2.safetensors")
    assert run_m(capsys, "--input", "x=x.npy", "-w", "w2.safetensors")[::2] == (
        2, "error: weights w2.safetensors do not match the model (2 problems):\n"
           "  missing: embedding.weight float[10, 4]\n"
           "  unexpected: other [3]\n"
           "hint: no parameter was found in it: is it this model's checkpoint?\n")


def test_lossy_weight_conversion_is_warned(work, capsys):
    w = np.full((10, 4), 1 / 3, np.float64)
    save_file({"embedding.weight": w}, "w.safetensors")
    code, _, err = run_m(capsys, "--input", "x=x.npy", "-w", "w.safetensors")
    assert code == 0
    assert err == ("warning: weight embedding.weight: float64 -> float32 loses precision "
                   "(max change 9.93e-09)\n")


# ---- resources --------------------------------------------------------------------------

def test_huge_model_is_refused_before_allocating(work, capsys, monkeypatch):
    (work / "big.arch").write_text("config { d = 100000 }\nmodel m(x: float[T, 4]) {\n"
                                   "    param W: float[d, d]\n    return x\n}\n")
    import archc.runtime.weights as weights

    def no_init(*a, **k):
        raise AssertionError("random init started")
    monkeypatch.setattr(weights, "init_params", no_init)
    np.save("x2.npy", np.zeros((3, 4), np.float32))
    assert run(capsys, "run", "big.arch", "--input", "x2.npy", "--max-memory", "4G")[::2] == (
        2, "error: model `m` needs parameters 37.3 GiB, more than --max-memory 4.0 GiB\n"
           "hint: make the model smaller (fewer layers, smaller widths) or raise --max-memory "
           "if the machine really has the memory\n")


def test_huge_activations_are_refused_before_running(work, capsys):
    np.save("long.npy", np.zeros((1, 50_000, 4), np.float32))
    np.save("lids.npy", np.zeros((1, 50_000), np.int64))
    assert run(capsys, "run", "m.arch", "--input", "ids=lids.npy", "--input", "x=long.npy",
               "--max-memory", "1M")[::2] == (
        2, "error: running `m` with B=1, T=50000 needs parameters 160 B + activations 2.3 MiB, "
           "more than --max-memory 1.0 MiB\n"
           "hint: use shorter or fewer inputs (smaller batch or sequence) or raise --max-memory\n")


def test_bad_max_memory_value(work, capsys):
    assert run_m(capsys, "--input", "x=x.npy", "--max-memory", "lots")[::2] == (
        2, "error: --max-memory lots: expected a size such as 8G, 512M or 1.5GiB\n")
    # checked by argparse's `type=` in `dump`: must not escape as a traceback
    code, _, err = run(capsys, "dump", "m.arch", "--max-memory", "lots")
    assert code == 2 and err.startswith("error: --max-memory lots: expected a size")


# ---- outputs and the CLI itself ---------------------------------------------------------

def test_output_into_missing_directory(work, capsys):
    assert run_m(capsys, "--input", "x=x.npy", "-o", "no/such/out.npy")[::2] == (
        2, "error: cannot write no/such/out.npy: directory no/such does not exist\n")


def test_usage_errors_exit_2(capsys):
    for argv in (["run"], ["check", "a.arch", "--bogus"], ["dump", "a.arch", "-f", "xml"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert "usage: archc" in capsys.readouterr().err


def test_unexpected_exception_is_an_internal_error(work, capsys, monkeypatch):
    import archc.cli as cli

    def broken(args):
        raise RuntimeError("boom")
    monkeypatch.setitem(cli.COMMANDS, "check", broken)
    assert main(["check", "m.arch"]) == 3
    assert capsys.readouterr().err == ("internal error: RuntimeError: boom\n"
                                       "this is a bug in archc; rerun with --debug for the "
                                       "traceback\n")
    with pytest.raises(RuntimeError):
        main(["check", "m.arch", "--debug"])


def test_real_entry_point_syntax_errors(tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_text("model m(x: float[T, 4]) {\n    y = relu(x,, 2)\n    z = x +* 1\n"
                   "    return y\n}\n")
    r = subprocess.run([sys.executable, "-m", "archc", "check", str(bad)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == (f"{bad}:2:16: error: unexpected `,`\n"
                        "        y = relu(x,, 2)\n"
                        "                   ^\n"
                        f"{bad}:3:12: error: unexpected `*`\n"
                        "        z = x +* 1\n"
                        "               ^\n"
                        "2 errors\n")


def test_real_entry_point_pickled_input(work, monkeypatch):
    pwned = work / "PWNED"
    monkeypatch.setenv("ARCHC_TEST_PWNED", str(pwned))
    np.save("evil.npy", np.array([Boom()], dtype=object), allow_pickle=True)
    r = subprocess.run([sys.executable, "-m", "archc", "run", "m.arch", "--input", "ids=ids.npy",
                        "--input", "x=evil.npy"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "never unpickles" in r.stderr
    assert not pwned.exists()


def test_kv_cache_too_large_is_refused_before_generating(work, capsys):
    np.save("p.npy", np.array([1, 2, 3]))
    gpt2 = str(Path(__file__).resolve().parents[2] / "examples" / "gpt2.arch")
    code, _, err = run(capsys, "generate", gpt2, "--input", "p.npy", "--set", "n_layer=2",
                       "--set", "d_model=64", "--set", "n_head=2", "--set", "vocab=100",
                       "--max-seq", "1000000", "--max-memory", "100M", "-n", "2")
    assert (code, err) == (2, "error: generating with `gpt2` (batch 1, 1000000 positions) needs "
                              "parameters 672.0 KiB + KV cache 991.8 MiB, more than "
                              "--max-memory 100.0 MiB\n"
                              "hint: lower --max-seq or the batch, or raise --max-memory\n")
