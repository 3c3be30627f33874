"""The parser: every construct of the language, and spans on the AST."""
from __future__ import annotations

import pytest

from archc.dsl import ast
from archc.dsl.errors import ArchError, ArchErrors
from archc.dsl.parser import parse


def one_stmt(src: str):
    (model,) = parse("model m(x: float[T, 4]) {\n" + src + "\n}", "t.arch")
    return model.body[0]


def expr(src: str):
    return one_stmt(f"y = {src}").value


def test_top_level_items():
    items = parse('include "a.arch"\nconfig { d = 4 }\nblock B(x) { return x }\n'
                  'model m(x: float[T, d]) { return x }', "t.arch")
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["Include", "Config", "Block", "Block"]
    assert items[0].path == "a.arch"
    assert not items[2].is_model and items[3].is_model


def test_config_arithmetic_and_numbers():
    (cfg,) = parse("config {\n  d = 4 * 2 + 1\n  eps = 1e-5\n  r = .5\n  s = 2.\n}", "t.arch")
    d, eps, r, s = cfg.defs
    assert isinstance(d.value, ast.BinOp) and d.value.op == "+"
    assert eps.value.value == 1e-5 and isinstance(eps.value.value, float)
    assert r.value.value == 0.5 and s.value.value == 2.0


def test_operator_precedence():
    e = expr("a + b * c @ d")
    assert e.op == "+" and e.right.op == "@" and e.right.left.op == "*"
    e = expr("-a ** 2")
    assert isinstance(e, ast.Neg) and e.operand.op == "**"
    e = expr("(a + b) / c // 2")
    assert e.op == "//" and e.left.op == "/" and e.left.left.op == "+"


def test_calls_kwargs_and_as():
    e = expr("Attention(LayerNorm(x) as ln_1, heads=4, causal=true) as attn")
    assert isinstance(e, ast.Call) and e.func == "Attention" and e.as_name == "attn"
    assert e.args[0].as_name == "ln_1"
    assert [(k.name, type(k.value).__name__) for k in e.kwargs] == [("heads", "Num"),
                                                                      ("causal", "Bool")]


def test_literals():
    e = expr('f([[1, 2], [3, 4],], "s", none, false)')
    lst, s, n, b = e.args
    assert isinstance(lst, ast.ListLit) and len(lst.items) == 2
    assert s.value == "s" and isinstance(n, ast.NoneLit) and b.value is False
    assert expr("[]").items == ()


def test_index_and_slices():
    e = expr("x[:, 0, 1:3, :2]")
    assert isinstance(e, ast.Index)
    full, i, sl, head = e.subs
    assert isinstance(full, ast.SliceSub) and full.start is None and full.stop is None
    assert i.value == 0
    assert sl.start.value == 1 and sl.stop.value == 3
    assert head.start is None and head.stop.value == 2


def test_statements():
    (m,) = parse("""model m(x: float[T, 4]) {
    a, b = split(x, 2)
    param W: float[4, 4] = normal(0.1)
    param c = [1.0, 2.0]
    layer hidden { h = relu(x) }
    repeat n as layers { x = x }
    repeat 3 as more { x = x }
    repeat (2 * n) as extra { x = x }
    return y=h, x
}""", "t.arch")
    kinds = [type(s).__name__ for s in m.body]
    assert kinds == ["Assign", "ParamDecl", "ParamDecl", "LayerScope", "Repeat", "Repeat",
                     "Repeat", "Return"]
    assert m.body[0].targets == ("a", "b")
    assert m.body[1].type.dtype == "float" and m.body[2].type is None
    assert m.body[4].count.id == "n" and m.body[5].count.value == 3
    assert m.body[6].count.op == "*"
    ret = m.body[-1]
    assert [(i.name) for i in ret.items] == ["y", "x"]


def test_formals_types():
    (b,) = parse("block B(x: float64[B, T, d], n: int = 2, f: float, flag: bool = true,"
                 " y) { return x }", "t.arch")
    x, n, f, flag, y = b.formals
    assert isinstance(x.type, ast.TensorType) and x.type.dtype == "float64"
    assert [d.id for d in x.type.dims] == ["B", "T", "d"]
    assert isinstance(n.type, ast.ScalarType) and n.default.value == 2
    assert f.type.dtype == "float" and flag.default.value is True and y.type is None


def test_comments_and_free_layout():
    items = parse("# header\nmodel m(x: float[T, 4]) { y = relu(x) # trailing\n return y }",
                  "t.arch")
    assert len(items[0].body) == 2


def test_spans_point_at_source():
    (m,) = parse("model m(x: float[T, 4]) {\n    y = relu(x) + x\n    return y\n}", "f.arch")
    assign = m.body[0]
    assert (assign.span.file, assign.span.line, assign.span.col) == ("f.arch", 2, 5)
    call = assign.value.left
    assert (call.span.line, call.span.col, call.span.end_col) == (2, 9, 16)
    assert (call.func_span.col, call.func_span.end_col) == (9, 13)


def test_syntax_error_has_span_and_expected():
    with pytest.raises(ArchError) as e:
        parse("model m(x: float[T, 4]) {\n  y = relu(x\n  return y\n}", "f.arch")
    err = e.value
    assert err.span.line == 3 and err.span.col == 3
    assert err.message.startswith("unexpected `return`")


def test_keyword_used_as_name_is_a_syntax_error():
    with pytest.raises(ArchError) as e:
        parse("model m(x: float[T, 4]) {\n  layer = 3\n}", "f.arch")
    first = e.value.errors[0] if isinstance(e.value, ArchErrors) else e.value
    assert (first.span.line, first.span.col) == (2, 9)
