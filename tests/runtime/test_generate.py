"""Cached decoding equals full recomputation, matches the Hugging Face greedy fixtures, and
keeps a sliding-window cache at its planned size."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.api import executor
from archc.runtime.generate import generate, sample
from archc.runtime.kv_cache import Session
from archc.runtime.reference import run_reference

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hf"
DECODERS = ["gpt2", "llama", "mistral", "qwen2", "gpt_neox", "falcon", "mixtral", "llama_tied",
            "mistral_nowindow"]


def _fixture_model(fam):
    if not (FIXTURES / fam / "io.npz").is_file():
        pytest.skip(f"no fixture for {fam}")
    # a variant fixture (llama_tied) runs on its family's .arch, named in its meta.json
    example = json.loads((FIXTURES / fam / "meta.json").read_text()).get("example", fam)
    model = archc.load(ROOT / "examples" / f"{example}.arch", weights=FIXTURES / fam)
    return model, np.load(FIXTURES / fam / "io.npz")


@pytest.mark.parametrize("fam", DECODERS)
def test_greedy_matches_hf_fixture(fam):
    model, z = _fixture_model(fam)
    ex = executor(model.graph, model.params)
    res = generate(ex, z["input_ids"][:1], 32, keep_logits=True)
    assert res.cached and not res.warnings
    np.testing.assert_array_equal(res.ids[0], z["greedy_ids"])
    np.testing.assert_allclose(np.concatenate(res.logits), z["greedy_logits"], atol=1e-4)


@pytest.mark.parametrize("fam", DECODERS)
def test_cached_step_equals_full_forward(fam):
    """Logits of decode step t (with the cache) = the reference executor over t tokens."""
    model, z = _fixture_model(fam)
    ex = executor(model.graph, model.params)
    prompt = z["input_ids"]                                  # a batch of 2 prompts
    res = generate(ex, prompt, 6, keep_logits=True)
    seq = np.concatenate([prompt, res.ids], axis=1)
    for t, logits in enumerate(res.logits):
        full = run_reference(model.graph, {"ids": seq[:, :prompt.shape[1] + t]}, model.params)
        np.testing.assert_allclose(logits, full["logits"][:, -1], atol=1e-4, err_msg=f"step {t}")


def test_prompt_pass_computes_the_last_positions_logits_only():
    # the prompt's program runs the head on its last position (compiler/passes/
    # last_position.py) in an executor sharing the weights; decode steps keep their own
    model, z = _fixture_model("gpt2")
    ex = executor(model.graph, model.params)
    prompt = z["input_ids"]
    res = generate(ex, prompt, 3, keep_logits=True)
    last = ex.last_position("logits", 1)
    assert last is not ex and ex.variants() == [ex, last] and last.weights is ex.weights
    assert last.folded_values and all(v is ex.folded_values[n]
                                      for n, v in last.folded_values.items())
    (prog,) = last._programs.values()
    assert prog.output_values()["logits"].shape == (2, 1, res.logits[0].shape[-1])
    assert all(p.bindings["T"] == 1 for p in ex._programs.values())
    full = run_reference(model.graph, {"ids": prompt}, model.params)["logits"][:, -1]
    np.testing.assert_allclose(res.logits[0], full, atol=1e-4)
    # without a cache every step recomputes the sequence, with the same cut-down head
    again = generate(ex, prompt, 3, keep_logits=True, use_cache=False)
    np.testing.assert_array_equal(again.ids, res.ids)
    assert all(p.output_values()["logits"].shape[1] == 1 for p in last._programs.values())


WINDOWED = """
config { d = 16  heads = 2  vocab = 32  window = 4  n_ctx = 64 }
model tiny(ids: int[B, T]) {
    param wte: float[vocab, d] = normal(0.5)
    x = embedding(ids, wte)
    repeat 2 as layers {
        x = x + Attention(RMSNorm(x), heads, kv_heads=1, causal=true, rope=true,
                          window=window, bias=false) as attn
    }
    logits = RMSNorm(x) @ transpose(wte)
    return logits
}
"""


def test_sliding_window_cache_stays_at_window(tmp_path):
    path = tmp_path / "tiny.arch"
    path.write_text(WINDOWED)
    model = archc.load(path, seed=3)
    ex = executor(model.graph, model.params)
    prompt = np.array([[1, 2, 3, 4, 5, 6]])                # longer than the window
    sessions = []
    orig = Session.__init__

    def spy(self, *a, **k):
        orig(self, *a, **k)
        sessions.append(self)
    Session.__init__ = spy
    try:
        res = generate(ex, prompt, 16, keep_logits=True, max_seq=8)   # 22 tokens > max_seq
    finally:
        Session.__init__ = orig
    (sess,) = sessions
    assert sess.bounded and sess.pos == prompt.shape[1] + 15
    for e in sess.entries.values():
        assert e.kc.shape[2] == 4 and e.kpos.shape == (4,)    # planned: window slots
    assert sess.arena.nbytes == sess.nbytes
    seq = np.concatenate([prompt, res.ids], axis=1)
    for t, logits in enumerate(res.logits):
        full = run_reference(model.graph, {"ids": seq[:, :6 + t]}, model.params)
        np.testing.assert_allclose(logits, full["logits"][:, -1], atol=1e-4)


@pytest.mark.parametrize("chunks", [(6, 7, 5), (3, 9, 2, 6)])
def test_ring_prompts_in_chunks_match_a_full_pass(tmp_path, chunks):
    # several multi-token forwards through a window-4 ring: chunks above PREFILL_ROWS take
    # the BLAS path over the ring laid out in position order, after the ring has wrapped
    path = tmp_path / "tiny.arch"
    path.write_text(WINDOWED)
    model = archc.load(path, seed=3)
    ex = executor(model.graph, model.params)
    ids = (np.arange(2 * sum(chunks)).reshape(2, -1) * 7 % 32)
    full = run_reference(model.graph, {"ids": ids}, model.params)["logits"]
    sess = Session(ex, 2, 8)
    pos = 0
    for T in chunks:
        got = sess.forward({"ids": ids[:, pos:pos + T]}, {"B": 2, "T": T})["logits"]
        np.testing.assert_allclose(got, full[:, pos:pos + T], atol=1e-4, err_msg=f"at {pos}")
        pos += T
    assert sess.bounded and all(e.kc.shape[2] == 4 for e in sess.entries.values())
    prompt = ex.program({"B": 2, "T": max(chunks)}, sess)
    assert "run_blas" in [s.fn.__name__ for s in prompt.steps if s.op == "attention"]


def test_full_context_cache_refuses_to_overflow():
    model, z = _fixture_model("gpt2")
    ex = executor(model.graph, model.params)
    with pytest.raises(archc.ArchError, match="--max-seq"):
        generate(ex, z["input_ids"][:1], 8, max_seq=12)        # 10-token prompt + 8 > 12


def test_sampling():
    rng = np.random.default_rng(0)
    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    assert sample(logits, rng).tolist() == [1, 0]
    assert sample(logits, rng, temperature=1.0, top_k=1).tolist() == [1, 0]
    assert sample(logits, rng, temperature=1.0, top_p=1e-6).tolist() == [1, 0]
    draws = np.array([sample(logits, np.random.default_rng(s), 1.0, top_k=2)[0]
                      for s in range(200)])
    assert set(draws) == {1, 3}                                # only the two best survive
    a = [sample(logits, np.random.default_rng(7), 2.0)[0] for _ in range(3)]
    assert len(set(a)) == 1                                    # seeded: reproducible


def test_eos_stops_and_api():
    model, z = _fixture_model("gpt2")
    first = int(z["greedy_ids"][0])
    res = model.generate(z["input_ids"][:1], 32, eos=first)
    assert res.ids.tolist() == [[first]]


def test_cli_generate_streams_ids(tmp_path):
    _fixture_model("gpt2")
    prompt = tmp_path / "p.npy"
    np.save(prompt, np.load(FIXTURES / "gpt2" / "io.npz")["input_ids"][:1])
    out = subprocess.run([sys.executable, "-m", "archc", "generate", "examples/gpt2.arch",
                          "--weights", str(FIXTURES / "gpt2"), "--input", str(prompt), "-n", "8",
                          "--output", str(tmp_path / "new.npy")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    want = np.load(FIXTURES / "gpt2" / "io.npz")["greedy_ids"][:8]
    assert out.stdout.split() == [str(int(t)) for t in want]
    assert "tokens/s" in out.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "new.npy")[0], want)


def test_cli_prompt_without_tokenizer_is_a_user_error():
    out = subprocess.run([sys.executable, "-m", "archc", "generate", "examples/gpt2.arch",
                          "--prompt", "hello"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "needs --tokenizer" in out.stderr
