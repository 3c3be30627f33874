"""`archc export`: every example family with standard-op equivalents exports to a model that
passes onnx.checker's full check, and ONNX Runtime's outputs on it match archc's Numba
executor to 1e-4 (tiny Hugging Face checkpoints, tests/fixtures/hf); a decoder's decode
graph continues a prompt token by token through past_*/present_*; families with an op
that has no ONNX form are an exit-2 error naming it. Skipped without onnx/onnxruntime
(CI installs both: .ci/run)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import archc
from archc.cli import main
from archc.compiler.pipeline import run_pipeline

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from archc.onnx_export import export_graph  # noqa: E402  (needs onnx)

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "hf"
INPUTS = {"input_ids": "ids", "attention_mask": "mask", "decoder_input_ids": "decoder_ids",
          "global_attention_mask": "global_mask", "token_type_ids": "types"}
FIXTURES = ["bert", "falcon", "gpt2", "gpt_neox", "llama", "longformer", "mistral", "t5",
            "t5_gated"]
DECODERS = ["falcon", "gpt2", "gpt_neox", "llama", "mistral"]
NOT_EXPORTABLE = {"mixtral": "moe", "switch": "moe", "retro": "chunked_cross_attention",
                  "memory": "product_key_memory"}
PALM = dict(n_layer=1, n_head=2, head_dim=8, d_model=16, vocab=32)


def fixture_model(family: str):
    """The family's example with its tiny checkpoint, and inputs for it."""
    m = archc.load(ROOT / "examples" / f"{family}.arch", weights=FIX / family)
    io = np.load(FIX / family / "io.npz")
    feeds = {INPUTS[k]: io[k] for k in INPUTS if k in io and INPUTS[k] in m.inputs}
    for name in m.inputs:
        if name not in feeds:                    # masks: every token real; types: zeros
            like = feeds["decoder_ids" if name.startswith("decoder") else "ids"]
            feeds[name] = np.ones_like(like) if "mask" in name else np.zeros_like(like)
    return m, feeds


def compiled(m) -> "archc.dsl.graph.Graph":
    return run_pipeline(m.graph, skip=("plan_kv_cache", "plan_memory")).graph


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def assert_matches(m, model, feeds):
    onnx.checker.check_model(model, full_check=True)
    want = m.run(feeds, executor="numba")
    sess = session(model)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape, name
        np.testing.assert_allclose(got[name], w, atol=1e-4, rtol=0, err_msg=name)


@pytest.mark.parametrize("family", FIXTURES)
def test_family_exports_and_onnx_runtime_matches_archc(family):
    m, feeds = fixture_model(family)
    assert_matches(m, export_graph(compiled(m), m.params), feeds)


def test_palm_and_the_float64_ffn_example_match():
    palm = archc.load(ROOT / "examples" / "palm.arch", seed=1, config=PALM)
    assert_matches(palm, export_graph(compiled(palm), palm.params),
                   {"ids": np.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])})
    ffn = archc.load(ROOT / "examples" / "ffn.arch")
    assert_matches(ffn, export_graph(compiled(ffn), ffn.params),
                   {"x": np.load(ROOT / "examples" / "ffn_input.npy")})


def test_the_graph_as_written_exports_too():
    m, feeds = fixture_model("llama")
    assert_matches(m, export_graph(m.graph, m.params), feeds)


def test_names_scopes_and_symbolic_sizes():
    m, _ = fixture_model("gpt2")
    model = export_graph(compiled(m), m.params)
    ids = model.graph.input[0]
    assert ids.name == "ids" and [d.dim_param for d in ids.type.tensor_type.shape.dim] == \
        ["B", "T"]
    logits = next(o for o in model.graph.output if o.name == "logits")
    dims = logits.type.tensor_type.shape.dim
    assert dims[0].dim_param == "B" and dims[1].dim_param == "T" and dims[2].dim_value == 128
    names = [n.name for n in model.graph.node]
    assert any(n.startswith("/layers.1/attn/") for n in names)       # Netron's grouping
    assert any(n.startswith("/layers.0/mlp/") for n in names)
    inits = {t.name for t in model.graph.initializer}
    assert "layers.0.attn.q.weight" in inits and "wte" in inits       # weights by name
    typed = {v.name for v in model.graph.value_info}
    assert "layers.0.attn.o.linear" in typed                          # archc ids as names


