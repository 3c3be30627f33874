"""`archc import CHECKPOINT_DIR [-o model.arch]`: a readable `.arch` for a Hugging Face
checkpoint folder, from its config.json and its tensor names (headers only).

The architecture of each supported `model_type` is one of the example files (examples/,
installed as `archc.examples`, each checked against transformers by the tests). Their
`weights hf` sections already choose what a checkpoint's flags and names decide (a tied
head, a base model's missing `model.` prefix, a null sliding window) and `require` what
they do not compute. Importing fits the example to the checkpoint:
- the config block takes the checkpoint's values, each commented with the config.json key
  it came from (the section's `config` lines say which key sets which constant), so the
  file reads as this checkpoint's model;
- tensors no rule needs (a task head the model lacks, buffers) get `skip` rules;
- the file is checked before it is written: lowered with the checkpoint's config (a
  `require` it fails is an error naming the key) and every tensor matched from the headers.
"""
from __future__ import annotations

import re
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Mapping

from .dsl.errors import ArchError

# model_type -> (the example file, the transformers class it was checked against)
FAMILIES: dict[str, tuple[str, str]] = {
    "gpt2": ("gpt2", "GPT2LMHeadModel"),
    "bert": ("bert", "BertModel"),
    "t5": ("t5", "T5ForConditionalGeneration"),
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("mistral", "MistralForCausalLM"),
    "mixtral": ("mixtral", "MixtralForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "falcon": ("falcon", "FalconForCausalLM"),
    "gpt_neox": ("gpt_neox", "GPTNeoXForCausalLM"),
    "longformer": ("longformer", "LongformerForMaskedLM"),
    "switch_transformers": ("switch", "SwitchTransformersForConditionalGeneration"),
}

_CONFIG_LINE = re.compile(r'^[ \t]*config[ \t]+(\w+)[ \t]*=[ \t]*"([^"]+)"'
                          r'(?:[ \t]*,[ \t]*null[ \t]*=[ \t]*(\S+))?', re.M)


def examples_dir() -> Path:
    """Where the example files are: installed as archc/examples, or the checkout's."""
    here = Path(__file__).resolve().parent
    for cand in (here / "examples", here.parent / "examples"):
        if (cand / "gpt2.arch").is_file():
            return cand
    raise ArchError("archc's example files are not installed; reinstall archc")


def arch_literal(value: Any) -> str:
    """A config.json value written as .arch source."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value) if isinstance(value, float) else str(value)


def _config_values(text: str, config: Mapping) -> dict[str, tuple[str, str]]:
    """constant -> (its .arch source, the key) for every `config` line config.json answers:
    the first of a constant's keys present wins; null is the line's `null=` value, or
    leaves the default."""
    from .runtime.checkpoint import _ABSENT, config_value
    out: dict[str, tuple[str, str]] = {}
    for const, key, null in _CONFIG_LINE.findall(text):
        if const in out:
            continue
        value = config_value(config, key)
        if value is None and null:
            out[const] = (null, key)
        elif value is not None and value is not _ABSENT and not isinstance(value, (list, dict)):
            out[const] = (arch_literal(value), key)
    return out


def _set_config(text: str, values: dict[str, tuple[str, str]]) -> str:
    """The top-level config block with the checkpoint's values, each commented with its key."""
    m = re.search(r"^config \{\n(.*?)^\}", text, re.S | re.M)
    lines = m.group(1).splitlines()
    width = max((len(line.split("#")[0].rstrip()) for line in lines), default=0)
    out = []
    for line in lines:
        d = re.match(r"(\s+)(\w+)(\s*=\s*)([^#]*?)\s*(#.*)?$", line)
        if d and d.group(2) in values:
            value, key = values[d.group(2)]
            code = f"{d.group(1)}{d.group(2)}{d.group(3)}{value}"
            line = f"{code:<{max(width, len(code))}}  # config.json {key}"
        out.append(line)
    return text[:m.start(1)] + "\n".join(out) + "\n" + text[m.end(1):]


def _header(text: str, kind: str, hf_class: str, source: str) -> str:
    """The example's leading comment, introduced as an import (its default sizes dropped)."""
    comment = re.match(r"((?:#[^\n]*\n)*)", text).group(1)
    about = " ".join(line.lstrip("# ").rstrip() for line in comment.splitlines())
    about = re.sub(r"\s*Defaults are .*?\.(?=\s+[A-Z`]|\s*$)", "", about).strip()
    intro = (f"Imported by `archc import` from {source}, a Hugging Face {kind} checkpoint "
             f"(the {hf_class} family). The config block holds its sizes, each from the "
             "config.json key it names; the `weights hf` section maps its tensor names, and "
             "its `config` lines let the same file load another size.")
    lines = []
    for para in (intro, about):
        lines += ["# " + w for w in textwrap.wrap(para, 88)] + ["#"]
    return "\n".join(lines[:-1]) + "\n" + text[len(comment):]


def _add_skips(text: str, names: list[str]) -> str:
    """`skip` rules for tensors no rule needs, at the end of the weights section."""
    if not names:
        return text
    m = re.search(r"^weights hf \{\n.*?(^\}\n?)", text, re.S | re.M)
    rules = ["    # in the checkpoint, not part of this model (a task head, buffers)"]
    rules += [f'    "{n}" -> skip' for n in names]
    return text[:m.start(1)] + "\n".join(rules) + "\n" + text[m.start(1):]


def _fitted(text: str, ckpt) -> tuple[list[str], Exception | None]:
    """Lower `text` with the checkpoint's config: the tensors no rule of its section
    matches, and what goes wrong when its parameters are filled (None: nothing)."""
    from .api import lower_with_checkpoint, weight_map
    from .runtime.weights import check_weights
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "imported.arch"
        path.write_text(text)
        graph, _, _ = lower_with_checkpoint(path, weights=ckpt.path)
        wmap = weight_map(graph, ckpt, weights=ckpt.path)
        unmatched = [] if wmap is None else \
            sorted(n for n in ckpt.tensors if wmap.match(n)[0] is None)
        try:
            check_weights(graph, ckpt, f"weights {ckpt.path}", wmap)
        except ArchError as e:
            return unmatched, e
        return unmatched, None


def import_checkpoint(folder: str | Path) -> str:
    """The .arch text for the Hugging Face checkpoint in `folder`, checked against it."""
    from .runtime.checkpoint import read_checkpoint
    ckpt = read_checkpoint(folder)
    if ckpt.config is None:
        raise ArchError(f"{folder} has no config.json",
                        hint="`archc import` reads a Hugging Face folder: config.json and "
                             "model.safetensors")
    kind = ckpt.config.get("model_type")
    if kind not in FAMILIES:
        raise ArchError(f"config.json's model_type is {kind!r}, which `archc import` does "
                        "not know", hint="known: " + ", ".join(sorted(FAMILIES)))
    example, hf_class = FAMILIES[kind]
    text = (examples_dir() / f"{example}.arch").read_text()
    text = _set_config(text, _config_values(text, ckpt.config))
    text = _header(text, kind, hf_class, Path(folder).resolve().name)
    unmatched, _ = _fitted(text, ckpt)
    text = _add_skips(text, unmatched)
    _, problem = _fitted(text, ckpt)
    if problem is not None:
        raise ArchError(f"{folder} does not fit archc's {kind} architecture: "
                        f"{problem.message}", hint="a variant of the family this file does not "
                        "describe: write its .arch from examples/" + f"{example}.arch")
    return text
