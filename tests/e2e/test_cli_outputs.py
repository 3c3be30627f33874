"""Through the CLI: an output never lands on a file the run reads, special files are
written into, not replaced, and a FIFO given as an input is refused at once."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from safetensors.numpy import save_file

from archc.cli import main

MODEL = """\
include "lib.arch"
model m(x: float[T, 4]) {
    return Double(Linear(x, 4) as proj)
}
"""
LIB = "block Double(x) {\n    return x + x\n}\n"


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(MODEL)
    (tmp_path / "lib.arch").write_text(LIB)
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    save_file({"proj.weight": np.eye(4, dtype=np.float32),
               "proj.bias": np.zeros(4, np.float32)}, str(tmp_path / "w.safetensors"))
    return tmp_path


RUN = ["run", "m.arch", "-i", "x.npy", "-w", "w.safetensors", "--executor", "reference"]


@pytest.mark.parametrize("out, what", [("x.npy", "input"), ("m.arch", "model"),
                                       ("lib.arch", "include"), ("w.safetensors", "weights")])
def test_run_refuses_an_output_that_is_a_file_it_reads(work, capsys, out, what):
    before = (work / out).read_bytes()
    assert main(RUN + ["-o", out]) == 2
    assert f"output {out} is the {what} file" in capsys.readouterr().err
    assert (work / out).read_bytes() == before


def test_dump_and_generate_refuse_too(work, capsys):
    assert main(["dump", "m.arch", "-o", "lib.arch"]) == 2
    assert "is the include file" in capsys.readouterr().err
    os.symlink("x.npy", "alias.npy")
    assert main(["generate", "m.arch", "-i", "x.npy", "-o", "alias.npy"]) == 2
    assert "is the input file (x.npy)" in capsys.readouterr().err


def test_run_writes_into_a_fifo_input_is_refused(work, capsys):
    os.mkfifo("in.pipe")
    assert main(["run", "m.arch", "-i", "in.pipe", "-w", "w.safetensors"]) == 2
    assert "is a FIFO (named pipe), not a regular file" in capsys.readouterr().err


def test_run_writes_into_a_device(work, capsys):
    try:
        os.mknod("null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError:
        pytest.skip("cannot make a device node here (needs root)")
    assert main(RUN + ["-o", "null"]) == 0
    assert stat.S_ISCHR(os.stat("null").st_mode)


def test_an_output_must_be_npy_or_npz(work, capsys):
    assert main(RUN + ["-o", "out.txt"]) == 2
    assert "archc writes .npy (one array) or .npz" in capsys.readouterr().err
    assert not (work / "out.txt").exists()
