"""Literals, names and sizes are checked in the grammar layer, where they are written: each
bad one is a located error (several reported together), and big sources are refused before
they are parsed."""
from __future__ import annotations

import pytest

from archc.dsl import parser, program
from archc.dsl.errors import MAX_ERRORS, ArchError, ArchErrors
from archc.dsl.lower import lower
from archc.dsl.parser import parse

HEAD = "model m(x: float[T, 4]) {\n"


def error_of(src: str) -> ArchError:
    with pytest.raises(ArchError) as e:
        parse(src, "t.arch")
    return e.value


def where(err: ArchError) -> tuple:
    return err.span.line, err.span.col, err.span.end_col


def string_value(literal: str) -> str:
    (m,) = parse(HEAD + f"    y = f(x, s={literal})\n    return y\n}}\n", "t.arch")
    return m.body[0].value.kwargs[0].value.value


@pytest.mark.parametrize("literal, value", [
    (r'"a\"b"', 'a"b'), (r'"a\\b"', "a\\b"), (r'"a\nb"', "a\nb"), (r'"\t"', "\t"),
    (r'"\u00e9t\u00e9"', "été"), ('"été"', "été"), (r'"a\/b"', "a/b"),
])
def test_string_escapes_and_text(literal, value):
    assert string_value(literal) == value


@pytest.mark.parametrize("source, message, span", [
    ('include "a\\x.arch"\n', "unknown escape `\\x` in a string", (1, 11, 13)),
    ('include "a\\N"\n', "unknown escape `\\N` in a string", (1, 11, 13)),
    ('include "a\\u12"\n', "`\\u` needs four hex digits, e.g. \\u00e9", (1, 11, 15)),
    ('include "a\\u0000b.arch"\n', "a string cannot hold a NUL character", (1, 9, 24)),
    ('include "a\x00b.arch"\n', "a string cannot hold a NUL character", (1, 9, 19)),
    ('include "\\ud800"\n', "a string cannot hold half of a surrogate pair (\\uD800-\\uDFFF)",
     (1, 9, 17)),
    (HEAD + "    y = x * " + "9" * 5000 + "\n    return y\n}\n",
     "number too large: a 5000-digit number exceeds 9223372036854775807 (int64)", (2, 13, 5013)),
    (HEAD + "    y = x * 9223372036854775808\n    return y\n}\n",
     "number too large: 9223372036854775808 exceeds 9223372036854775807 (int64)", (2, 13, 32)),
    (HEAD + "    y = x * 1e400\n    return y\n}\n",
     "number too large: 1e400 is beyond the range of a float", (2, 13, 18)),
    (HEAD + f'    y = f(x, s="{"a" * 5000}")\n    return y\n}}\n',
     "string of 5,000 characters; a string may hold at most 4,096", (2, 17, 57)),
    (HEAD + f"    y = x + {'a' * 300}\n    return y\n}}\n",
     "a name of 300 characters; names are at most 256", (2, 13, 14)),
])
def test_bad_literals_are_located_errors(source, message, span):
    err = error_of(source)
    assert err.message == message
    assert where(err) == span


def test_the_largest_whole_number_and_float_are_fine():
    (m,) = parse(HEAD + "    y = x * 9223372036854775807 * 1.7e308\n    return y\n}\n", "t.arch")
    assert m.body[0].value.left.right.value == 2 ** 63 - 1


def test_bad_literals_are_reported_together():
    err = error_of('include "\\x"\ninclude "\\q"\nconfig { a = 1e999 }\n')
    assert isinstance(err, ArchErrors)
    assert [e.span.line for e in err.errors] == [1, 2, 3]


@pytest.mark.parametrize("rule, message, span", [
    ('"h.{i}.{i}.w" -> layers.{i}.w', "`{i}` appears twice in `h.{i}.{i}.w`", (2, 12, 15)),
    ('"h.{i}.w" -> layers.{i}.{i}.w', "`{i}` appears twice in `layers.{i}.{i}.w`", (2, 29, 32)),
    ('"h.{i.w" -> layers.{i}.w', "`{i.w` in `h.{i.w` is not an index pattern", (2, 8, 12)),
    ('"h.{}.w" -> layers.{i}.w', "`{}` in `h.{}.w` is not an index pattern", (2, 8, 10)),
    ('"h.i}.w" -> layers.{i}.w', "`}` in `h.i}.w` is not an index pattern", (2, 9, 10)),
])
def test_weights_templates_are_checked_when_parsed(rule, message, span):
    err = error_of(f"weights hf {{\n    {rule}\n}}\n")
    assert err.message == message
    assert where(err) == span