@pytest.mark.parametrize("family", DECODERS)
def test_decode_graph_continues_a_prompt_token_by_token(family):
    m, feeds = fixture_model(family)
    ids = feeds["ids"]
    model = export_graph(compiled(m), m.params, decode=True)
    onnx.checker.check_model(model, full_check=True)
    sess = session(model)
    outs = [o.name for o in sess.get_outputs()]
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    assert [p.shape[2] for p in pasts] == ["P"] * len(pasts)
    assert len(pasts) == 2 * sum(1 for o in outs if o.startswith("present.") and
                                 o.endswith(".key"))
    want = m.run({"ids": ids}, executor="numba")["logits"]
    B, T = ids.shape
    past = {p.name: np.zeros([B, p.shape[1], 0, p.shape[3]], np.float32) for p in pasts}
    cut = T - 3
    res = dict(zip(outs, sess.run(None, {"ids": ids[:, :cut], **past})))    # P = 0: a prompt
    np.testing.assert_allclose(res["logits"], want[:, :cut], atol=1e-4, rtol=0)
    for t in range(cut, T):                                                  # one token each
        past = {k.replace("present.", "past_key_values."): v for k, v in res.items()
                if k.startswith("present.")}
        res = dict(zip(outs, sess.run(None, {"ids": ids[:, t:t + 1], **past})))
        np.testing.assert_allclose(res["logits"][:, 0], want[:, t], atol=1e-4, rtol=0)
        assert res["present.0.key"].shape[2] == t + 1


def test_cli_writes_both_graphs_with_external_weights_stored_once(tmp_path, capsys):
    out = tmp_path / "gpt2.onnx"
    assert main(["export", str(ROOT / "examples" / "gpt2.arch"), "--weights",
                 str(FIX / "gpt2"), "-o", str(out), "--external-data"]) == 0
    err = capsys.readouterr().err
    data = tmp_path / "gpt2.onnx.data"
    decode = tmp_path / "gpt2.decode.onnx"
    assert f"wrote {out}, {decode}, {data}" in err
    m, feeds = fixture_model("gpt2")
    weight_bytes = sum(np.asarray(v).nbytes for v in m.params.values())
    assert weight_bytes * 0.9 < data.stat().st_size < weight_bytes * 1.1      # once, not twice
    assert out.stat().st_size < 200_000                                       # the graph only
    onnx.checker.check_model(str(out), full_check=True)
    onnx.checker.check_model(str(decode), full_check=True)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"ids": feeds["ids"]})[0]
    np.testing.assert_allclose(got, m.run(feeds, executor="numba")["logits"], atol=1e-4)
    assert ort.InferenceSession(str(decode), providers=["CPUExecutionProvider"])


def test_cli_encoder_decoder_gets_no_decode_graph_and_says_why(tmp_path, capsys):
    out = tmp_path / "t5.onnx"
    assert main(["export", str(ROOT / "examples" / "t5.arch"), "-w", str(FIX / "t5"),
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: no decode graph:" in err and "cross-attention" in err
    assert out.exists() and not (tmp_path / "t5.decode.onnx").exists()


@pytest.mark.parametrize("family", sorted(NOT_EXPORTABLE))
def test_cli_an_op_with_no_onnx_form_is_exit_2_naming_it(family, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    # refused before any weight is made: these are full-size models (Mixtral: 47B)
    assert main(["export", str(ROOT / "examples" / f"{family}.arch"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot export to ONNX: op `{NOT_EXPORTABLE[family]}`" in err
    assert f"examples/{family}.arch:" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_never_overwrites_what_it_reads(tmp_path, capsys):
    model = tmp_path / "m.arch"
    model.write_text((ROOT / "examples" / "ffn.arch").read_text())
    before = model.read_bytes()
    assert main(["export", str(model), "-o", str(model)]) == 2
    assert "m.arch" in capsys.readouterr().err and model.read_bytes() == before


def test_cli_without_onnx_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(ROOT / "examples" / "ffn.arch"), "-o",
                 str(tmp_path / "f.onnx")]) == 2
    assert "pip install 'archc[onnx]'" in capsys.readouterr().err


def test_no_decode_graph_where_an_attention_is_not_cached(arch_file):
    from archc.dsl.errors import ArchError
    src = arch_file("""
        model m(ids: int[B, T]) {
            x = Embedding(ids, 16, 8) as emb
            x = x + Attention(x, 2, causal=true) as a1
            x = x + Attention(x, 2, causal=true, cache=false) as a2
            return y = x
        }
        """)
    m = archc.load(src)
    g = compiled(m)
    export_graph(g, m.params)                                      # the full graph is fine
    with pytest.raises(ArchError, match=r"no decode graph: `attention` \(a2\) is not a cached"):
        export_graph(g, m.params, decode=True)


def test_the_sentence_embedding_example_matches_with_padding():
    m = archc.load(ROOT / "examples" / "minilm_embed.arch", weights=FIX / "bert",
                   allow_missing=True)
    ids = np.array([[1, 5, 7, 9, 3, 0], [2, 4, 6, 0, 0, 0]])
    assert_matches(m, export_graph(compiled(m), m.params),
                   {"ids": ids, "mask": (ids != 0).astype(np.int64), "types": np.zeros_like(ids)})
