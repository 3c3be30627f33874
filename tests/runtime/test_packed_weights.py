"""int8 and bf16 weights through the whole runtime: which parameters are packed, that the
executor computes exactly what the reference computes from the packed values (prompt and
cached decoding, tied heads, T5's split), that no float32 copy is kept or made while
loading, and how close to float32 the logits stay (a random GPT-2, every golden family)."""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import archc
from archc.cli import main
from archc.runtime.generate import generate
from archc.runtime.packed import PackedWeight, packing_plan
from archc.runtime.reference import run_reference

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hf"
KINDS = ["int8", "bf16"]
GPT2 = dict(n_layer=2, d_model=64, n_head=4, vocab=100, n_ctx=64)


def _packed_names(params) -> set[str]:
    return {k for k, v in params.items() if isinstance(v, PackedWeight)}


def test_packing_plan_takes_product_weights_and_a_tied_head():
    gpt2 = archc.load(ROOT / "examples" / "gpt2.arch", config=GPT2, weights_dtype="int8")
    layer = {f"layers.0.{p}.weight" for p in ("attn.q", "attn.k", "attn.v", "attn.o",
                                              "mlp.up", "mlp.down")}
    assert layer <= _packed_names(gpt2.params)
    # the tied head is the embedding, stored by rows (it is looked up too); the learned
    # positions are only looked up, norms and biases are vectors: float32
    assert isinstance(gpt2.params["wte"], PackedWeight) and not gpt2.params["wte"].transposed
    assert {"wpe.weight", "layers.0.ln_1.weight", "layers.0.mlp.up.bias"}.isdisjoint(
        _packed_names(gpt2.params))
    llama = archc.load(ROOT / "examples" / "llama.arch", weights_dtype="bf16", config=dict(
        n_layer=1, d_model=32, n_head=4, n_kv_head=2, d_ff=48, vocab=64))
    names = _packed_names(llama.params)
    assert "lm_head.weight" in names and "embed.weight" not in names   # untied: a lookup
    assert "layers.0.mlp.gate.weight" in names
    mixtral = archc.load(ROOT / "examples" / "mixtral.arch", weights=FIXTURES / "mixtral")
    plan = packing_plan(mixtral.compiled().graph)
    assert "layers.0.attn.q.weight" in plan
    assert not any(".moe." in name for name in plan)        # experts and router: float32


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_equals_the_reference_on_the_packed_values(kind):
    m = archc.load(ROOT / "examples" / "gpt2.arch", config=GPT2, seed=1, weights_dtype=kind)
    ids = np.random.default_rng(0).integers(0, 100, (2, 9))
    ref = m.run(ids=ids, executor="reference")["logits"]   # dequantises, in float32
    np.testing.assert_allclose(m.run(ids=ids, executor="numba")["logits"], ref, atol=1e-5)
    ex = m.compiled()
    # no float32 matrix kept but the learned positions (a lookup table)
    assert [k for k, v in ex.weights.items() if np.ndim(v) == 2 and not isinstance(
        v, PackedWeight)] == ["wpe.weight"]
    assert all(isinstance(v, PackedWeight) for v in ex.folded_values.values() if np.ndim(v) == 2)
    # the executor option packs float32 parameters the same way loading does
    fp32 = archc.load(ROOT / "examples" / "gpt2.arch", config=GPT2, seed=1)
    other = archc.api.executor(fp32.graph, dict(fp32.params), weights_dtype=kind)
    np.testing.assert_array_equal(other.run({"ids": ids})["logits"],
                                  ex.run({"ids": ids})["logits"])
    # cached decoding (matrix-vector kernels, the packed lookup) equals full recomputation
    res = generate(ex, ids, 5, keep_logits=True)
    seq = np.concatenate([ids, res.ids], axis=1)
    for t, logits in enumerate(res.logits):
        full = run_reference(m.graph, {"ids": seq[:, :ids.shape[1] + t]}, m.params)
        np.testing.assert_allclose(logits, full["logits"][:, -1], atol=1e-5, err_msg=str(t))