def test_a_source_past_the_token_bound_is_refused_before_parsing(monkeypatch):
    def no_parse(*a, **k):
        raise AssertionError("parsed")
    monkeypatch.setattr(parser, "parse_recovering", no_parse)
    lines = parser.MAX_TOKENS // 6 + 10
    err = error_of(HEAD + "    x = relu(x)\n" * lines + "    return x\n}\n")
    assert err.message.startswith(f"more than {parser.MAX_TOKENS:,} tokens")
    # the first token past the bound: 11 tokens on line 1, then 6 a line
    line = 2 + (parser.MAX_TOKENS - 11) // 6
    assert err.span.line == line and err.span.col > 1


def test_tokens_are_counted_over_a_model_and_its_includes(tmp_path):
    body = "    x = relu(x)\n" * (parser.MAX_TOKENS // 6 // 2 + 100)
    (tmp_path / "a.arch").write_text(f"block A(x) {{\n{body}    return x\n}}\n")
    (tmp_path / "b.arch").write_text(f"block B(x) {{\n{body}    return x\n}}\n")
    (tmp_path / "m.arch").write_text('include "a.arch"\ninclude "b.arch"\n'
                                     "model m(x: float[T, 4]) { return B(A(x)) }\n")
    with pytest.raises(ArchError) as e:
        lower(tmp_path / "m.arch")
    assert e.value.message.startswith("more than")
    assert e.value.span.file.endswith("b.arch")


def test_a_huge_file_is_refused_after_reading_its_bound(tmp_path):
    path = tmp_path / "big.arch"
    with open(path, "wb") as f:      # 10 GB, sparse: reading it whole would not end
        f.write(HEAD.encode() + b"    # ")
        f.truncate(10 ** 10)
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message.startswith(f"{path} is larger than 1 MiB")
    assert e.value.span.line == 2


def test_an_included_file_is_parsed_once(tmp_path, monkeypatch):
    # every file includes the next one twice: 2^30 parses if each include parsed again
    depth = 30
    for i in range(depth):
        (tmp_path / f"a{i}.arch").write_text(f'include "a{i + 1}.arch"\n' * 2)
    (tmp_path / f"a{depth}.arch").write_text("block B(x) { return x }\n")
    (tmp_path / "m.arch").write_text('include "a0.arch"\nmodel m(x: float[T, 4]) '
                                     "{ return B(x) }\n")
    calls = []
    real = program.parse
    monkeypatch.setattr(program, "parse", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    lower(tmp_path / "m.arch")
    assert len(calls) == depth + 2


def test_syntax_errors_stop_at_the_bound():
    err = error_of(HEAD + "    y = relu(x,, 2)\n" * 5000 + "    return x\n}\n")
    assert isinstance(err, ArchErrors) and len(err.errors) == MAX_ERRORS
    assert err.render().endswith(f"{MAX_ERRORS} errors (archc stops there; fix these first)")


def test_lowering_errors_stop_at_the_bound(arch_file):
    path = arch_file(HEAD + "".join(f"    y{i} = relu(z{i})\n" for i in range(2000))
                     + "    return x\n}\n")
    with pytest.raises(ArchErrors) as e:
        lower(path)
    assert len(e.value.errors) == MAX_ERRORS
    assert e.value.errors[-1].message == f"unknown name `z{MAX_ERRORS - 1}`"


@pytest.mark.parametrize("value, why", [
    (10 ** 400, "a whole number of 401 digits exceeds 9223372036854775807 (int64)"),
    (float("nan"), "nan is not a finite number"),
    (float("inf"), "inf is not a finite number"),
    ("a\x00b", "a string cannot hold a NUL character"),
    ("s" * 5000, "a string of 5,000 characters (at most 4,096)"),
    ([1, 2], "a list is not a number, bool or string"),
])
def test_config_values_from_outside_are_bounded_like_literals(arch_file, value, why):
    # --set, the API's config= and a checkpoint's config.json all arrive here (found by
    # the config.json fuzz target: 10**400 reached a float conversion in the lowering)
    path = arch_file("config { scale = 1.0 }\n"
                     "model m(x: float[T, 4]) {\n    return x * scale\n}\n")
    with pytest.raises(ArchError) as e:
        lower(path, config={"scale": value})
    assert e.value.message.endswith(f": {why}")
    assert e.value.message.startswith("cannot set `scale` to ")


def test_a_float_too_large_for_float32_is_said_where_it_is_used(arch_file):
    path = arch_file("model m(x: float[T, 4]) {\n    return x * 1e300\n}\n")
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message == "1e+300 does not fit in float32 (it becomes infinite)"
    assert (e.value.span.line, e.value.span.col) == (2, 16)
