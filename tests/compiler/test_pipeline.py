"""The whole pipeline: outputs unchanged on every example, fusion counts on a 12-layer
GPT-2 stack, pass selection, the verifier between passes, CLI flags, golden dumps."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archc.cli import main
from archc.compiler.dump import dump_text
from archc.compiler.pipeline import PASSES, run_pipeline, stats_text
from archc.compiler.ir import PassResult
from archc.compiler.verify import VerifyError
from archc.dsl.errors import ArchError
from archc.dsl.lower import lower

from .conftest import assert_same_outputs, op_counts, random_inputs, small_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.arch"))
GOLDEN = Path(__file__).with_name("golden")

GPT12 = """
config {
    n_layer = 12
    d = 16
    n_ctx = 32
}
model gpt(x: float[B, T, d]) {
    repeat n_layer as layers {
        h = x + Attention(LayerNorm(x) as ln_1, heads=2, causal=true) as attn
        layer mlp {
            m = Linear(gelu(Linear(LayerNorm(h) as ln_2, 4 * d) as fc), d) as proj
        }
        x = h + m
    }
    return LayerNorm(x) as ln_f
}
"""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_full_pipeline_preserves_every_example(path):
    g = lower(path, None, small_config(path))
    res = run_pipeline(g, verify=True)
    assert res.graph is not g
    assert_same_outputs(g, res.graph, random_inputs(g))


def test_gpt2_stack_fusion_counts(arch_file):
    g = lower(arch_file(GPT12))
    res = run_pipeline(g, verify=True)
    counts = op_counts(res.graph)
    assert counts["add_layernorm"] == 24 and counts["layernorm"] == 1   # layers.0.ln_1 reads x
    assert counts["ffn"] == 12 and counts["gelu"] == 0
    # lower_layers writes the 12 attention ops out as primitives; fuse_attention recomposes
    assert res.result("lower_layers").stats == {"attention": 12}
    assert res.result("fuse_attention").stats["sdpa"] == 12
    assert counts["attention"] == 12 and counts["softmax"] == counts["matmul"] == 0
    assert res.coverage() == {"residual+norm": (24, 24), "FFN": (12, 12),
                              "attention": (12, 12), "QKV projections": (12, 12)}
    assert "fusion coverage: 24/24 residual+norm fused, 12/12 FFN fused, 12/12 attention " \
           "fused, 12/12 QKV projections fused" in stats_text(res)
    assert_same_outputs(g, res.graph)


def test_passes_are_pure(arch_file):
    g = lower(arch_file(GPT12))
    before = dump_text(g)
    run_pipeline(g)
    assert dump_text(g) == before


def test_stop_after_and_subsets(arch_file):
    g = lower(arch_file(GPT12))
    res = run_pipeline(g, stop_after="fuse_residual_norm")
    assert [n for n, _ in res.steps] == ["lower_layers", "simplify", "fuse_residual_norm"]
    assert op_counts(res.graph)["ffn"] == 0
    res = run_pipeline(g, only=["fuse_ffn", "simplify"])
    assert [n for n, _ in res.steps] == ["simplify", "fuse_ffn"]   # pipeline order
    res = run_pipeline(g, skip=("fuse_residual_norm",))
    assert op_counts(res.graph)["add_layernorm"] == 0
    with pytest.raises(ArchError, match="no pass named `fuse_fnn`"):
        run_pipeline(g, only=["fuse_fnn"])


def test_verifier_names_the_broken_pass_and_the_ones_before(arch_file, monkeypatch):
    g = lower(arch_file(GPT12))

    def broken(graph):
        out = graph.copy()
        nid = next(n.id for n in out.nodes() if n.op == "gelu")
        out.set_node(out.node(nid).with_(shape=(3, 3)))
        return PassResult(out, True)
    monkeypatch.setitem(PASSES, "fuse_ffn", broken)
    with pytest.raises(VerifyError) as e:
        run_pipeline(g, verify=True)
    msg = str(e.value)
    assert "after pass `fuse_ffn` (passes before it: lower_layers, simplify, " \
           "fuse_residual_norm)" in msg
    # the gelu's consumer no longer type-checks; its span and scope are named
    assert "model.arch:10:" in msg and "layers.0.mlp.proj" in msg
    assert "input has 3 features but weight [64, 16] expects 64" in msg


def test_cli_dump_after_stats_explain(arch_file, capsys):
    path = arch_file(GPT12)
    assert main(["dump", str(path), "--after", "fuse_ffn", "--stats", "--explain",
                 "--verify", "--layer", "layers.1"]) == 0
    out = capsys.readouterr().out
    assert "ffn(" in out and "add_layernorm(" in out
    # attention is written out until fuse_attention puts it back together
    assert "attention(" not in out and "softmax(" in out and "attention_mask(" in out
    assert "passes: lower_layers -> simplify -> fuse_residual_norm -> fuse_ffn\n" in out
    assert "fusion coverage: 24/24 residual+norm fused, 12/12 FFN fused" in out
    assert "fuse_ffn: no rejected candidates" in out


def test_cli_no_pass_and_passes(arch_file, capsys):
    path = arch_file(GPT12)
    assert main(["dump", str(path), "--no-fuse_ffn", "-O", "--layer", "layers.0"]) == 0
    out = capsys.readouterr().out
    assert "ffn(" not in out and "add_layernorm(" in out
    assert main(["dump", str(path), "--passes", "simplify,fuse_ffn", "--layer", "layers.0"]) == 0
    out = capsys.readouterr().out
    assert "ffn(" in out and "add_layernorm(" not in out
    assert main(["dump", str(path), "--passes", "simplfy"]) == 2
    assert "no pass named `simplfy`" in capsys.readouterr().err


def test_cli_after_unknown_pass_suggests_the_closest(arch_file, capsys):
    # like --passes: our error with a did-you-mean hint, not argparse's list of choices
    assert main(["dump", str(arch_file(GPT12)), "--after", "fuse_attn"]) == 2
    err = capsys.readouterr().err
    assert "error: --after: no pass named `fuse_attn`" in err
    assert "hint: did you mean `fuse_attention`?" in err and "invalid choice" not in err


def test_cli_check_dump_stats_do_not_import_numba(arch_file):
    path = arch_file(GPT12)
    code = ("import sys\nfrom archc.cli import main\n"
            f"assert main(['dump', {str(path)!r}, '-O', '--kv', '--stats', '--verify']) == 0\n"
            f"assert main(['stats', {str(path)!r}, '--seq', '8']) == 0\n"
            "assert 'numba' not in sys.modules, 'numba was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_stats_command(arch_file, capsys):
    path = arch_file(GPT12)
    assert main(["stats", str(path), "--seq", "8"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # params of one layer: 2 LN (2*16*2) + 4 attn linears (4*(256+16)) + fc (16*64+64)
    # + proj (64*16+16) = 64 + 1088 + 1088 + 1040 = 3280
    assert lines["layers.3"][1] == "3,280"
    assert lines["total"][1] == f"{12 * 3280 + 32:,}"
    # KV per token per layer: K and V, 2 heads * 8 dims * 4 bytes each, + an 8-byte position
    assert lines["layers.3"][4] == f"{2 * 2 * 8 * 4 + 8:,}"
    assert lines["total"][4] == f"{12 * 136:,}"
    # total KV at S_max = 8 tokens, B=1: 12 layers * (K+V 2*2*8*8*4 + pos 8*8) bytes,
    # each piece aligned to 64 bytes
    assert lines["total"][5] == f"{12 * (1024 + 64):,}"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("ARCHC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"run with ARCHC_UPDATE_GOLDEN=1 to create {path}"
    assert text == path.read_text(), \
        f"{path} differs; if the change is intended, rerun with ARCHC_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name,config", [("ffn", {}), ("gpt2", {"n_layer": 2, "d_model": 32,
                                                                "n_head": 4, "vocab": 50,
                                                                "n_ctx": 16}),
                                          ("llama", {"n_layer": 2, "d_model": 32, "n_head": 4,
                                                     "n_kv_head": 2, "d_ff": 48,
                                                     "vocab": 50})])
def test_golden_dump_after_pipeline(name, config, capsys):
    path = ROOT / "examples" / f"{name}.arch"
    args = ["dump", str(path), "-O", "--stats", "--explain", "--kv", "--max-seq", "16",
            "--expand", "--lanes", "2"]                     # the same plan on any machine
    for k, v in config.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    text = capsys.readouterr().out.replace(str(path), f"examples/{name}.arch")
    _golden(name, text)
