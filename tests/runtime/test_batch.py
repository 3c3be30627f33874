"""runtime/batch.py: which items may share a call, and the round trip of their arrays
through one (gather, then scatter back) with padding, grouping and items cut across calls."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import archc
from archc.dsl.lower import lower
from archc.runtime.batch import Layout, gather, join, layout_of, plan, scatter

ROOT = Path(__file__).resolve().parents[2]
MASKS = ("mask", "attention_mask")


def layout(source_or_example: str, arch_file=None) -> Layout:
    path = ROOT / "examples" / f"{source_or_example}.arch" if arch_file is None \
        else arch_file(source_or_example)
    return layout_of(lower(path, None, {}), MASKS)


@pytest.mark.parametrize("example, batch, pad", [
    ("minilm_embed", "B", "T"),       # a mask input: padded along T, the embedding has no T
    ("bert", "B", "T"),
    ("gpt2", "B", None),              # no mask: items of one length share a call
    ("ffn", "T", None),               # rows are positions: nothing reaches across them
    ("retro", None, None),            # neighbours (B, C, K, R): C is not a batch of items
])
def test_layout_of_the_examples(example, batch, pad):
    lay = layout(example)
    assert (lay.batch, lay.pad) == (batch, pad)


def test_bert_cuts_hidden_back_along_t():
    lay = layout("bert")
    assert lay.pad_axes == {"ids": (1,), "mask": (1,), "types": (1,)}
    assert lay.out_pad_axes == {"hidden": (1,), "pooled": ()}


@pytest.mark.parametrize("body", [
    "y = x - mean(x, axis=0, keepdims=true)",        # a reduction over B, kept as an axis
    "y = softmax(x, axis=0)",                        # normalised across rows
    "y = x + ones_like(x)",                          # positions along B: counted as reaching
    "y = reshape(transpose(x), [B, 4])",             # B moved off the leading axis
])
def test_an_op_reaching_across_rows_runs_each_item_alone(arch_file, body):
    src = f"model m(x: float[B, 4]) {{\n    {body}\n    return y\n}}\n"
    assert layout(src, arch_file).batch is None


def test_an_output_without_the_batch_axis_runs_each_item_alone(arch_file):
    src = "model m(x: float[B, 4]) {\n    return sum(x, axis=0)\n}\n"
    assert layout(src, arch_file).batch is None


def items_of(lengths, rows=1, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(4, 100, size=(rows, n))
        out.append({"ids": ids, "mask": np.ones_like(ids), "types": np.zeros_like(ids)})
    return out


def test_plan_sorts_by_length_and_cuts_items_across_calls():
    lay = layout("minilm_embed")
    items = items_of([5, 2, 9]) + items_of([3], rows=5)
    calls = plan(lay, items, batch_size=4)
    assert [[(p.item, p.start, p.stop) for p in c] for c in calls] == [
        [(1, 0, 1), (3, 0, 3)], [(3, 3, 5), (0, 0, 1), (2, 0, 1)]]
    # every row of every item once
    rows = sorted((p.item, r) for c in calls for p in c for r in range(p.start, p.stop))
    assert rows == sorted([(0, 0), (1, 0), (2, 0)] + [(3, r) for r in range(5)])


def test_gather_pads_and_scatter_cuts_back():
    lay = layout("bert")
    items = items_of([2, 4])
    call = plan(lay, items, batch_size=8)[0]
    inputs = gather(lay, items, call, {"ids": 0})
    assert inputs["ids"].shape == (2, 4)
    assert inputs["mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    hidden = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    pooled = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
    back = scatter(lay, items, call, {"hidden": hidden, "pooled": pooled})
    assert back[0]["hidden"].shape == (1, 2, 3) and back[1]["hidden"].shape == (1, 4, 3)
    assert np.array_equal(back[0]["hidden"][0], hidden[0, :2])
    assert np.array_equal(join(lay, [back[1]])["pooled"], pooled[1:])


def test_without_a_mask_only_equal_shapes_share_a_call():
    lay = layout("gpt2")
    items = [{"ids": np.zeros((1, n), np.int64)} for n in (3, 5, 3, 5, 3)]
    calls = plan(lay, items, batch_size=8)
    assert [[p.item for p in c] for c in calls] == [[0, 2, 4], [1, 3]]


@pytest.mark.parametrize("executor", ["reference", "numba"])
def test_batched_rows_equal_rows_run_alone(executor):
    """The property the job relies on, on the tiny BERT fixture: items padded into one
    call give what each gives alone (to float rounding)."""
    model = archc.load(ROOT / "examples" / "minilm_embed.arch",
                       weights=ROOT / "tests" / "fixtures" / "hf" / "bert")
    lay = layout_of(model.graph, MASKS)
    items = items_of([3, 7, 1, 12, 7], rows=2, seed=1)
    parts: dict[int, list] = {i: [] for i in range(len(items))}
    for call in plan(lay, items, batch_size=3):
        outs = scatter(lay, items, call, model.run(gather(lay, items, call), executor=executor))
        for p, o in zip(call, outs):
            parts[p.item].append((p.start, o))
    for i, item in enumerate(items):
        got = join(lay, [o for _, o in sorted(parts[i], key=lambda t: t[0])])["embedding"]
        want = model.run(item, executor=executor)["embedding"]
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) < 1e-6


def test_the_executor_keeps_programs_within_a_byte_budget():
    """A job meeting many shapes keeps the latest programs, not every one."""
    model = archc.load(ROOT / "examples" / "minilm_embed.arch",
                       weights=ROOT / "tests" / "fixtures" / "hf" / "bert")
    ex = model.compiled(1)
    sizes = []
    for n in (2, 3, 4, 3):
        ex.run(items_of([n])[0])
        sizes.append(ex.program({"B": 1, "T": n}).arena_bytes)
    assert len(ex._programs) == 3                       # T = 2, 4, 3 (3 most recent)
    ex.trim_programs(sizes[2] + sizes[3])
    assert [dict(k[0])["T"] for k in ex._programs] == [4, 3]
    ex.trim_programs(0)
    assert [dict(k[0])["T"] for k in ex._programs] == [3]    # the latest always stays
