"""Every package folder of the stages is in pyproject.toml's `packages`: an editable install
finds a missing one anyway, a wheel would not ship it."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"archc": "archc", "dsl": "archc.dsl", "compiler": "archc.compiler",
          "runtime": "archc.runtime"}


def test_every_package_folder_is_listed():
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M).group(1)
    listed = set(re.findall(r'"([a-z_.]+)"', block))
    found = {".".join([STAGES[init.parent.relative_to(ROOT).parts[0]],
                       *init.parent.relative_to(ROOT).parts[1:]])
             for stage in STAGES for init in (ROOT / stage).rglob("__init__.py")}
    assert found - listed == set()
