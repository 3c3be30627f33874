"""Numbers, memory, outputs and Ctrl-C at the command line: each bad value is a one-line exit
2 naming what to change, checked before the work it would spoil; never a traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from archc import cli
from archc.dsl.errors import ArchError
from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
GPT2 = ROOT / "examples" / "gpt2.arch"
LM = """\
config {
    vocab = 16
    d = 8
}
model lm(ids: int[B, T]) {
    param emb: float[vocab, d]
    return logits = embedding(ids, emb) @ transpose(emb)
}
"""
MODEL = "model m(x: float[T, 4]) {\n    return y = relu(x), z = x\n}\n"


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("lm.arch").write_text(LM)
    Path("m.arch").write_text(MODEL)
    np.save("p.npy", np.array([1, 2, 3]))
    np.save("x.npy", np.ones((2, 4), np.float32))
    return tmp_path


def usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "argument --seed: expected a whole number from 0 to 2**63-1, got -1"),
    (["--temperature", "nan"], "argument --temperature: expected a finite number >= 0, got nan"),
    (["--temperature", "-1"], "argument --temperature: expected a finite number >= 0, got -1"),
    (["--top-p", "1.5"], "argument --top-p: expected a finite number > 0 and <= 1, got 1.5"),
    (["--top-k", "-2"], "argument --top-k: expected a whole number from 0 to 2**63-1, got -2"),
    (["--eos", str(10 ** 30)], "argument --eos: expected a whole number from 0 to 2**63-1, "
                               f"got {10 ** 30}"),
    (["--max-new-tokens", "x"], "argument --max-new-tokens/-n: expected a whole number from "
                                "0 to 2**63-1, got x"),
    (["--max-seq", "0"], "argument --max-seq: expected a whole number from 1 to 2**63-1, got 0"),
    (["--threads", "0"], "argument --threads: expected a whole number from 1 to 4,096, got 0"),
    (["--decoder-start", "-4"], "argument --decoder-start: expected a whole number from 0 to "
                                "2**63-1, got -4"),
])
def test_generate_numbers_are_checked_by_their_argument_type(work, capsys, args, message):
    assert usage_error(capsys, "generate", "lm.arch", "-i", "p.npy", *args) == \
        f"archc generate: error: {message}"


@pytest.mark.parametrize("argv, message", [
    (["run", "m.arch", "-i", "x.npy", "--seed", "-1"],
     "archc run: error: argument --seed: expected a whole number from 0 to 2**63-1, got -1"),
    (["dump", "m.arch", "--batch", "-2"],
     "archc dump: error: argument --batch: expected a whole number from 1 to 2**63-1, got -2"),
    (["stats", "m.arch", "--seq", "1e9"],
     "archc stats: error: argument --seq: expected a whole number from 1 to 2**63-1, got 1e9"),
])
def test_other_commands_numbers(work, capsys, argv, message):
    assert usage_error(capsys, *argv) == message


def test_dim_values_are_bounded(work, capsys):
    assert main(["dump", "m.arch", "--dim", f"T={10 ** 30}"]) == 2
    assert capsys.readouterr().err == (f"error: --dim T={10 ** 30}: expected NAME=N with N a "
                                       "whole number from 1 to 2**63-1, e.g. T=128\n")


def test_a_0d_prompt_is_refused_before_the_model_loads(work, capsys, monkeypatch):
    np.save("p0.npy", np.array(3))
    import archc.api
    monkeypatch.setattr(archc.api, "load", lambda *a, **k: pytest.fail("loaded"))
    assert main(["generate", "lm.arch", "-i", "p0.npy"]) == 2
    assert capsys.readouterr().err == ("error: the prompt must be token ids of shape (B, T) "
                                       "with T >= 1, got int64[]\n")


def test_new_ids_beyond_the_budget_are_refused(work, capsys):
    assert main(["generate", "lm.arch", "-i", "p.npy", "-n", str(10 ** 12),
                 "--max-memory", "1G"]) == 2
    assert capsys.readouterr().err == (
        "error: generating with `lm` (batch 1) needs parameters 512 B + new token ids "
        "7.3 TiB, more than --max-memory 1.0 GiB\n"
        "hint: ask for fewer --max-new-tokens, lower --max-seq or the batch, or raise "
        "--max-memory\n")


def test_the_api_checks_generate_numbers_too(work):
    import archc
    from archc.dsl.errors import ArchError
    m = archc.load("lm.arch")
    for bad, message in [(dict(temperature=float("nan")), "temperature must be a finite"),
                         (dict(top_k=-1), "top_k must be a whole number from 0"),
                         (dict(eos=[2, -1]), "eos must be a whole number from 0"),
                         (dict(seed=-1), "seed must be a whole number from 0")]:
        with pytest.raises(ArchError, match=message):
            m.generate(np.array([[1, 2]]), 2, **bad)


# ---- memory --------------------------------------------------------------------------------

def test_a_memory_error_is_the_budgets_message(work, capsys, monkeypatch):
    def boom(args):
        raise MemoryError("Unable to allocate 7.28 TiB for an array")
    monkeypatch.setitem(cli.COMMANDS, "check", boom)
    assert main(["check", "m.arch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (Unable to allocate 7.28 TiB for an array); ")
    assert "Traceback" not in err and "hint: use a smaller model" in err


def test_an_address_space_limit_lowers_the_budget(monkeypatch):
    import resource
    from archc.runtime import budget
    monkeypatch.setattr(resource, "getrlimit", lambda which: (4 << 30, resource.RLIM_INFINITY))
    limit = budget.default_max_memory()
    assert limit <= 4 << 30
    assert limit.why == "the address space `ulimit -v` leaves this process"
    err = budget._refuse("model `m`", "parameters 9 GiB", limit, "or raise --max-memory")
    assert err.message.startswith("model `m` needs parameters 9 GiB, more than the address "
                                  "space `ulimit -v` leaves this process")
    assert err.hint == "or raise `ulimit -v`"


def test_under_ulimit_v_a_big_model_is_refused_not_crashed(tmp_path):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (900 << 20, 900 << 20))
    np.save(tmp_path / "ids.npy", np.zeros((1, 4), np.int64))
    proc = subprocess.run([sys.executable, "-m", "archc", "run", str(GPT2), "-i",
                           str(tmp_path / "ids.npy")], capture_output=True, text=True,
                          preexec_fn=limit, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "more than the address space `ulimit -v` leaves this process" in proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr


# ---- outputs, checked before the run ---------------------------------------------------

@pytest.fixture
def never_runs(monkeypatch):
    import archc.run_cmds
    monkeypatch.setattr(archc.run_cmds, "run_model", lambda *a: pytest.fail("the model ran"))


def test_an_output_name_too_long_is_refused_before_running(work, capsys, never_runs):
    name = "a" * 300 + ".npz"
    assert main(["run", "m.arch", "-i", "x.npy", "-o", name]) == 2
    assert capsys.readouterr().err == (f"error: cannot write {name}: File name too long\n"
                                       "hint: a file name may be at most 255 bytes\n")


def test_an_unwritable_directory_is_refused_before_running(work, capsys, never_runs,
                                                           monkeypatch):
    Path("ro").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p).endswith("ro")
                        else real(p, mode, **k))
    assert main(["run", "m.arch", "-i", "x.npy", "-o", "ro/out.npz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write ro/out.npz: permission denied: cannot create "
                          "files in ")
    assert err.endswith("hint: choose a directory you can write to\n")


def test_two_outputs_into_one_npy_is_refused_before_running(work, capsys, never_runs):
    assert main(["run", "m.arch", "-i", "x.npy", "-o", "out.npy"]) == 2
    assert capsys.readouterr().err == ("error: the model has 2 outputs (y, z); out.npy can hold "
                                       "only one\nhint: write them all with --output out.npz\n")


def test_dump_checks_its_output_before_the_pipeline(work, capsys, monkeypatch):
    import archc.compile_cmds
    monkeypatch.setattr(archc.compile_cmds, "compile_graph", lambda *a: pytest.fail("compiled"))
    assert main(["dump", "m.arch", "-O", "-o", "nodir/d.txt"]) == 2
    assert capsys.readouterr().err == ("error: cannot write nodir/d.txt: directory nodir does "
                                       "not exist\n")


# ---- Ctrl-C ---------------------------------------------------------------------------------

def _blocked_reading_stdin(pid: int) -> bool:
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        call = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        pytest.skip("no /proc to see where the process waits")
    return "pipe" in wchan or (call[:2] in (["0", "0x0"], ["63", "0x0"]))


def test_ctrl_c_while_running_says_interrupted_and_leaves_no_output(work):
    proc = subprocess.Popen([sys.executable, "-m", "archc", "run", "m.arch", "-i", "-", "-o",
                             "out.npz"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _blocked_reading_stdin(proc.pid):     # inside the command, reading -i -
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    # stdin stays open until the process has gone: closing it at once (communicate) races
    # the signal on a busy machine, and the read may see the end of input first
    try:
        proc.wait(timeout=60)
    finally:
        proc.kill()
    proc.stdin.close()
    err = proc.stderr.read()
    proc.stdout.close(), proc.stderr.close()
    assert (proc.returncode, err) == (130, b"interrupted\n")
    assert sorted(os.listdir(work)) == ["lm.arch", "m.arch", "p.npy", "x.npy"]


def test_an_interrupt_that_a_library_turned_into_another_error_is_still_one(work, capsys,
                                                                            monkeypatch):
    def interrupted_import(args):
        monkeypatch.setattr(cli, "_interrupted", True)
        raise ImportError("numpy failed to import: KeyboardInterrupt")
    monkeypatch.setitem(cli.COMMANDS, "check", interrupted_import)
    assert main(["check", "m.arch"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_an_input_error_after_an_interrupt_is_the_interrupt(work, capsys, monkeypatch):
    def input_cut_short(args):       # the interrupt closed the pipe archc was reading
        monkeypatch.setattr(cli, "_interrupted", True)
        raise ArchError("standard input is not a .npy file")
    monkeypatch.setitem(cli.COMMANDS, "check", input_cut_short)
    assert main(["check", "m.arch"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
