"""Nothing in archc executes user data: no eval/exec/compile, no pickle (or its relatives),
no `allow_pickle=True`, and every np.load says allow_pickle=False. A syntax-tree scan of
the source, so `self.exec(stmt)` (the lowering's statement runner) is not a false alarm.
The behavioural proof for inputs is test_cli_errors.py's pickled .npy that would have a
visible side effect if it were ever unpickled."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("archc", "dsl", "compiler", "runtime")
                 for p in (ROOT / d).rglob("*.py"))
BANNED_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve",
                  "joblib"}


def problems(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            for n in names:
                if n.split(".")[0] in BANNED_MODULES:
                    found.append(f"line {node.lineno}: imports {n}")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in BANNED_CALLS:
                found.append(f"line {node.lineno}: calls {f.id}()")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant)
                                                     and kw.value.value is False):
                    found.append(f"line {node.lineno}: allow_pickle is not False")
            if isinstance(f, ast.Attribute) and f.attr == "load" and \
                    isinstance(f.value, ast.Name) and f.value.id in ("np", "numpy"):
                if not any(kw.arg == "allow_pickle" for kw in node.keywords):
                    found.append(f"line {node.lineno}: np.load without allow_pickle=False")
    return found


def test_the_scan_finds_what_it_looks_for():
    bad = ("import pickle\nfrom marshal import loads\neval('1')\nexec(s)\n"
           "np.load(p)\nnp.load(p, allow_pickle=True)\n")
    assert problems(bad) == ["line 1: imports pickle", "line 2: imports marshal",
                             "line 3: calls eval()", "line 4: calls exec()",
                             "line 5: np.load without allow_pickle=False",
                             "line 6: allow_pickle is not False"]
    assert problems("self.exec(stmt)\nnp.load(p, allow_pickle=False)\n") == []


def test_sources_were_found():
    assert len(SOURCES) > 20 and any(p.name == "inputs.py" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_execution_in(path):
    assert problems(path.read_text()) == []