def test_t5_packed_decodes_like_its_reference():
    m = archc.load(ROOT / "examples" / "t5.arch", weights=FIXTURES / "t5", weights_dtype="int8")
    z = np.load(FIXTURES / "t5" / "io.npz")
    ids = z["input_ids"][:1]
    res = m.generate(ids, 4, keep_logits=True)
    dec = np.concatenate([[[0]], res.ids], axis=1)
    for t, logits in enumerate(res.logits):
        d = dec[:, :t + 1]
        full = run_reference(m.graph, {"ids": ids, "mask": np.ones_like(ids), "decoder_ids": d,
                                       "decoder_mask": np.ones_like(d)}, m.params)
        np.testing.assert_allclose(logits, full["logits"][:, -1], atol=1e-4, err_msg=str(t))


def _teacher_forced(model, prompt, continuation):
    """Logits predicting each token of `continuation` after `prompt` (one forward pass)."""
    if "decoder_ids" in model.inputs:
        dec = np.concatenate([[0], continuation[:-1]])[None]
        inputs = {"ids": prompt, "mask": np.ones_like(prompt), "decoder_ids": dec,
                  "decoder_mask": np.ones_like(dec)}
        return model.run(inputs, executor="numba")["logits"][0]
    seq = np.concatenate([prompt[0], continuation[:-1]])[None]
    inputs = {"ids": seq, **({"mask": np.ones_like(seq)} if "mask" in model.inputs else {})}
    return model.run(inputs, executor="numba")["logits"][0, prompt.shape[1] - 1:]


def test_random_gpt2_logits_close_to_float32_over_128_greedy_steps(tmp_path):
    # logits spread like a trained model's (std ~3): the embedding scaled up
    cfg = dict(GPT2, vocab=256, n_ctx=160)
    fp32 = archc.load(ROOT / "examples" / "gpt2.arch", config=cfg, seed=5)
    params = {k: v * 20 if k == "wte" else v for k, v in fp32.params.items()}
    save_file(params, str(tmp_path / "w.safetensors"))
    fp32 = archc.load(ROOT / "examples" / "gpt2.arch", config=cfg,
                      weights=tmp_path / "w.safetensors")
    prompt = np.array([[1, 2, 3]])
    greedy = fp32.generate(prompt, 128).ids[0]
    want = _teacher_forced(fp32, prompt, greedy)
    assert want.std() > 2
    for kind, max_diff, agree in (("int8", 0.2, 0.97), ("bf16", 0.08, 0.97)):
        m = archc.load(ROOT / "examples" / "gpt2.arch", config=cfg,
                       weights=tmp_path / "w.safetensors", weights_dtype=kind)
        got = _teacher_forced(m, prompt, greedy)
        assert np.abs(got - want).max() <= max_diff, kind
        assert np.mean(got.argmax(-1) == greedy) >= agree, kind


# the smallest gap between transformers' two best logits at which int8 / bf16 must still
# choose its token: the fixtures' models are peaked on purpose, so their logits move by up
# to ~0.4 (int8) and ~0.15 (bf16) from float32's, and some greedy steps are closer than
# that (the tightest: 0.009)
MARGIN = {"int8": 1.0, "bf16": 0.5}
GREEDY = sorted(p.parent.name for p in FIXTURES.glob("*/io.npz")
                if "greedy_ids" in np.load(p).files)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", GREEDY)
