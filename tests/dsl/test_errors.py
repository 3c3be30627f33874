"""Every bad .arch input gets an exact, rendered `ArchError`: file:line:col, the source line,
a caret under the span, and the hint. One case per kind of mistake; the CLI side (exit
codes, no traceback) is in tests/e2e/test_cli_errors.py."""
from __future__ import annotations

import pytest

from archc.dsl.errors import ArchError, ArchErrors
from archc.dsl.lower import lower
from archc.dsl.parser import parse

DEEP = "config { d = " + "-" * 3000 + "1 }\nmodel m(x: float[T, 4]) { return x }\n"

# (name, source, rendered error with {f} for the file's path)
CASES = [
    ("syntax_multi", """
model m(x: float[T, 4]) {
    y = relu(x,, 2)
    z = gelu(y) ;
    w = x
    return z
}
block f(x {
    return x
}
""",
     (
        '{f}:2:16: error: unexpected `,`\n'
        '        y = relu(x,, 2)\n'
        '                   ^\n'
        '{f}:3:17: error: unexpected character `;`\n'
        '        z = gelu(y) ;\n'
        '                    ^\n'
        'hint: statements need no `;`: put each on its own line\n'
        '{f}:7:11: error: unexpected `{`; expected `)`, `,`, `:` or `=`\n'
        '    block f(x {\n'
        '              ^\n'
        '3 errors\n'
     )),
    ("dangling_operator", """
model m(x: float[T, 4]) {
    y = x +
    z = relu(x)
    return z
}
""",
     (
        '{f}:3:7: error: unexpected `=`\n'
        '        z = relu(x)\n'
        '          ^\n'
        'hint: line 2 ends with `+`, so the expression continues onto line 3; finish it there\n'
     )),
    ("unclosed_paren", """
model m(x: float[T, 4]) {
    w = relu(
    return w
}
""",
     (
        '{f}:3:5: error: unexpected `return`\n'
        '        return w\n'
        '        ^^^^^^\n'
        'hint: the `(` at line 2, column 13 is never closed\n'
     )),
    ("unclosed_brace", """
model m(x: float[T, 4]) {
    y = x
""",
     (
        '{f}:2:10: error: unexpected end of file\n'
        '        y = x\n'
        '             ^\n'
        'hint: the `{` at line 1, column 25 is never closed\n'
     )),
    ("missing_operator", """
model m(x: float[T, 4]) {
    y = x x
    return y
}
""",
     (
        '{f}:3:5: error: unexpected `return`; expected `,` or `=`\n'
        '        return y\n'
        '        ^^^^^^\n'
        'hint: `x` at line 2, column 11 starts a new statement; is an operator missing before it?\n'
     )),
    ("single_quotes", """
model m(x: float[T, 4]) {
    y = 'relu'
    return x
}
""",
     (
        "{f}:2:9: error: unexpected character `'`\n"
        "        y = 'relu'\n"
        '            ^\n'
        'hint: strings use double quotes\n'
     )),
    ("unknown_op", """
model m(x: float[T, 4]) {
    return rellu(x)
}
""",
     (
        '{f}:2:12: error: unknown op or block `rellu`\n'
        '        return rellu(x)\n'
        '               ^^^^^\n'
        'hint: did you mean `relu`?\n'
     )),
    ("unknown_name", """
model m(x: float[T, 4]) {
    h = relu(x)
    return relu(hh)
}
""",
     (
        '{f}:3:17: error: unknown name `hh`\n'
        '        return relu(hh)\n'
        '                    ^^\n'
        'hint: did you mean `h`?\n'
     )),
    ("unknown_block", """
block Mlp(x) { return relu(x) }
model m(x: float[T, 4]) {
    return Mpl(x)
}
""",
     (
        '{f}:3:12: error: unknown op or block `Mpl`\n'
        '        return Mpl(x)\n'
        '               ^^^\n'
        'hint: did you mean `Mlp`?\n'
     )),
    ("unknown_config_const", """
config { d_model = 4  d_ff = 4 * d_modle }
model m(x: float[T, d_model]) { return x }
""",
     (
        '{f}:1:34: error: unknown config constant `d_modle`\n'
        '    config { d_model = 4  d_ff = 4 * d_modle }\n'
        '                                     ^^^^^^^\n'
        'hint: did you mean `d_model`?\n'
     )),
    ("wrong_kwarg", """
model m(x: float[T, 4]) {
    return softmax(x, axs=0)
}
""",
     (
        '{f}:2:23: error: softmax() has no argument `axs`\n'
        '        return softmax(x, axs=0)\n'
        '                          ^^^\n'
        'hint: did you mean `axis`?\n'
     )),
    ("too_many_args_op", """
model m(x: float[T, 4]) {
    return relu(x, x)
}
""",
     (
        '{f}:2:20: error: relu() takes at most 1 argument, got 2\n'
        '        return relu(x, x)\n'
        '                       ^\n'
        'hint: usage: relu(x)\n'
     )),
    ("too_many_args_block", """
block f(x) { return x }
model m(x: float[T, 4]) {
    return f(x, x)
}
""",
     (
        '{f}:3:17: error: f() takes 1 argument, got 2\n'
        '        return f(x, x)\n'
        '                    ^\n'
        'hint: defined at {f}:1:1\n'
     )),
    ("missing_arg_block", """
block f(x, y) { return x + y }
model m(x: float[T, 4]) {
    return f(x)
}
""",
     (
        '{f}:3:12: error: f() is missing argument `y`\n'
        '        return f(x)\n'
        '               ^^^^\n'
        'hint: defined at {f}:1:12\n'
     )),
    ("layer_wrong_kwarg", """
model m(x: float[T, 4]) {
    return LayerNorm(x, epsilon=1e-6)
}
""",
     (
        '{f}:2:25: error: LayerNorm() has no argument `epsilon`\n'
        '        return LayerNorm(x, epsilon=1e-6)\n'
        '                            ^^^^^^^\n'
        'hint: did you mean `eps`?\n'
     )),
    ("layer_argument_type", """
model m(x: float[T, 4]) {
    return LayerNorm(x, "1e-5")
}
""",
     (
        '{f}:2:25: error: LayerNorm(): `eps` must be a number, got the string \'1e-5\'\n'
        '        return LayerNorm(x, "1e-5")\n'
        '                            ^^^^^^\n'
        'hint: usage: LayerNorm(x, eps=1e-05, bias=true)\n'
     )),
    ("op_attribute_unusable", """
model m(x: float[T, 4]) {
    return reshape(x, [-1e300 * 1e300, 2])
}
""",
     (
        '{f}:2:12: error: reshape: cannot use these arguments (shape=[-inf, 2]): cannot convert '
        'float infinity to integer\n'
        '        return reshape(x, [-1e300 * 1e300, 2])\n'
        '               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
        'hint: usage: reshape(x, shape=None)\n'
     )),
    ("zero_size_parameter", """
config { d_model = 0 }
model m(x: float[T, 4]) {
    return Linear(x, d_model)
}
""",
     (
        '{f}:3:12: error: Linear: `out` must be a positive whole number, got 0\n'
        '        return Linear(x, d_model)\n'
        '               ^^^^^^^^^^^^^^^^^^\n'
     )),
    ("zero_size_declared_parameter", """
model m(x: float[T, 4]) {
    param W: float[4, 0]
    return x @ W
}
""",
     (
        '{f}:2:5: error: parameter `W` has a zero size in [4, 0]\n'
        '        param W: float[4, 0]\n'
        '        ^^^^^^^^^^^^^^^^^^^^\n'
        'hint: a layer of width 0 computes nothing; check the sizes\n'
     )),
    ("duplicate_block", """
block f(x) { return x }
block f(x) { return relu(x) }
model m(x: float[T, 4]) { return f(x) }
""",
     (
        '{f}:2:1: error: block `f` is defined twice\n'
        '    block f(x) { return relu(x) }\n'
        '    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
        'note: first defined at {f}:1:1\n'
     )),
    ("duplicate_config", """
config {
    d = 4
    d = 8
}
model m(x: float[T, d]) { return x }
""",
     (
        '{f}:3:5: error: `d` is defined twice in config\n'
        '        d = 8\n'
        '        ^^^^^\n'
        'note: first defined at {f}:2:5\n'
     )),
    ("duplicate_layer_name", """
model m(x: float[T, 4]) {
    a = LayerNorm(x) as ln
    b = LayerNorm(a) as ln
    return b
}
""",
     (
        '{f}:3:9: error: the name `ln` is already used in this scope\n'
        '        b = LayerNorm(a) as ln\n'
        '            ^^^^^^^^^^^^^^^^^^\n'
        'note: first used at {f}:2:9\n'
        'hint: give each layer its own name with `as`\n'
     )),
    ("duplicate_formal", """
block f(x, x) { return x }
model m(x: float[T, 4]) { return f(x, x) }
""",
     (
        '{f}:1:12: error: `f` has two parameters named `x`\n'
        '    block f(x, x) { return x }\n'
        '               ^\n'
        'note: first declared at {f}:1:9\n'
     )),
    ("duplicate_model", """
model m(x: float[T, 4]) { return x }
model m(x: float[T, 4]) { return relu(x) }
""",
     (
        '{f}:2:1: error: model `m` is defined twice\n'
        '    model m(x: float[T, 4]) { return relu(x) }\n'
        '    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
        'note: first defined at {f}:1:1\n'
     )),
    ("shape_mismatch", """
model m(x: float[T, 4]) {
    param W: float[6, 8]
    return x @ W
}
""",
     (
        '{f}:3:12: error: matmul: inner dimensions differ: [T, 4] @ [6, 8] (4 vs 6)\n'
        '        return x @ W\n'
        '               ^^^^^\n'
        'note: `a` is float[T, 4], from {f}:1:9\n'
        'note: `b` is float[6, 8], from {f}:2:5\n'
     )),
    ("dims_cannot_unify", """
model m(x: float[T, 4], y: float[S, 4]) {
    return x + y
}
""",
     (
        '{f}:2:12: error: add: shapes [T, 4] and [S, 4] do not broadcast: dimension -2 is T in one and S in the other\n'
        '        return x + y\n'
        '               ^^^^^\n'
        'note: `a` is float[T, 4], from {f}:1:9\n'
        'note: `b` is float[S, 4], from {f}:1:25\n'
     )),
    ("non_integer_size", """
config { d = 10 / 4 }
model m(x: float[T, d]) { return x }
""",
     (
        '{f}:2:21: error: a dimension must be a whole number, got the number 2.5\n'
        '    model m(x: float[T, d]) { return x }\n'
        '                        ^\n'
     )),
    ("negative_size", """
config { d = 2 - 6 }
model m(x: float[T, 4]) {
    param W: float[4, d]
    return x @ W
}
""",
     (
        '{f}:3:23: error: a dimension must not be negative, got -4\n'
        '        param W: float[4, d]\n'
        '                          ^\n'
     )),
    ("division_by_zero", """
config {
    n_head = 0
    d_head = 64 / n_head
}
model m(x: float[T, 4]) { return x }
""",
     (
        '{f}:3:14: error: division by zero\n'
        '        d_head = 64 / n_head\n'
        '                 ^^^^^^^^^^^\n'
     )),
    ("huge_number", """
config { d = 10**100 }
model m(x: float[T, d]) { return x }
""",
     (
        '{f}:1:14: error: number too large: 10 ** 100 exceeds 9223372036854775807 (int64)\n'
        '    config { d = 10**100 }\n'
        '                 ^^^^^^^\n'
     )),
    ("huge_power", """
config { d = 2 ** 10000000000 }
model m(x: float[T, 4]) { return x }
""",
     (
        '{f}:1:14: error: number too large: 2 ** 10000000000 exceeds 9223372036854775807 (int64)\n'
        '    config { d = 2 ** 10000000000 }\n'
        '                 ^^^^^^^^^^^^^^^^\n'
     )),
    ("huge_literal", """
config { d = 123456789012345678901234567890 }
model m(x: float[T, 4]) { return x }
""",
     (
        '{f}:1:14: error: number too large: 123456789012345678901234567890 exceeds 9223372036854775807 (int64)\n'
        '    config { d = 123456789012345678901234567890 }\n'
        '                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
        'hint: whole numbers are int64; write a float (e.g. 1e30) for a larger value\n'
     )),
    ("huge_repeat", """
model m(x: float[T, 4]) {
    repeat 1000000000 as layers {
        x = relu(x)
    }
    return x
}
""",
     (
        '{f}:2:12: error: repeat count 1,000,000,000 is too large (at most 10,000)\n'
        '        repeat 1000000000 as layers {\n'
        '               ^^^^^^^^^^\n'
        'hint: a real model has at most a few hundred layers\n'
     )),
    ("deep_nesting", DEEP,
     (
        '{f}:1:309: error: expression nested too deeply (more than 150 levels)\n'
        '    ...----------------------------------------------------------------------------------------------------...\n'
        '                                                         ^\n'
        'hint: split it into several statements with names for the parts\n'
     )),
    ("block_calls_itself", """
block f(x) { return f(x) }
model m(x: float[T, 4]) { return f(x) }
""",
     (
        '{f}:1:21: error: block `f` calls itself\n'
        '    block f(x) { return f(x) }\n'
        '                        ^^^^\n'
        'hint: use `repeat N as name { ... }` to stack layers\n'
     )),
]


