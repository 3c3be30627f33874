"""The parser tables kept on disk: JSON that round-trips Lark's tables, and a file that is
missing, corrupt or foreign is rebuilt, never trusted."""
import json

import pytest

from archc.dsl import cache, parser


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHC_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_codec_keeps_int_keys_and_tuples():
    value = {"a": [1, (2, "x"), {3: (None, True)}], "~": 1.5, 4: []}
    text = json.dumps(cache._encode(value))
    assert cache._decode(json.loads(text)) == value


def test_tables_written_then_read_back(cache_dir):
    grammar = parser.GRAMMAR.read_text()
    opts = dict(propagate_positions=True, maybe_placeholders=True)
    built = cache.cached_lark(grammar, **opts)
    (path,) = cache_dir.glob("lark-*.json")
    json.loads(path.read_text())                     # plain JSON, nothing executable
    loaded = cache.cached_lark(grammar, **opts)
    text = open("examples/gpt2.arch").read()
    assert loaded.parse(text) == built.parse(text)
    # another grammar (or other options) gets its own file
    cache.cached_lark(grammar, propagate_positions=True)
    assert len(list(cache_dir.glob("lark-*.json"))) == 2


@pytest.mark.parametrize("junk", ["", "{", '{"data": 1, "memo": 2}', "[1, 2]"])
def test_a_bad_cache_file_is_rebuilt(cache_dir, junk):
    grammar = parser.GRAMMAR.read_text()
    cache.cached_lark(grammar)
    (path,) = cache_dir.glob("lark-*.json")
    path.write_text(junk)
    lark = cache.cached_lark(grammar)
    assert lark.parse("config { d = 1 }\n") is not None
    json.loads(path.read_text())                     # and the file is good again