def test_family_fixture_greedy_choices_survive_packing(family, kind):
    """Transformers' greedy continuation, fed back: at every step where its top-2 gap is
    at least MARGIN, the packed model picks transformers' token."""
    z = np.load(FIXTURES / family / "io.npz")
    example = json.loads((FIXTURES / family / "meta.json").read_text()).get("example", family)
    m = archc.load(ROOT / "examples" / f"{example}.arch", weights=FIXTURES / family,
                   weights_dtype=kind)
    assert len(GREEDY) >= 10 and _packed_names(m.params)
    logits = _teacher_forced(m, z["input_ids"][:1], z["greedy_ids"])
    top2 = np.sort(z["greedy_logits"], axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= MARGIN[kind]
    assert clear.sum() >= 5
    np.testing.assert_array_equal(logits.argmax(-1)[clear], z["greedy_ids"][clear])


LOADED = """
config { d = 128  n_layer = 4  weights_dtype = "int8" }
model m(x: float[T, d]) {
    repeat n_layer as layers {
        x = x + FFN(x, 4 * d) as mlp
    }
    return y = x
}
"""


def test_loading_packs_each_matrix_as_it_is_read(tmp_path):
    """The float32 matrices never all exist: at the peak, the packed parameters plus one
    float32 tensor being packed (here the config constant asks for int8)."""
    (tmp_path / "m.arch").write_text(LOADED)
    fp32 = archc.load(tmp_path / "m.arch", weights_dtype="float32", seed=2)
    save_file(fp32.params, str(tmp_path / "w.safetensors"))
    tracemalloc.start()
    try:
        m = archc.load(tmp_path / "m.arch", weights=tmp_path / "w.safetensors")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _packed_names(m.params) == {f"layers.{i}.mlp.{p}.weight" for i in range(4)
                                       for p in ("up", "down")}
    held = sum(v.nbytes for v in m.params.values())
    float32 = sum(v.nbytes for v in fp32.params.values())
    largest = max(v.nbytes for v in fp32.params.values())
    assert held < 0.3 * float32
    assert peak <= held + 2 * largest + (512 << 10), (peak, held, largest)
    x = np.random.default_rng(0).standard_normal((5, 128)).astype(np.float32)
    np.testing.assert_allclose(m.run(x=x, executor="numba")["y"], m.run(x=x)["y"], atol=1e-5)
    # --weights-dtype over the config constant
    again = archc.load(tmp_path / "m.arch", weights_dtype="float32", seed=2)
    assert not _packed_names(again.params)


def test_config_constant_and_flag_are_checked(tmp_path, capsys):
    (tmp_path / "bad.arch").write_text(LOADED.replace('"int8"', '"int4"'))
    assert main(["check", str(tmp_path / "bad.arch")]) == 2
    err = capsys.readouterr().err
    assert "bad.arch:2:32: error: weights_dtype must be one of 'float32', 'int8', 'bf16', " \
           "got 'int4'" in err
    (tmp_path / "m.arch").write_text(LOADED)
    np.save(tmp_path / "x.npy", np.ones((2, 128), np.float32))
    assert main(["run", str(tmp_path / "m.arch"), "-i", str(tmp_path / "x.npy"),
                 "--weights-dtype", "int4"]) == 2
    assert "weights_dtype 'int4' is not one of float32, int8, bf16" in capsys.readouterr().err


def test_cli_generate_and_stats_with_packed_weights(tmp_path, capsys):
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3]]))
    sets = [a for k, v in GPT2.items() for a in ("--set", f"{k}={v}")]
    outs = {}
    for kind in ("float32", "int8", "bf16"):
        assert main(["generate", "examples/gpt2.arch", *sets, "--input",
                     str(tmp_path / "ids.npy"), "-n", "4", "--weights-dtype", kind]) == 0
        outs[kind] = capsys.readouterr().out.split()
        assert len(outs[kind]) == 4
        assert main(["stats", "examples/gpt2.arch", *sets, "--weights-dtype", kind]) == 0
        line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("weights:")]
        assert len(line) == 1 and f"{kind} " in line[0], line
    # GPT-2 at these sizes: its matrices (and the tied head) packed, the rest float32
    assert main(["stats", "examples/gpt2.arch", *sets, "--weights-dtype", "int8"]) == 0
    text = capsys.readouterr().out
    matrices = 2 * (4 * 64 * 64 + 2 * 64 * 256) + 100 * 64
    assert f"int8 {matrices:,} values" in text
