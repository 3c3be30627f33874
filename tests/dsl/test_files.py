"""archc reads only regular files, only .arch source is parsed or quoted, and includes take
only .arch files: a hostile or mistaken path can neither block a run nor print a file."""
from __future__ import annotations

import os

import pytest

from archc.dsl.errors import ArchError, Span, render_error
from archc.dsl.files import check_regular, file_id, is_source, open_regular
from archc.dsl.lower import lower

MODEL = "model m(x: float[T, 4]) {\n    return relu(x)\n}\n"


def test_regular_files_pass_and_fifos_are_refused_without_blocking(tmp_path):
    f = tmp_path / "a.npy"
    f.write_bytes(b"abc")
    assert check_regular(f, "input").st_size == 3
    with open_regular(f, "input") as fh:
        assert fh.read() == b"abc"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)        # no writer: opening it for reading would block for ever
    with pytest.raises(ArchError, match="is a FIFO"):
        open_regular(fifo, "input")
    with pytest.raises(ArchError, match="is a directory"):
        check_regular(tmp_path, "input")
    with pytest.raises(ArchError, match="not found"):
        check_regular(tmp_path / "nope", "input")


def test_is_source_looks_through_symlinks(tmp_path):
    real = tmp_path / "a.arch"
    real.write_text(MODEL)
    (tmp_path / "b.arch").symlink_to(real)
    (tmp_path / "env.arch").symlink_to("/proc/self/environ")
    assert is_source(real) and is_source(tmp_path / "b.arch")
    assert not is_source(tmp_path / "env.arch")
    assert not is_source("/etc/passwd")


def test_file_id_is_shared_by_links(tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"1")
    os.link(a, tmp_path / "hard")
    (tmp_path / "soft").symlink_to(a)
    assert file_id(a) == file_id(tmp_path / "hard") == file_id(tmp_path / "soft")
    assert file_id(tmp_path / "missing") is None


@pytest.mark.parametrize("target", ["/proc/self/environ", "/etc/passwd", "notes.txt"])
def test_include_takes_only_arch_files(tmp_path, target):
    (tmp_path / "notes.txt").write_text("SECRET=hunter2\n")
    m = tmp_path / "m.arch"
    m.write_text(f'include "{target}"\n' + MODEL)
    with pytest.raises(ArchError) as e:
        lower(m)
    text = e.value.render()
    assert "include takes an .arch file" in text and e.value.span.line == 1
    assert "hunter2" not in text and "root:" not in text and "PATH=" not in text


def test_include_through_a_symlink_to_a_non_arch_file_is_refused(tmp_path):
    (tmp_path / "secret.txt").write_text("block B(x) { return x }\nSECRET\n")
    (tmp_path / "lib.arch").symlink_to(tmp_path / "secret.txt")
    m = tmp_path / "m.arch"
    m.write_text('include "lib.arch"\n' + MODEL)
    with pytest.raises(ArchError, match="include takes an .arch file"):
        lower(m)


def test_the_model_must_be_arch_source(tmp_path):
    other = tmp_path / "model.txt"
    other.write_text("PASSWORD=hunter2\n")
    with pytest.raises(ArchError) as e:
        lower(other)
    assert "archc reads only .arch source" in e.value.render()
    assert "hunter2" not in e.value.render()
    fifo = tmp_path / "m.arch"
    os.mkfifo(fifo)
    with pytest.raises(ArchError, match="is a FIFO"):
        lower(fifo)


def test_errors_quote_only_arch_source(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("PASSWORD=hunter2\n")
    shown = render_error(ArchError("boom", Span(str(secret), 1, 1)))
    assert "hunter2" not in shown and shown.startswith(f"{secret}:1:1: error: boom")
    src = tmp_path / "m.arch"
    src.write_text("model m() {}\n")
    assert "model m() {}" in render_error(ArchError("boom", Span(str(src), 1, 1)))


def test_a_file_name_with_a_nul_is_a_clear_error():
    # names read from files (an index's shards) can hold what a command line cannot
    with pytest.raises(ArchError, match="a file name cannot hold a NUL character"):
        check_regular("a\x00b.safetensors", "weights")
