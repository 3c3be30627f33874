"""dsl/weightmap.py: a weights section's `if`s chosen by config constants, `prefix` lines
(names with or without a base model's prefix), literals, and choosing a section."""
from __future__ import annotations

import pytest

from archc.dsl.errors import ArchError
from archc.dsl.lower import lower
from archc.dsl.parser import parse
from archc.dsl.weightmap import key_matches, literal, spellings

MODEL = """
config {
    tied = false
    d = 4
}
model m(ids: int[B, T]) {
    x = Embedding(ids, 8, d) as embed
    if not tied {
        y = Linear(x, 8, bias=false) as lm_head
    } else {
        y = x
    }
    return y
}
weights hf {
    config tied = "tie_word_embeddings"
    prefix "model."
    "model.embed.weight" -> embed.weight
    if tied {
        "lm_head.weight" -> skip
    } else {
        "lm_head.weight" -> transpose(lm_head.weight)
    }
}
"""


def section(src: str = MODEL):
    return next(i for i in parse(src) if type(i).__name__ == "Weights")


def test_if_resolves_to_the_branch_taken(arch_file):
    path = arch_file(MODEL)
    untied = lower(path).meta["weight_maps"]["hf"]
    assert [r.key for r in untied.rules] == ["model.embed.weight", "lm_head.weight"]
    assert type(untied.rules[1].dests[0]).__name__ == "Transpose"
    # tied: the untaken branch names `lm_head.weight`, which then does not exist, unchecked
    tied = lower(path, config={"tied": True}).meta["weight_maps"]["hf"]
    assert type(tied.rules[1].dests[0]).__name__ == "Skip"


def test_a_prefix_matches_names_with_or_without_it(arch_file):
    wmap = lower(arch_file(MODEL)).meta["weight_maps"]["hf"]
    assert wmap.prefixes == ("model.",)
    for name in ("model.embed.weight", "embed.weight"):
        rule, _ = wmap.match(name)
        assert rule.key == "model.embed.weight"
    assert wmap.match("transformer.embed.weight") == (None, None)
    assert spellings("h.0", ["transformer."]) == ["h.0", "transformer.h.0"]
    assert spellings("transformer.h.0", ["transformer."]) == ["transformer.h.0", "h.0"]


def test_key_matches_counts_every_branch_and_spelling():
    names = ["embed.weight", "lm_head.weight", "other"]
    assert key_matches(section(), names) == 2


def test_a_non_bool_weights_condition_is_an_error(arch_file):
    path = arch_file(MODEL.replace("if tied {", "if d {"))
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message == "`if` needs true or false, got the size 4"
    assert e.value.span.line == 18


def test_config_lines_stay_outside_if(arch_file):
    path = arch_file(MODEL.replace('"lm_head.weight" -> skip', 'config d = "hidden"'))
    with pytest.raises(ArchError) as e:
        lower(path)
    assert e.value.message.startswith("unexpected `config`")


@pytest.mark.parametrize("text, value", [
    ("none", None), ("false", False), ("-2", -2), ('"gelu"', "gelu"),
    ('["relu", 1.5]', ["relu", 1.5]),
])
def test_literals(text, value):
    item = section(f'weights w {{ require "k" == {text} }}')
    assert literal(item.requires[0].value) == value


def test_a_name_is_not_a_literal():
    item = section('weights w { config c = "k", null=d_model }')
    with pytest.raises(ArchError) as e:
        literal(item.configs[0].null)
    assert e.value.message.startswith("expected a literal value here")


def test_require_takes_equality_or_membership():
    item = section('weights w { require "act" in ["gelu", "relu"] }')
    assert item.requires[0].among
    with pytest.raises(ArchError) as e:
        parse('weights w {\n    require "alibi" != true\n}\n', "w.arch")
    assert e.value.message == "`require` takes `==` or `in`, not `!=`"
    assert (e.value.span.line, e.value.span.col) == (2, 21)
