"""Encoder-decoder generation and cached decoding with position biases: T5 greedy decoding
matches the Hugging Face fixtures, the encoder runs once, and for T5, ALiBi and a hand-written
encoder-decoder every cached step equals a full forward over the tokens so far."""
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.runtime import seq2seq
from archc.api import executor
from archc.runtime.generate import generate, token_io
from archc.runtime.kv_cache import Session
from archc.runtime.reference import run_reference

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hf"


def _t5(fam):
    if not (FIXTURES / fam / "io.npz").is_file():
        pytest.skip(f"no fixture for {fam}")
    model = archc.load(ROOT / "examples" / f"{fam}.arch", weights=FIXTURES / fam)
    return model, executor(model.graph, model.params), np.load(FIXTURES / fam / "io.npz")


def _load(tmp_path, text, name="m.arch", seed=0):
    path = tmp_path / name
    path.write_text(text)
    return archc.load(path, seed=seed)


@pytest.mark.parametrize("fam", ["t5", "t5_gated"])
def test_t5_greedy_matches_hf_fixture(fam):
    model, ex, z = _t5(fam)
    res = generate(ex, z["input_ids"][:1], 32, keep_logits=True)    # start: config, 0
    assert res.cached and not res.warnings
    np.testing.assert_array_equal(res.ids[0], z["greedy_ids"])
    np.testing.assert_allclose(np.concatenate(res.logits), z["greedy_logits"], atol=1e-4)


def test_t5_cached_step_equals_full_forward():
    """A batch of two encoder inputs; step t's logits = the reference over start + t tokens
    (the decoder's bias rows come from the query's absolute position)."""
    model, ex, z = _t5("t5")
    ids = z["input_ids"]
    res = generate(ex, ids, 6, keep_logits=True)
    assert res.cached
    dec = np.concatenate([np.zeros((2, 1), np.int64), res.ids], axis=1)
    for t, logits in enumerate(res.logits):
        d = dec[:, :t + 1]
        full = run_reference(model.graph, {"ids": ids, "mask": np.ones_like(ids),
                                           "decoder_ids": d, "decoder_mask": np.ones_like(d)},
                             model.params)
        np.testing.assert_allclose(logits, full["logits"][:, -1], atol=1e-4, err_msg=f"step {t}")


def test_t5_encoder_runs_once_and_cross_kv_is_cached(monkeypatch):
    model, ex, z = _t5("t5")
    calls, sessions = [], []
    orig_encode, orig_init = seq2seq.EncoderDecoder.encode, Session.__init__

    def encode(self, *a, **k):
        calls.append(1)
        return orig_encode(self, *a, **k)

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        sessions.append(self)
    monkeypatch.setattr(seq2seq.EncoderDecoder, "encode", encode)
    monkeypatch.setattr(Session, "__init__", init)
    res = generate(ex, z["input_ids"][:1], 8)
    assert len(calls) == 1 and res.ids.shape == (1, 8)
    (sess,) = sessions
    kinds = sorted(e.cross for e in sess.entries.values())
    assert kinds == [False, False, True, True]          # 2 self + 2 cross caches
    for e in sess.entries.values():
        if e.cross:   # encoder length 10; K equals the encoder output's projection
            assert e.slots == 10 and e.kpos.tolist() == list(range(10))
    # the decoder graph reads the encoder only through the boundary parameters
    dec = sess.ex.graph
    assert not any(n.scope.startswith("encoder") for n in dec.nodes() if n.op != "param")
    assert sorted(n.attrs["name"] for n in dec.input_nodes()) == ["decoder_ids", "decoder_mask"]


def test_t5_without_cache_matches_and_api_decoder_start():
    model, ex, z = _t5("t5")
    res = model.generate(z["input_ids"][:1], 5, use_cache=False, decoder_start=0)
    assert not res.cached
    np.testing.assert_array_equal(res.ids[0], z["greedy_ids"][:5])
    other = generate(ex, z["input_ids"][:1], 5, decoder_start=7)
    assert other.ids.tolist() != res.ids.tolist()       # the start token is really used


SEQ2SEQ = """
config { d = 16  heads = 4  vocab = 24 }
model s2s(src: int[B, N], src_mask: int[B, N], tgt: int[B, M]) {
    param emb: float[vocab, d] = normal(0.7)
    layer encoder {
        x = embedding(src, emb)
        x = x + Attention(RMSNorm(x) as ln, heads, mask=src_mask) as attn
        x = RMSNorm(x) as ln_f
    }
    layer decoder {
        y = embedding(tgt, emb)
        repeat 2 as layers {
            y = y + Attention(RMSNorm(y) as ln_1, heads, kv_heads=2, causal=true,
                              rope=true) as attn
            y = y + Attention(RMSNorm(y) as ln_2, heads, kv_heads=2, kv=x,
                              mask=src_mask) as cross
        }
        y = RMSNorm(y) as ln_f
    }
    logits = y @ transpose(emb)
    return logits
}
"""


