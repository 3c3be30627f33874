"""docs/ERRORS.md lists each class of error with its message: every message there must be
one archc can print (its words are in the source, between the parts a message fills in)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ERRORS.md"
STAGES = ("dsl", "compiler", "runtime", "archc")
GAP = "\x00"                     # where a message fills something in


def _normal(text: str) -> str:
    """Numbers (and the source suffix) become GAP, so `{MAX_TOKENS:,}` matches `50,000`."""
    return re.sub(r"[0-9][0-9,.]*|\.arch\b", GAP, text)


def _source() -> str:
    text = "\n".join(p.read_text() for s in STAGES for p in (ROOT / s).rglob("*.py"))
    text = re.sub(r"[\"']\s*\\?\n\s*f?[\"']", "", text)     # "a " \n f"b" -> one literal
    text = re.sub(r"\{[^{}\n]*\}", GAP, text)                # f-string fields
    return _normal(text.replace("\\\\", "\\"))


def _messages() -> list[str]:
    out = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= {"-"} \
                or cells[0] in ("class", "exit code"):
            continue
        cell = cells[1]
        spans = re.findall(r"``\s?(.+?)\s?``", cell)
        spans += re.findall(r"(?<!`)`([^`]+)`(?!`)", re.sub(r"``.+?``", "", cell))
        out += [s for s in spans if len(s) >= 15]
    return out


def _pieces(msg: str) -> list[str]:
    """The runs of two words or more that a message takes whole from the source: between
    the parts it fills in, and the punctuation where messages are put together."""
    text = _normal(re.sub(r"<[^<>]*>", GAP, msg))
    runs = re.split(rf"[{GAP}`();:,\[\]]", text)
    return [r.strip() for r in runs if len(r.split()) >= 2]


def test_every_documented_message_is_in_the_source():
    source = _source()
    missing = [(m, p) for m in _messages() for p in _pieces(m) if p not in source]
    assert missing == []


def test_the_doc_lists_messages_of_every_stage():
    msgs = _messages()
    assert len(msgs) > 60
    for words in ("unknown escape", "needs <size> to load", "interrupted", "would grow past",
                  "expected a whole number", "outside the folder", "would destroy the"):
        assert any(words in m for m in msgs) or words in DOC.read_text(), words
