"""Small rooms: no class in the stages grows past ~300 lines (issue 14); a big one is split
by concern, as the lowering is (dsl/lowering/)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("dsl", "compiler", "runtime", "archc")

MAX_CLASS_LINES = 300


def test_no_class_is_over_300_lines():
    big = []
    for stage in STAGES:
        for path in (ROOT / stage).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_CLASS_LINES:
                        big.append(f"{path.relative_to(ROOT)}: {node.name} ({lines} lines)")
    assert big == []
