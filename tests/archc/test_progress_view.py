"""archc/progress_view.py: a step over a second is shown on a terminal, rewritten as it
advances and erased when it ends; -v prints each step's time; -q, or no terminal, nothing."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archc import progress_view
from archc.cli import main
from archc.dsl import progress

ROOT = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def shown(monkeypatch):
    monkeypatch.setattr(progress_view, "SHOW_AFTER", 0.0)
    monkeypatch.setattr(progress_view, "REDRAW_EVERY", 0.0)
    yield
    progress.listen(None)


def test_a_long_step_is_drawn_and_erased(shown):
    term = Terminal()
    progress_view.show_progress(term, quiet=False, verbose=False)
    with progress.task("compiling kernels", total=3) as t:
        for _ in range(3):
            t.advance()
    with progress.task("loading weights", total=4_000_000, unit="MB") as t:
        t.advance(2_000_000)
    out = term.getvalue()
    assert "\r\x1b[Kcompiling kernels 2/3 ..." in out
    assert "\r\x1b[Kloading weights 2.0/4.0 MB ..." in out
    assert out.endswith("\r\x1b[K")                        # nothing left on the line


def test_nothing_to_compile_is_not_shown(shown):
    term = Terminal()
    progress_view.show_progress(term, quiet=False, verbose=True)
    with progress.task("compiling kernels", total=0):
        pass
    assert term.getvalue() == ""


def test_verbose_quiet_and_no_terminal(shown):
    for quiet, verbose, tty, want in ((False, True, False, "archc: pass x: "),
                                      (True, True, True, ""), (False, False, False, "")):
        stream = Terminal() if tty else io.StringIO()
        progress_view.show_progress(stream, quiet=quiet, verbose=verbose)
        with progress.task("pass x"):
            pass
        assert stream.getvalue().startswith(want) and (want or stream.getvalue() == "")


def test_loading_weights_is_shown_through_the_cli(shown, monkeypatch, capsys, tmp_path):
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3]]))
    assert main(["run", str(ROOT / "examples" / "gpt2.arch"), "-w",
                 str(ROOT / "tests" / "fixtures" / "hf" / "gpt2"), "-i",
                 str(tmp_path / "ids.npy")]) == 0
    drawn = re.findall(r"\r\x1b\[K(loading weights [0-9.]+/([0-9.]+) MB) \.\.\.",
                       term.getvalue())
    assert drawn and {total for _, total in drawn} == {"0.3"}      # the fixture's 320 KB


def test_the_command_line_flags():
    args = [sys.executable, "-m", "archc", "run", str(ROOT / "examples" / "ffn.arch"), "-i",
            str(ROOT / "examples" / "ffn_input.npy")]
    verbose = subprocess.run(args + ["-v"], capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0, verbose.stderr
    steps = [line.split(":")[1].strip() for line in verbose.stderr.splitlines()]
    assert steps[0] == "reading the model" and "pass fuse_ffn" in steps
    assert steps.index("pass fuse_ffn") < steps.index("preparing weights")
    quiet = subprocess.run(args + ["-q"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == verbose.stdout