def test_hand_written_encoder_decoder(tmp_path):
    model = _load(tmp_path, SEQ2SEQ, seed=5)
    ex = executor(model.graph, model.params)
    io = token_io(ex.graph)
    assert (io.tokens, io.encoder, io.encoder_ones, io.length) == ("tgt", "src",
                                                                    ("src_mask",), "M")
    src = np.array([[3, 9, 4, 11, 2], [7, 7, 1, 20, 5]])
    with pytest.raises(archc.ArchError, match="decoder start"):
        generate(ex, src, 4)
    res = generate(ex, src, 6, keep_logits=True, decoder_start=1)
    assert res.cached and not res.warnings
    dec = np.concatenate([np.ones((2, 1), np.int64), res.ids], axis=1)
    for t, logits in enumerate(res.logits):
        full = run_reference(model.graph, {"src": src, "src_mask": np.ones_like(src),
                                           "tgt": dec[:, :t + 1]}, model.params)
        np.testing.assert_allclose(logits, full["logits"][:, -1], atol=1e-4, err_msg=f"step {t}")
    # a second prompt of another length reuses the split, with its own decoder sizes
    res2 = generate(ex, src[:1, :3], 3, decoder_start=1)
    full = generate(ex, src[:1, :3], 3, decoder_start=1, use_cache=False)
    assert res2.ids.tolist() == full.ids.tolist()


ALIBI = """
config { d = 16  heads = 4  vocab = 32  n_ctx = 24 }
model bloom(ids: int[B, T], mask: int[B, T]) {
    param wte: float[vocab, d] = normal(0.7)
    x = LayerNorm(embedding(ids, wte)) as ln_emb
    repeat 2 as layers {
        h = LayerNorm(x) as ln_1
        x = x + Attention(h, heads, causal=true, mask=mask,
                          score_bias=alibi(h, heads=heads, symmetric=SYM)) as attn
        x = x + FFN(LayerNorm(x) as ln_2, 4 * d, act="gelu") as mlp
    }
    h = LayerNorm(x) as ln_f
    logits = h @ transpose(wte)
    return logits
}
"""


@pytest.mark.parametrize("symmetric", [False, True])
def test_alibi_cached_step_equals_full_forward(tmp_path, symmetric):
    model = _load(tmp_path, ALIBI.replace("SYM", str(symmetric).lower()), seed=2)
    ex = executor(model.graph, model.params)
    prompt = np.array([[5, 17, 3, 9], [1, 30, 30, 2]])
    res = generate(ex, prompt, 8, keep_logits=True)
    assert res.cached and not res.warnings
    seq = np.concatenate([prompt, res.ids], axis=1)
    for t, logits in enumerate(res.logits):
        s = seq[:, :4 + t]
        full = run_reference(model.graph, {"ids": s, "mask": np.ones_like(s)}, model.params)
        np.testing.assert_allclose(logits, full["logits"][:, -1], atol=1e-4, err_msg=f"step {t}")
    # the bias is what the test checks: without it the logits differ
    plain = _load(tmp_path, ALIBI.replace(
        ",\n                          score_bias=alibi(h, heads=heads, symmetric=SYM)", ""),
        "plain.arch", seed=2)
    s = seq[:, :8]
    without = run_reference(plain.graph, {"ids": s, "mask": np.ones_like(s)}, plain.params)
    full = run_reference(model.graph, {"ids": s, "mask": np.ones_like(s)}, model.params)
    assert np.abs(without["logits"] - full["logits"]).max() > 1e-2


LEARNED_BIAS = """
config { d = 8  heads = 2  vocab = 16  n_ctx = 12 }
model m(ids: int[B, T], mask: int[B, T]) {
    param wte: float[vocab, d] = normal(0.7)
    param scores: float[1, heads, 1, 1] = normal(1.0)
    x = embedding(ids, wte)
    x = x + Attention(RMSNorm(x), heads, causal=true, mask=mask, score_bias=scores) as attn
    logits = RMSNorm(x) @ transpose(wte)
    return logits
}
"""


def test_bias_not_from_positions_falls_back_to_recomputation(tmp_path):
    model = _load(tmp_path, LEARNED_BIAS)
    ex = executor(model.graph, model.params)
    res = generate(ex, np.array([[1, 2, 3]]), 4, keep_logits=True)
    assert not res.cached and "score bias computed from positions" in res.warnings[0]
    seq = np.concatenate([[[1, 2, 3]], res.ids], axis=1)
    full = run_reference(model.graph, {"ids": seq[:, :6], "mask": np.ones((1, 6), np.int64)},
                         model.params)
    np.testing.assert_allclose(res.logits[-1], full["logits"][:, -1], atol=1e-4)


def test_switch_capacity_is_a_stated_caveat_of_cached_decoding():
    # capacity counts per forward: one-token steps route alone, unlike a full re-forward
    if not (FIXTURES / "switch" / "io.npz").is_file():
        pytest.skip("no fixture for switch")
    model = archc.load(ROOT / "examples" / "switch.arch", weights=FIXTURES / "switch")
    ids = np.load(FIXTURES / "switch" / "io.npz")["input_ids"][:1]
    res = model.generate(ids, 3)
    assert res.cached and len(res.warnings) == 1 and "expert capacity" in res.warnings[0]
    assert model.generate(ids, 3, use_cache=False).warnings == []
