"""`archc generate` as llama.cpp and transformers users expect it: the checkpoint's eos and
generation_config.json defaults, stop strings, sampling settings checked, the figures
apart (compilation never in tokens/s), no recompilation for sampling or vocabulary size,
--output-logits, and a --max-seq hint."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.cli import main
from archc.dsl import progress
from archc.runtime.executor import Program

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"
GPT2 = ROOT / "examples" / "gpt2.arch"
IO = np.load(FIX / "gpt2" / "io.npz")
GREEDY = [int(t) for t in IO["greedy_ids"]]      # 12 100 83 83 126 114 ...


def archc_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archc", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def prompt(tmp_path):
    np.save(tmp_path / "prompt.npy", IO["input_ids"][:1])
    return tmp_path / "prompt.npy"


def checkpoint(tmp_path, config=None, generation=None) -> Path:
    """The gpt2 fixture with config.json keys changed and a generation_config.json."""
    d = tmp_path / "ckpt"
    d.mkdir()
    shutil.copy(FIX / "gpt2" / "model.safetensors", d)
    cfg = json.loads((FIX / "gpt2" / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **(config or {})}))
    if generation is not None:
        (d / "generation_config.json").write_text(json.dumps(generation))
    return d


def new_ids(proc) -> list[int]:
    assert proc.returncode == 0, proc.stderr
    return [int(t) for t in proc.stdout.split()]


def test_the_checkpoints_eos_stops_and_flags_override_it(tmp_path, prompt):
    ckpt = checkpoint(tmp_path, config={"eos_token_id": 83})
    assert new_ids(archc_cli("generate", GPT2, "-w", ckpt, "-i", prompt, "-n", "8")) \
        == GREEDY[:3]
    assert new_ids(archc_cli("generate", GPT2, "-w", ckpt, "-i", prompt, "-n", "8",
                             "--eos", "126")) == GREEDY[:5]
    assert new_ids(archc_cli("generate", GPT2, "-w", ckpt, "-i", prompt, "-n", "8",
                             "--ignore-eos")) == GREEDY[:8]


def test_generation_config_comes_first(tmp_path, prompt):
    ckpt = checkpoint(tmp_path, config={"eos_token_id": 83},
                      generation={"eos_token_id": [114, 126]})
    assert new_ids(archc_cli("generate", GPT2, "-w", ckpt, "-i", prompt, "-n", "8")) \
        == GREEDY[:5]


def test_generation_config_sampling_defaults(tmp_path):
    ckpt = checkpoint(tmp_path, generation={"do_sample": True, "temperature": 0.7,
                                            "eos_token_id": 5})
    model = archc.load(GPT2, weights=ckpt)
    assert model.generation == {"eos": [5], "temperature": 0.7, "top_k": 50, "top_p": 1.0}
    ids = IO["input_ids"][:1]
    a = model.generate(ids, 6, seed=3).ids
    b = model.generate(ids, 6, seed=3, temperature=0.7, top_k=50, top_p=1.0, eos=[5]).ids
    np.testing.assert_array_equal(a, b)
    greedy = model.generate(ids, 6, temperature=0, eos=()).ids[0]
    assert list(greedy) == GREEDY[:6]


# the sampling flags' own checks are their argument types (tests/e2e/test_cli_bounds.py);
# the API's are generate's (runtime/generate.check_options), which the checkpoint's
# defaults go through too, said as the checkpoint's

def test_sampling_settings_are_checked_by_the_api_too():
    model = archc.load(GPT2, weights=FIX / "gpt2")
    with pytest.raises(archc.ArchError, match=r"top_p must be a number in \(0, 1\]"):
        model.generate(IO["input_ids"][:1], 2, temperature=1.0, top_p=float("inf"))


def test_a_bad_generation_config_is_said_as_the_checkpoints(tmp_path, prompt, capsys):
    ckpt = checkpoint(tmp_path, generation={"do_sample": True, "top_p": 1.5})
    assert main(["generate", str(GPT2), "-w", str(ckpt), "-i", str(prompt), "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the checkpoint's generation defaults: top_p must be a "
                          "number in (0, 1], got 1.5\nhint: its generation_config.json")
    # a flag overrides it
    assert main(["generate", str(GPT2), "-w", str(ckpt), "-i", str(prompt), "-n", "2",
                 "--top-p", "0.9"]) == 0


def test_top_k_0_turns_off_the_checkpoints_top_k(tmp_path):
    ckpt = checkpoint(tmp_path, generation={"do_sample": True, "top_k": 1})
    model = archc.load(GPT2, weights=ckpt)
    ids = IO["input_ids"][:1]
    assert list(model.generate(ids, 4, seed=1).ids[0]) == GREEDY[:4]     # top 1: greedy
    free = [list(model.generate(ids, 4, seed=s, top_k=0).ids[0]) for s in range(4)]
    assert any(f != GREEDY[:4] for f in free)


def test_figures_keep_compilation_apart(prompt, monkeypatch):
    # a compilation that takes 0.4 s more than it does is counted as compiling only
    real = Program.compile

    def slow(self, profile=None):
        if not self.compiled:
            time.sleep(0.4)
        return real(self, profile)
    monkeypatch.setattr(Program, "compile", slow)
    model = archc.load(GPT2, weights=FIX / "gpt2", config={"vocab": 128})
    res = model.generate(IO["input_ids"][:1], 6)
    assert list(res.ids[0]) == GREEDY[:6]
    assert res.compile_seconds >= 0.8                 # the prompt's program and the step's
    assert res.prefill_seconds < 0.4 and res.seconds < 0.4
    assert res.prompt_tokens == IO["input_ids"].shape[1]
    line = res.summary(0.25, 1.0)
    assert line.startswith("6 tokens: load 0.25 s; compile ")
    assert f"prompt {res.prompt_tokens} tokens in " in line and "; decode " in line


def test_the_cli_prints_the_figures_apart(prompt):
    proc = archc_cli("generate", GPT2, "-w", FIX / "gpt2", "-i", prompt, "-n", "4")
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("4 tokens: load ") and "; compile " in last
    assert "; prompt 10 tokens in " in last and "; decode " in last and "tokens/s" in last


class Kernels:
    """Counts the kernels programs had to compile (progress reports)."""
    def __init__(self):
        self.compiled = 0

    def started(self, task):
        pass

    def advanced(self, task):
        pass

    def finished(self, task):
        if task.name == "compiling kernels":
            self.compiled += int(task.total or 0)


def test_no_recompilation_for_sampling_or_vocabulary_size():
    ids = IO["input_ids"][:1]
    archc.load(GPT2, config={"n_layer": 1, "d_model": 32, "n_head": 2, "vocab": 64,
                             "n_ctx": 32}).generate(ids % 64, 4)
    seen = Kernels()
    previous = progress.listen(seen)
    try:
        for vocab, opts in ((96, {}), (80, {"temperature": 0.8, "top_k": 5, "top_p": 0.9})):
            model = archc.load(GPT2, config={"n_layer": 1, "d_model": 32, "n_head": 2,
                                             "vocab": vocab, "n_ctx": 32})
            assert model.generate(ids % vocab, 4, seed=1, **opts).ids.shape == (1, 4)
    finally:
        progress.listen(previous)
    assert seen.compiled == 0


def test_output_logits_are_the_steps_logits(tmp_path, prompt):
    out = tmp_path / "logits.npy"
    proc = archc_cli("generate", GPT2, "-w", FIX / "gpt2", "-i", prompt, "-n", "5",
                     "--output-logits", out, "-o", tmp_path / "ids.npy")
    assert new_ids(proc) == GREEDY[:5]
    logits = np.load(out)
    assert logits.shape == (1, 5, 128)
    np.testing.assert_allclose(logits[0], IO["greedy_logits"][:5], atol=1e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "ids.npy")[0], GREEDY[:5])


def test_too_many_tokens_mentions_max_seq(prompt, capsys):
    assert main(["generate", str(GPT2), "-w", str(FIX / "gpt2"), "-i", str(prompt), "-n",
                 "60", "--max-seq", "32"]) == 2
    err = capsys.readouterr().err
    assert "10 start tokens + 60 new need 69 positions but the KV cache holds 32 " \
           "(--max-seq 32)" in err
    assert "a larger --max-seq, up to the model's context 64" in err
    assert main(["generate", str(GPT2), "-w", str(FIX / "gpt2"), "-i", str(prompt), "-n",
                 "60"]) == 2
    assert "--max-seq can not go past its 64 (config n_ctx)" in capsys.readouterr().err
