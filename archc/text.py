"""Text in for `archc run`: sentences through a Hugging Face tokenizer.json become the
model's token inputs, one batch row per text, padded to the longest.

    archc run examples/minilm_embed.arch --weights DIR --tokenizer DIR/tokenizer.json \
        --text "A sentence." --text "Another one."      # or --text-file lines.txt

The model's int inputs are filled by name: the token ids (`ids`, `input_ids`), the padding
mask (`mask`, `attention_mask`: 1 for real tokens) and the segment ids (`types`,
`token_type_ids`). Needs the `tokenizers` package (the `text` extra).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dsl.errors import ArchError
from .run_cmds import _tokenizer as load_tokenizer

# what the encoding gives, and the input names that take it
ROLES = {"ids": ("ids", "input_ids", "tokens"),
         "mask": ("mask", "attention_mask"),
         "types": ("types", "token_type_ids", "type_ids", "segments")}
MAX_TEXT_BYTES = 64_000_000


def read_texts(texts: list[str], text_file: str | None) -> list[str]:
    """--text items, then --text-file's lines (one item per line; blank lines skipped)."""
    out = list(texts)
    if text_file is not None:
        if not Path(text_file).exists():
            raise ArchError(f"--text-file: no such file: {text_file}")
        out += [line for line in read_lines(text_file, "--text-file") if line.strip()]
    return out


def read_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a regular file of at most MAX_TEXT_BYTES)."""
    from .dsl.files import open_regular
    with open_regular(Path(path), "text") as f:
        raw = f.read(MAX_TEXT_BYTES + 1)
    if len(raw) > MAX_TEXT_BYTES:
        raise ArchError(f"{what} {path} is over {MAX_TEXT_BYTES:,} bytes")
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise ArchError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None


def text_inputs(graph, tokenizer, texts: list[str], given: dict) -> dict:
    """The model's token inputs made from `texts`; {} when there are none. `tokenizer` is
    a tokenizer.json's path, or a tokenizer loaded by `load_tokenizer`."""
    if not texts:
        if tokenizer is not None:
            raise ArchError("--tokenizer encodes text: give it with --text TEXT or "
                            "--text-file FILE")
        return {}
    return texts_inputs(graph, tokenizer, [texts], given)[0]


def texts_inputs(graph, tokenizer, items: list[list[str]], given: dict) -> list[dict]:
    """text_inputs for each item (a non-empty list of texts, one batch row each, padded to
    the item's longest), every item's texts tokenised in one call (a batch job's shard:
    one call per file had cost as much as reading the file)."""
    if tokenizer is None:
        raise ArchError("--text needs a tokenizer to make token ids",
                        hint="--tokenizer tokenizer.json (a Hugging Face checkpoint folder "
                             "has one)")
    slots = _token_slots(graph, given)
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
    pad = tok.padding or {}
    # each item padded on the right to its own longest text, with the tokenizer's own pad
    # token (not to a fixed length); by hand, as one call padding every text to the
    # longest of all could take memory by the gigabyte (one long line among many short)
    fill = {"ids": pad.get("pad_id", 0), "mask": 0, "types": pad.get("pad_type_id", 0)}
    tok.no_padding()
    try:
        encodings = iter(tok.encode_batch([t for texts in items for t in texts]))
    finally:
        tok.enable_padding(pad_id=fill["ids"], pad_type_id=fill["types"],
                           pad_token=pad.get("pad_token", "[PAD]"))
    out = []
    for texts in items:
        enc = [next(encodings) for _ in texts]
        made = {"ids": [e.ids for e in enc], "mask": [e.attention_mask for e in enc],
                "types": [e.type_ids for e in enc]}
        width = max(len(e.ids) for e in enc)
        arrays = {}
        for role, name in slots.items():
            if name is not None:
                a = arrays[name] = np.full((len(enc), width), fill[role], np.int64)
                for row, values in enumerate(made[role]):
                    a[row, :len(values)] = values
        out.append(arrays)
    return out


def _token_slots(graph, given: dict) -> dict:
    """role -> the model's input that takes it (or None), checked."""
    inputs = {graph.node(n).attrs["name"]: graph.node(n) for n in graph.inputs}
    slots = {role: next((n for n in names if n in inputs), None) for role, names in ROLES.items()}
    if slots["ids"] is None:
        raise ArchError(f"--text: the model has no token-id input to fill (its inputs: "
                        f"{', '.join(inputs)})",
                        hint="name the ids input `ids` or `input_ids` in the .arch")
    for role, name in slots.items():
        if name is not None and inputs[name].dtype != "int64":
            raise ArchError(f"--text: input `{name}` would take the {role}, but it is "
                            f"{inputs[name].type_str}, not int")
        if name is not None and name in given:
            raise ArchError(f"input `{name}` is given twice: by --input and from --text",
                            hint=f"drop --input {name}=... (--text makes it)")
    return slots
