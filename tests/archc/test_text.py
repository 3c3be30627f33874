"""archc/text.py: texts_inputs tokenises many items in one call and pads each to its own
longest text, as the tokenizer pads one item's texts in a call of their own."""
import numpy as np
import pytest

import archc
from archc.importer import examples_dir
from archc.text import texts_inputs


@pytest.fixture
def tokenizer(tmp_path, bert_tokenizer):
    path = tmp_path / "tok.json"
    bert_tokenizer(path)
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.enable_padding(pad_id=1, pad_type_id=1, pad_token="[UNK]")   # a pad id of its own
    return tok


def by_the_tokenizer(tok, texts):
    # what the tokenizer itself makes of one item: its texts padded to their longest
    tok.enable_padding(pad_id=1, pad_type_id=1, pad_token="[UNK]")
    enc = tok.encode_batch(texts)
    return {"ids": np.array([e.ids for e in enc]),
            "mask": np.array([e.attention_mask for e in enc]),
            "types": np.array([e.type_ids for e in enc])}


def test_items_tokenised_together_are_padded_each_to_its_own_longest(tokenizer):
    graph = archc.load(examples_dir() / "minilm_embed.arch", config={
        "n_layer": 1, "d_model": 16, "n_head": 2, "d_ff": 32, "vocab": 16}).graph
    items = [["the cat sat on the mat", "a dog"], ["the cat"], ["a dog ran in the park"]]
    got = texts_inputs(graph, tokenizer, items, {})
    for texts, arrays in zip(items, got):
        want = by_the_tokenizer(tokenizer, texts)
        assert set(arrays) == {"ids", "mask", "types"}
        for name in arrays:
            assert arrays[name].dtype == np.int64
            np.testing.assert_array_equal(arrays[name], want[name])
    # the tokenizer keeps its pad id for the next call (padding is turned off for the call)
    assert tokenizer.padding["pad_id"] == 1
    again = texts_inputs(graph, tokenizer, items[:1], {})[0]
    np.testing.assert_array_equal(again["ids"], got[0]["ids"])
