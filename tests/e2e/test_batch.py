"""`archc run --input-dir DIR --output-dir OUT` in process: one output per input, equal to
one-at-a-time runs; bad items reported and the rest written; --resume; the summary."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.batch import Reporter, Result, Summary, run_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BERT = ROOT / "tests" / "fixtures" / "hf" / "bert"
TEXTS = ["the cat sat on the mat", "a dog ran", "the dog sat in the park", "cat",
         "a cat ran on a mat in the park", "the mat"]


def archc_run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", "run", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def ffn_items(d: Path, lengths=(3, 1, 5, 2, 5, 4, 1)) -> dict[str, np.ndarray]:
    d.mkdir()
    rng = np.random.default_rng(0)
    items = {}
    for i, n in enumerate(lengths):
        items[f"x{i}"] = rng.standard_normal((n, 4))
        np.save(d / f"x{i}.npy", items[f"x{i}"])
    return items


def test_every_input_gets_its_output_equal_to_a_run_of_its_own(tmp_path):
    items = ffn_items(tmp_path / "in")
    r = archc_run(EXAMPLES / "ffn.arch", "--input-dir", tmp_path / "in",
                  "--output-dir", tmp_path / "out", "--batch-size", 4)
    assert r.returncode == 0, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("7 items: 7 written, 0 failed in ") and last.endswith(" items/s")
    model = archc.load(EXAMPLES / "ffn.arch")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(f"{k}.npy" for k in items)
    for name, x in items.items():
        want = model.run(x=x, executor="numba")["y"]
        got = np.load(tmp_path / "out" / f"{name}.npy")
        assert got.shape == want.shape and np.max(np.abs(got - want)) < 1e-12


def test_the_reference_executor_compiles_nothing(tmp_path, monkeypatch):
    """--executor reference: every call is the NumPy oracle's (Model.run's default is the
    compiled executor, so the worker asks for the reference)."""
    items = ffn_items(tmp_path / "in", lengths=(3, 2))

    def no_compiling(self, threads=None):
        raise AssertionError("compiled with --executor reference")
    monkeypatch.setattr(archc.api.Model, "compiled", no_compiling)
    summary = run_dir(EXAMPLES / "ffn.arch", tmp_path / "in", tmp_path / "out",
                      executor="reference")
    assert (summary.written, summary.failed) == (len(items), [])


def write_text_items(d: Path) -> dict[str, list[str]]:
    """.txt files of one or two lines, and .jsonl files of strings or {"text": ...}."""
    d.mkdir()
    items = {}
    for i, text in enumerate(TEXTS):
        lines = [text] if i % 2 else [text, TEXTS[-1 - i]]
        if i % 3 == 2:
            rows = [json.dumps(x) if k else json.dumps({"text": x}) for k, x in enumerate(lines)]
            (d / f"t{i}.jsonl").write_text("\n".join(rows) + "\n")
        else:
            (d / f"t{i}.txt").write_text("\n\n".join(lines) + "\n")    # blank lines skipped
        items[f"t{i}"] = lines
    return items


def test_text_items_padded_together_equal_their_own_runs(tmp_path, bert_tokenizer):
    bert_tokenizer(tmp_path / "tok.json")
    items = write_text_items(tmp_path / "in")
    summary = run_dir(EXAMPLES / "minilm_embed.arch", tmp_path / "in", tmp_path / "out",
                      weights=BERT, tokenizer=tmp_path / "tok.json", batch_size=3)
    assert (summary.items, summary.written, summary.failed) == (len(TEXTS), len(TEXTS), [])
    model = archc.load(EXAMPLES / "minilm_embed.arch", weights=BERT)
    from archc.text import text_inputs
    for name, lines in items.items():
        want = model.run(text_inputs(model.graph, str(tmp_path / "tok.json"), lines, {}),
                         executor="numba")["embedding"]
        got = np.load(tmp_path / "out" / f"{name}.npy")
        assert got.shape == (len(lines), 64) and np.max(np.abs(got - want)) < 1e-6


def bert_npz(path: Path, length: int, rows: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 128, size=(rows, length))
    arrays = {"ids": ids, "mask": np.ones_like(ids), "types": np.zeros_like(ids)}
    np.savez(path, **arrays)
    return arrays


def test_bad_items_are_reported_and_the_rest_written(tmp_path, bert_tokenizer):
    d = tmp_path / "in"
    d.mkdir()
    good = {f"g{i}": bert_npz(d / f"g{i}.npz", n, seed=i) for i, n in enumerate((4, 9, 2, 6))}
    oov = np.array([[5, 6, 500, 7]])                # fails inside a call: found alone
    np.savez(d / "oov.npz", ids=oov, mask=np.ones_like(oov), types=np.zeros_like(oov))
    (d / "junk.npy").write_bytes(b"not an array")
    np.savez(d / "short.npz", ids=np.zeros((1, 3), np.int64))
    (d / "words.txt").write_text("the cat\n")       # text, but no --tokenizer
    (d / "notes.md").write_text("not an input")     # other suffixes are not items
    r = archc_run(EXAMPLES / "minilm_embed.arch", "--weights", BERT, "--input-dir", d,
                  "--output-dir", tmp_path / "out", "--batch-size", 8)
    assert r.returncode == 1, r.stderr
    errors = sorted(line for line in r.stderr.splitlines() if ": error: " in line)
    assert errors == [
        f"{d}/junk.npy: error: input {d}/junk.npy is not a .npy file (it does not start with "
        "the NumPy magic bytes)",
        f"{d}/oov.npz: error: token id 500 is outside the vocabulary (0..127); 1 id out of "
        "range",
        f"{d}/short.npz: error: missing inputs: `mask` (int[B, T]), `types` (int[B, T])",
        f"{d}/words.txt: error: .txt input is text: it needs --tokenizer"]
    assert r.stderr.splitlines()[-1].startswith("8 items: 4 written, 4 failed in ")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(f"{k}.npy" for k in good)
    model = archc.load(EXAMPLES / "minilm_embed.arch", weights=BERT)
    for name, arrays in good.items():
        want = model.run(arrays, executor="numba")["embedding"]
        assert np.max(np.abs(np.load(tmp_path / "out" / f"{name}.npy") - want)) < 1e-6


def test_resume_skips_what_is_written_and_runs_the_rest(tmp_path):
    items = ffn_items(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "x1.npy", np.full((1, 4), 7.0))      # "written before the interrupt"
    np.save(out / "x4.npy", np.full((5, 4), 7.0))
    summary = run_dir(EXAMPLES / "ffn.arch", tmp_path / "in", out, resume=True)
    assert (summary.items, summary.written, summary.skipped) == (5, 5, 2)
    assert np.all(np.load(out / "x1.npy") == 7.0)       # not recomputed
    assert sorted(os.listdir(out)) == sorted(f"{k}.npy" for k in items)
    again = run_dir(EXAMPLES / "ffn.arch", tmp_path / "in", out, resume=True)
    assert (again.items, again.skipped, again.failed) == (0, 7, [])
    assert again.line().startswith("0 items: 0 written, 0 failed, 7 skipped")


def test_two_inputs_with_one_stem_both_fail(tmp_path):
    ffn_items(tmp_path / "in", lengths=(2, 3))
    (tmp_path / "in" / "x0.npz").write_bytes((tmp_path / "in" / "x0.npy").read_bytes())
    summary = run_dir(EXAMPLES / "ffn.arch", tmp_path / "in", tmp_path / "out")
    assert summary.written == 1
    assert sorted(summary.failed) == [
        (str(tmp_path / "in" / n), "error: inputs x0.npy and x0.npz would both write x0.npy")
        for n in ("x0.npy", "x0.npz")]


def test_numbers_are_checked(tmp_path):
    ffn_items(tmp_path / "in", lengths=(2,))
    for flag in ("--batch-size", "--workers"):
        r = archc_run(EXAMPLES / "ffn.arch", "--input-dir", tmp_path / "in", "--output-dir",
                      tmp_path / "out", flag, "0")
        assert r.returncode == 2
        assert r.stderr.splitlines()[-1].endswith(
            f"argument {flag}: expected a whole number from 1 to 2**63-1, got 0")
    with pytest.raises(archc.ArchError, match="--batch-size must be at least 1, got 0"):
        run_dir(EXAMPLES / "ffn.arch", tmp_path / "in", tmp_path / "out", batch_size=0)


@pytest.mark.parametrize("args, message", [
    (["--input-dir", "{IN}"], "--input-dir needs --output-dir OUT (one output per input goes "
                              "there)"),
    (["--input-dir", "{IN}", "--output-dir", "{IN}"], "--output-dir {IN} is the input directory"),
    (["--input-dir", "{IN}", "--output-dir", "{OUT}", "-i", "x.npy"],
     "--input-dir takes its inputs from the directory: drop --input"),
    (["--input-dir", "{IN}", "--output-dir", "{OUT}", "--tap", "layers.0"],
     "--tap is for a run of its own: a batch over --input-dir writes the model's outputs only"),
    (["--input-dir", "{NOPE}", "--output-dir", "{OUT}"], "--input-dir {NOPE}: no such directory"),
    (["-i", "x.npy", "--ray"], "--ray is for a directory of inputs: give --input-dir DIR "
                               "--output-dir OUT"),
])
def test_job_errors(tmp_path, capsys, args, message):
    from archc.cli import main
    ffn_items(tmp_path / "in", lengths=(2,))
    paths = {"IN": tmp_path / "in", "OUT": tmp_path / "out", "NOPE": tmp_path / "nope"}
    code = main(["run", str(EXAMPLES / "ffn.arch"), *[a.format(**paths) for a in args]])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[0] == "error: " + message.format(**paths)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_on_a_terminal():
    stream = Terminal()
    rep = Reporter(4, Summary(), stream)
    for i, ok in enumerate([True, False, True, True]):
        rep(Result(f"in/x{i}.npy", ok, "" if ok else "error: broken"))
    rep(Result("in/x0.npy", True))                       # a retried shard's repeat: once
    text = stream.getvalue()
    assert "in/x1.npy: error: broken\n" in text
    last = text.split("\r")[-1]
    assert last.startswith("[########################] 4/4 items  ")
    assert " items/s  ETA 0:00  1 failed" in last
    assert rep.summary.items == 4 and rep.summary.written == 3


def test_no_bar_when_not_a_terminal():
    stream = io.StringIO()
    rep = Reporter(2, Summary(), stream)
    rep(Result("x.npy", True))
    assert stream.getvalue() == ""


def test_in_process_imports_no_ray(tmp_path):
    ffn_items(tmp_path / "in", lengths=(2,))
    argv = ["run", str(EXAMPLES / "ffn.arch"), "--input-dir", str(tmp_path / "in"),
            "--output-dir", str(tmp_path / "out")]
    code = f"import sys; from archc.cli import main; main({argv!r}); print('ray' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout == "False\n", r.stderr


def test_ray_not_installed_is_said_before_anything_runs(tmp_path, capsys, monkeypatch):
    from archc.cli import main
    monkeypatch.setitem(sys.modules, "ray", None)      # `import ray` fails
    monkeypatch.delitem(sys.modules, "archc.batch_ray", raising=False)
    ffn_items(tmp_path / "in", lengths=(2,))
    code = main(["run", str(EXAMPLES / "ffn.arch"), "--input-dir", str(tmp_path / "in"),
                 "--output-dir", str(tmp_path / "out"), "--ray"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --ray needs Ray (with Ray Data)",
        "hint: pip install 'archc[ray]'  (or: pip install 'ray[data]')"]
    assert not (tmp_path / "out").exists()


def test_a_killed_job_resumes_with_nothing_lost_or_recomputed(tmp_path):
    """SIGKILL mid-job: every output there is whole (and right), and --resume runs only the
    rest."""
    import signal
    import time
    d = tmp_path / "in"
    d.mkdir()
    items = {f"g{i:03d}": bert_npz(d / f"g{i:03d}.npz", 3 + i % 5, seed=i) for i in range(200)}
    out = tmp_path / "out"
    args = [sys.executable, "-m", "archc", "run", str(EXAMPLES / "minilm_embed.arch"),
            "--weights", str(BERT), "--input-dir", str(d), "--output-dir", str(out),
            "--batch-size", "1"]
    proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.npy"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert 3 <= len(before) < len(items)
    model = archc.load(EXAMPLES / "minilm_embed.arch", weights=BERT)
    for name in before:            # whole and right, though the job died
        want = model.run(items[name[:-4]], executor="numba")["embedding"]
        assert np.max(np.abs(np.load(out / name) - want)) < 1e-6
    summary = run_dir(EXAMPLES / "minilm_embed.arch", d, out, weights=BERT, resume=True)
    assert (summary.skipped, summary.written, summary.failed) == \
        (len(before), len(items) - len(before), [])
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy") if p.name in before} \
        == before                  # not recomputed
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.npy" for k in items)


def test_resume_runs_again_an_output_a_crash_tore(tmp_path):
    """A machine that crashed mid-job may leave a torn output (the job does not fsync each
    one): --resume trusts only whole ones, and sweeps temporary files of dead writers."""
    items = ffn_items(tmp_path / "in", lengths=(2, 3, 4))
    out = tmp_path / "out"
    run_dir(EXAMPLES / "ffn.arch", tmp_path / "in", out)
    whole = (out / "x2.npy").read_bytes()
    (out / "x0.npy").write_bytes((out / "x0.npy").read_bytes()[:-8])      # torn
    (out / "x1.npy").write_bytes(b"")
    (out / ".x1.npy.archc-999999999-abcd.tmp").write_bytes(b"half")        # a dead writer's
    summary = run_dir(EXAMPLES / "ffn.arch", tmp_path / "in", out, resume=True)
    assert (summary.written, summary.skipped) == (2, 1)
    assert (out / "x2.npy").read_bytes() == whole
    assert sorted(os.listdir(out)) == sorted(f"{k}.npy" for k in items)


def test_bad_text_items(tmp_path, bert_tokenizer):
    bert_tokenizer(tmp_path / "tok.json")
    d = tmp_path / "in"
    d.mkdir()
    (d / "fields.jsonl").write_text('"the cat"\n\n{"txt": "a dog"}\n')
    (d / "broken.jsonl").write_text('"the cat"\n{"text": \n')
    (d / "blank.txt").write_text("\n  \n")
    (d / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (d / "fine.jsonl").write_text('{"text": "the cat sat"}\n"a dog"\n')
    summary = run_dir(EXAMPLES / "minilm_embed.arch", d, tmp_path / "out", weights=BERT,
                      tokenizer=tmp_path / "tok.json")
    failed = {Path(p).name: m for p, m in summary.failed}
    assert failed == {
        "fields.jsonl": 'error: line 3: expected a JSON string or an object with a "text" '
                        'string',
        "broken.jsonl": failed["broken.jsonl"],
        "blank.txt": "error: no text in it (every line is blank)",
        "latin1.txt": f"error: input {d / 'latin1.txt'} is not UTF-8 text (byte 3)"}
    assert failed["broken.jsonl"].startswith("error: line 2 is not JSON: ")
    assert np.load(tmp_path / "out" / "fine.npy").shape == (2, 64)


def test_a_worker_whose_model_does_not_load_fails_its_items(tmp_path):
    """On Ray, a worker that raised in its constructor would be restarted for ever: it says
    the error for each item instead."""
    from archc.batch import Job, Worker
    job = Job(model=str(tmp_path / "gone.arch"), output_dir=str(tmp_path))
    with pytest.raises(archc.ArchError):
        Worker(job)
    results = Worker(job, keep_going=True).run(["a.npy", "b.npy"])
    assert [(r.path, r.ok) for r in results] == [("a.npy", False), ("b.npy", False)]
    assert results[0].message.endswith("(loading the model)")


def test_without_a_mask_equal_shapes_share_calls_and_outputs_are_npz(tmp_path):
    """GPT-2 (no mask input): items of one length share a call, others wait for theirs;
    two outputs (hidden, logits) make an .npz per item."""
    fixture = ROOT / "tests" / "fixtures" / "hf" / "gpt2"
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    items = {}
    for i, (rows, n) in enumerate([(1, 3), (2, 5), (1, 3), (1, 5), (3, 2), (1, 3)]):
        items[f"p{i}"] = rng.integers(0, 100, size=(rows, n))
        np.save(d / f"p{i}.npy", items[f"p{i}"])
    summary = run_dir(EXAMPLES / "gpt2.arch", d, tmp_path / "out", weights=fixture,
                      batch_size=2)
    assert (summary.written, summary.failed) == (6, [])
    model = archc.load(EXAMPLES / "gpt2.arch", weights=fixture)
    for name, ids in items.items():
        want = model.run(ids=ids, executor="numba")
        with np.load(tmp_path / "out" / f"{name}.npz") as got:
            assert sorted(got.files) == sorted(want)
            for k in want:
                assert got[k].shape == want[k].shape
                assert np.max(np.abs(got[k] - want[k])) < 1e-5


def test_weights_dtype_reaches_the_batch_job(tmp_path):
    """--weights-dtype int8 with --input-dir: each output equals the int8 model's own run
    (not the float32 model's)."""
    fixture = ROOT / "tests" / "fixtures" / "hf" / "gpt2"
    d = tmp_path / "in"
    d.mkdir()
    ids = np.random.default_rng(1).integers(0, 100, size=(1, 6))
    np.save(d / "p.npy", ids)
    r = archc_run(EXAMPLES / "gpt2.arch", "--weights", fixture, "--weights-dtype", "int8",
                  "--input-dir", d, "--output-dir", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "out" / "p.npz")["logits"]
    int8 = archc.load(EXAMPLES / "gpt2.arch", weights=fixture, weights_dtype="int8")
    fp32 = archc.load(EXAMPLES / "gpt2.arch", weights=fixture)
    np.testing.assert_allclose(got, int8.run(ids=ids)["logits"], atol=1e-5)
    assert np.max(np.abs(got - fp32.run(ids=ids)["logits"])) > 1e-6
