"""The README shows the GPT-2 picture archc draws and a command for every view `archc dump`
and `archc export` offer."""
from __future__ import annotations

import re
from pathlib import Path

from archc.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_readme_pictures_gpt2_and_names_every_view():
    readme = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert "docs/gpt2.svg" in pictures
    svg = (ROOT / "docs" / "gpt2.svg").read_text()
    assert "<svg" in svg and "layers x12" in svg and "logits" in svg
    dump = build_parser()._subparsers._group_actions[0].choices["dump"]
    formats = next(a.choices for a in dump._actions if a.dest == "format")
    for fmt in formats:
        line = "archc dump examples/gpt2.arch" + ("" if fmt == "text" else f" -f {fmt}")
        assert line in readme or (fmt == "png" and "-f png" in readme), fmt
    assert "archc export examples/gpt2.arch -o gpt2.onnx" in readme