@pytest.mark.parametrize("source, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rendered_error(arch_file, source, expected):
    path = arch_file(source)
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.render() + "\n" == "".join(expected).replace("{f}", str(path))


def test_independent_syntax_errors_are_reported_together():
    src = "model m(x: float[T, 4]) {\n    a = x +* 2\n    b = relu(x\n    c = (x\n}\n"
    with pytest.raises(ArchErrors) as e:
        parse(src, "m.arch")
    assert [(err.span.line, err.span.col) for err in e.value.errors] == [(2, 12), (4, 5), (5, 1)]


def test_recovery_adds_no_follow_on_errors():
    # one real mistake per statement; every other line is fine, so exactly 3 errors
    lines = ["model m(x: float[T, 4]) {"]
    for i in range(12):
        lines.append(f"    y{i} = relu(x)" if i % 4 else f"    y{i} = relu(x,, {i})")
    lines += ["    return y1", "}"]
    with pytest.raises(ArchErrors) as e:
        parse("\n".join(lines) + "\n", "m.arch")
    assert [err.span.line for err in e.value.errors] == [2, 6, 10]


def test_recovery_keeps_braces_balanced():
    # the bad `layer` header's body is skipped whole; its `}` must not close the model
    src = ("model m(x: float[T, 4]) {\n    layer a b {\n        y = x\n    }\n"
           "    z = relu(x\n    return x\n}\nmodel n(x: float[T]) { return x }\n")
    with pytest.raises(ArchErrors) as e:
        parse(src, "m.arch")
    assert [(err.span.line, err.message) for err in e.value.errors] == [
        (2, "unexpected `b`; expected `{`"), (6, "unexpected `return`")]


def test_error_count_is_bounded():
    src = "model m(x: float[T, 4]) {\n" + "    y = x +* 1\n" * 100 + "    return x\n}\n"
    with pytest.raises(ArchErrors) as e:
        parse(src, "m.arch")
    assert len(e.value.errors) == 20


def test_a_valid_file_still_parses_after_the_recovery_machinery():
    items = parse("model m(x: float[T, 4]) {\n    y = x +\n        relu(x)\n    return y\n}\n")
    assert items[0].name == "m"


def test_deep_but_reasonable_nesting_is_fine(arch_file):
    depth = 40
    src = f"model m(x: float[T, 4]) {{ return {'relu(' * depth}x{')' * depth} }}\n"
    g = lower(arch_file(src))
    assert sum(1 for n in g.topo() if g.node(n).op == "relu") == depth


def test_many_nested_repeats_hit_the_node_bound(arch_file, monkeypatch):
    import archc.dsl.lowering.builder as builder
    monkeypatch.setattr(builder, "MAX_NODES", 500)
    path = arch_file("""
        model m(x: float[T, 4]) {
            repeat 100 as a {
                repeat 100 as b { x = relu(x) }
            }
            return x
        }
    """)
    with pytest.raises(ArchError) as e:
        lower(path)
    # said after the inner repeat's first iteration (one node), not after building 500
    assert e.value.message == ("the model would grow past 500 graph nodes: this repeat adds "
                               "1 per iteration and runs 100 times, inside repeats that run "
                               "it 100 times")
    assert (e.value.span.line, e.value.span.col) == (3, 9)


def test_a_repeat_whose_iterations_grow_hits_the_node_bound(arch_file, monkeypatch):
    # the outer repeat's first iteration cannot foretell the others (n changes); the inner
    # one, run with n = 256, can
    import archc.dsl.lowering.builder as builder
    monkeypatch.setattr(builder, "MAX_NODES", 500)
    path = arch_file("""
        config { k = 1 }
        model m(x: float[T, 4]) {
            n = k
            repeat 100 as a {
                n = n * 2
                repeat n as b { x = relu(x) }
            }
            return x
        }
    """)
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message == ("the model would grow past 500 graph nodes: this repeat adds "
                               "1 per iteration and runs 256 times")
    assert (e.value.span.line, e.value.span.col) == (6, 9)


def test_a_repeat_whose_iterations_shrink_is_not_refused(arch_file, monkeypatch):
    # 100 x 64 nodes if the first iteration were every iteration; 63 in truth
    import archc.dsl.lowering.builder as builder
    monkeypatch.setattr(builder, "MAX_NODES", 500)
    path = arch_file("""
        model m(x: float[T, 4]) {
            n = 64
            repeat 100 as a {
                n = n // 2
                repeat n as b { x = relu(x) }
            }
            return x
        }
    """)
    g = lower(path)
    assert sum(1 for n in g.topo() if g.node(n).op == "relu") == 63


def test_a_layer_looping_over_a_huge_count_hits_the_node_bound(arch_file, monkeypatch):
    # found by the long fuzzer: `experts = 1000000000` made lowering run for minutes
    import archc.dsl.lowering.builder as builder
    monkeypatch.setattr(builder, "MAX_NODES", 300)
    path = arch_file("""
        model m(x: float[T, 8]) {
            return MoE(x, 1000000000, 16, top_k=2)
        }
    """)
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message == "the model grows past 300 graph nodes"


def test_block_call_chain_depth_is_bounded(arch_file):
    n = 60
    src = "".join(f"block b{i}(x) {{ return b{i + 1}(x) }}\n" for i in range(n))
    src += f"block b{n}(x) {{ return x }}\nmodel m(x: float[T, 4]) {{ return b0(x) }}\n"
    with pytest.raises(ArchError) as e:
        lower(arch_file(src))
    assert e.value.message == "blocks call each other more than 50 deep"


def test_include_errors(tmp_path):
    (tmp_path / "a.arch").write_text('include "b.arch"\nmodel m(x: float[T, 4]) { return x }\n')
    (tmp_path / "b.arch").write_text('include "a.arch"\n')
    with pytest.raises(ArchError) as e:
        lower(tmp_path / "a.arch")
    assert e.value.render() == (
        f"{tmp_path / 'b.arch'}:1:1: error: include cycle: a.arch -> b.arch -> a.arch\n"
        '    include "a.arch"\n'
        "    ^^^^^^^^^^^^^^^^\n"
        "hint: an included file must not include (directly or not) the file that includes it")
    (tmp_path / "c.arch").write_text('include "missing.arch"\nmodel m(x: float[T]) { return x }\n')
    with pytest.raises(ArchError) as e:
        lower(tmp_path / "c.arch")
    assert e.value.render() == (
        f"{tmp_path / 'c.arch'}:1:1: error: included file not found: {tmp_path / 'missing.arch'}\n"
        '    include "missing.arch"\n'
        "    ^^^^^^^^^^^^^^^^^^^^^^\n"
        "hint: include paths are relative to the including file")


def test_diamond_include_of_a_config_is_one_definition(tmp_path):
    (tmp_path / "cfg.arch").write_text("config { d = 4 }\n")
    (tmp_path / "l.arch").write_text('include "cfg.arch"\n')
    (tmp_path / "r.arch").write_text('include "cfg.arch"\n')
    (tmp_path / "m.arch").write_text(
        'include "l.arch"\ninclude "r.arch"\nmodel m(x: float[T, d]) { return x }\n')
    assert lower(tmp_path / "m.arch").meta["config"]["d"] == 4


def test_binary_file_is_not_parsed(tmp_path):
    p = tmp_path / "bin.arch"
    p.write_bytes(b"\x93NUMPY\xff\xfe\x00")
    with pytest.raises(ArchError) as e:
        lower(p)
    assert e.value.render() == f"error: {p} is not UTF-8 text (byte 0); an .arch file is plain text"


def test_independent_semantic_errors_are_reported_together(arch_file):
    path = arch_file("""
        config {
            d = 4
            bad = d / 0
            e = bad * 2
        }
        block Mlp(x) {
            h = rellu(x)
            return h @ x
        }
        model m(x: float[T, 4]) {
            a = relu(xx)
            b = a + 1
            c = Mlp(x) as mlp
            repeat 3 as layers {
                y = softmax(x, axs=1)
                z = y + c
            }
            return x @ x
        }
    """)
    with pytest.raises(ArchErrors) as e:
        lower(path)
    # each mistake once: no error for `e`, `b`, `h @ x` or `z` (they use failed names), and
    # the repeat's error is not repeated per iteration
    assert [(err.span.line, err.message) for err in e.value.errors] == [
        (3, "division by zero"),
        (11, "unknown name `xx`"),
        (7, "unknown op or block `rellu`"),
        (15, "softmax() has no argument `axs`"),
        (18, "matmul: inner dimensions differ: [T, 4] @ [T, 4] (4 vs T)"),
    ]


def test_code_after_return_is_reported_with_the_other_errors(arch_file):
    path = arch_file("""
        model m(x: float[T, 4]) {
            a = relu(xx)
            return x
            b = x
        }
    """)
    with pytest.raises(ArchErrors) as e:
        lower(path)
    assert [err.message for err in e.value.errors] == ["unknown name `xx`",
                                                       "code after `return` never runs"]


def test_a_mistyped_layer_named_with_as_gets_its_did_you_mean(tmp_path):
    src = tmp_path / "m.arch"
    src.write_text("model m(x: float[B, T, 8]) {\n    return Atention(x, 2) as attn\n}\n")
    with pytest.raises(ArchError) as e:
        lower(src)
    assert e.value.render() == (
        f"{src}:2:12: error: unknown layer or block `Atention`\n"
        "        return Atention(x, 2) as attn\n"
        "               ^^^^^^^^\n"
        "hint: did you mean `Attention`?")


def test_a_byte_order_mark_is_accepted_and_carets_stay_put(tmp_path):
    src = tmp_path / "m.arch"
    src.write_bytes(b"\xef\xbb\xbfmodel m(x: float[T, 4]) {\n    return relu(y)\n}\n")
    with pytest.raises(ArchError) as e:
        lower(src)
    assert "        return relu(y)\n                    ^" in e.value.render()
    src.write_bytes(b"\xef\xbb\xbfmodel m(x: float[T, 4]) {\n    return relu(x)\n}\n")
    assert lower(src).name == "m"


def test_closest_names_the_nearest_known_name():
    from archc.dsl.errors import closest, did_you_mean
    assert closest("n_layr", ["n_layer", "n_head"]) == "n_layer"
    assert closest("RMSnorm", ["RMSNorm", "LayerNorm"]) == "RMSNorm"
    assert closest("zzz", ["n_layer"]) is None
    assert did_you_mean("n_layr", ["n_layer"]) == "did you mean `n_layer`?"
