"""runtime/checkpoint.py's reading of config.json: a JSON null (off, or the default), an
absent key, fallbacks, and `require` lines that turn a value the model cannot compute into
an error naming the key."""
from __future__ import annotations

import pytest

from archc.dsl.errors import ArchError
from archc.dsl.parser import parse
from archc.runtime.checkpoint import config_overrides, config_value

SECTION = """
weights hf {
    config window = "sliding_window", null=none
    config head_dim = "head_dim"
    config theta = "rope_parameters.rope_theta"
    config theta = "rope_theta"
    require "hidden_act" == "silu"
    require "rope_scaling" == none
    require "act" in ["gelu", "gelu_new"]
}
"""


def section():
    return parse(SECTION, "m.arch")[0]


def test_null_means_what_the_line_says_and_absent_keeps_the_default():
    out, notes = config_overrides(section(), {"sliding_window": None, "head_dim": None,
                                              "rope_theta": 1e6})
    assert out == {"window": None, "theta": 1e6}
    assert notes == ["config.json has no `head_dim`; `head_dim` keeps its default"]
    out, notes = config_overrides(section(), {"sliding_window": 4096})
    assert out == {"window": 4096}
    assert "`window`" not in " ".join(notes)


def test_the_first_present_key_wins_and_a_null_path_is_absent():
    out, _ = config_overrides(section(), {"rope_parameters": {"rope_theta": 5.0},
                                          "rope_theta": 7.0})
    assert out["theta"] == 5.0
    out, _ = config_overrides(section(), {"rope_parameters": None, "rope_theta": 7.0})
    assert out["theta"] == 7.0


def test_config_value_walks_dicts_and_lists():
    cfg = {"a": {"b": [1, 2]}, "n": None}
    assert config_value(cfg, "a.b.1") == 2
    assert config_value(cfg, "n") is None
    assert config_value(cfg, "a.c") is not None and config_value(cfg, "a.b.5") is not None


def test_a_required_value_passes_when_absent_or_equal():
    config_overrides(section(), {})
    config_overrides(section(), {"hidden_act": "silu", "rope_scaling": None, "act": "gelu_new"})


@pytest.mark.parametrize("cfg, message, line", [
    ({"hidden_act": "gelu"},
     'config.json sets `hidden_act` to "gelu"; this model computes only "silu"', 7),
    ({"rope_scaling": {"type": "llama3", "factor": 8.0}},
     'config.json sets `rope_scaling` to {"type": "llama3", "factor": 8.0}; this model '
     "computes only null", 8),
    ({"act": "relu"},
     'config.json sets `act` to "relu"; this model computes only "gelu" or "gelu_new"', 9),
    ({"hidden_act": True},
     'config.json sets `hidden_act` to true; this model computes only "silu"', 7),
])
def test_another_value_is_an_error_naming_the_key(cfg, message, line):
    with pytest.raises(ArchError) as e:
        config_overrides(section(), cfg)
    assert e.value.message == message
    assert (e.value.span.file, e.value.span.line) == ("m.arch", line)
