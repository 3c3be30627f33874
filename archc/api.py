"""The Python API, as small as the CLI:

    model = archc.load("examples/gpt2.arch", weights="model.safetensors", seed=0)
    out = model.run(ids=np.array([[1, 2, 3]]))      # {"logits": array, ...}
    archc.load(..., weights_dtype="int8")            # matrix weights int8 (or "bf16")
    model.graph                                      # the layer graph (networkx inside)
    print(model.dump())
"""
from __future__ import annotations

import copy
import os
from typing import Mapping, Sequence

import numpy as np

from .dsl import progress
from .dsl.errors import ArchError
from .dsl.graph import Graph
from .dsl.lower import lower
from .dsl.weightmap import key_matches


def source_files(graph: Graph) -> list[tuple[str, str]]:
    """(what, path) of the source files a graph was lowered from: the model, its includes."""
    return [("model" if i == 0 else "include", f)
            for i, f in enumerate(graph.meta.get("files", []))]


def executor(graph: Graph, params: Mapping[str, np.ndarray], **options):
    """The compiled executor of `graph`: the runtime's Executor with the compiler as its
    toolchain (the one place the two stages meet). Options as `Executor`'s."""
    from .compiler.toolchain import COMPILER
    from .runtime.executor import Executor
    return Executor(graph, params, toolchain=COMPILER, **options)


class Model:
    def __init__(self, graph: Graph, params: dict[str, np.ndarray], warnings: list[str],
                 max_memory: int | None = None, files: list[str] | None = None,
                 optimised: tuple[Graph, list[str]] | None = None,
                 generation: Mapping[str, object] | None = None):
        self.max_memory = max_memory   # bytes; run() refuses inputs that would need more
        # (what, path) of every file the model was built from: no output may land on one
        self.files = source_files(graph) + [("weights", f) for f in files or []]
        self.graph = graph
        self.params = params
        self.warnings = warnings
        self.optimised = optimised     # (graph, warnings) of the pipeline, if run already
        # generate()'s defaults from the checkpoint (eos, sampling settings; see
        # runtime/checkpoint.generation_defaults): what transformers would use
        self.generation = dict(generation or {})

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def inputs(self) -> dict[str, str]:
        return {self.graph.node(n).attrs["name"]: self.graph.node(n).type_str
                for n in self.graph.inputs}

    def run(self, inputs: Mapping[str, np.ndarray] | None = None, *, train: bool = False,
            seed: int = 0, executor: str = "numba", threads: int | None = None,
            taps: Sequence[str] = (), profile=None,
            **named: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on named inputs; returns {output name: array}. The defaults are
        `archc run`'s: the optimised graph with compiled kernels (`executor="numba"`, see
        `compiled()`; `threads` as --threads); `executor="reference"` is the plain NumPy
        oracle. `train` applies dropout, deterministically from `seed` (the reference
        executor runs it). `taps` names more values to return (`["layers.3.ffn",
        "layers.*.moe.router"]`, see `tapped`)."""
        from .runtime.reference import run_reference
        if executor not in ("numba", "reference"):
            raise ArchError(f"unknown executor {executor!r}; expected numba or reference")
        if taps:
            return self.tapped(taps).run(inputs, train=train, seed=seed, executor=executor,
                                         threads=threads, profile=profile, **named)
        arrays = {**(inputs or {}), **named}
        if self.max_memory is not None:
            from .runtime.budget import check_run
            from .runtime.inputs import bind_inputs
            _, sizes, _ = bind_inputs(self.graph, arrays)
            check_run(self.graph, sizes, self.max_memory)
        if executor == "numba" and not train:
            return self.compiled(threads).run(arrays, profile=profile)
        return run_reference(self.graph, arrays, self.params, train=train, seed=seed)

    def tapped(self, taps: Sequence[str]) -> "Model":
        """This model with the values `taps` names as more outputs, by name: a scope (a
        layer's result, inside a repeat too: `layers.3.ffn`), an MoE's `router` (the chosen
        experts), or a node id; `*` matches as in file names (dsl/taps.py). Made once per
        set of taps; the parameters are shared."""
        from .dsl.taps import add_taps
        kept = self.__dict__.setdefault("_tapped", {})
        key = tuple(taps)
        if key not in kept:
            model = copy.copy(self)
            model.graph = add_taps(self.graph, key)
            model.optimised = None          # the untapped graph's pipeline has no taps
            model.__dict__.pop("_executor", None)
            model.__dict__.pop("_tapped", None)
            kept[key] = model
        return kept[key]

    def compiled(self, threads: int | None = None):
        """The compiled (Numba) executor of this model, made once and kept. It shares the
        weights with `params`: matrices become output-major (same values) and parameters
        concatenated into a layout (QKV, gate/up) become views of it, so the reference
        executor still reads every parameter and the process holds each weight once."""
        ex = getattr(self, "_executor", None)
        if ex is None or (threads is not None and ex.threads != threads):
            ex = self._executor = executor(self.graph, self.params, threads=threads,
                                           share_params=True, optimised=self.optimised)
        return ex

    def generate(self, prompt: np.ndarray, max_new_tokens: int = 32, **options):
        """Continue token ids `prompt` (B, T): greedy unless `temperature` > 0 (`top_k`,
        `top_p`, `seed`); stops early at `eos` (an id or several; `()` for none), or when
        the text holds one of `stop_strings` (with `tokenizer`, anything with `.decode`).
        `eos`, `temperature`, `top_k` and `top_p` left unset (or None) take the
        checkpoint's defaults (`self.generation`), as `archc generate` does. Returns a
        GenerateResult (`.ids` are the new tokens, (B, n)); see runtime/generate.py for
        every option."""
        from .runtime.generate import StopStrings, check_options, generate
        given = {k: v for k, v in options.items() if v is not None}
        taken = {k: v for k, v in self.generation.items() if k not in given}
        try:          # the checkpoint's values, said as such (generate checks the rest)
            check_options(**{"max_new_tokens": 0, "temperature": 0.0, "top_k": None,
                             "top_p": None, "seed": None, "eos": None, "max_seq": None,
                             "decoder_start": None, **taken})
        except ArchError as e:
            raise ArchError(f"the checkpoint's generation defaults: {e.message}",
                            hint="its generation_config.json (or config.json's eos_token_id) "
                                 "holds it; give the setting (--temperature, --top-k, "
                                 "--top-p, --eos) to override it") from None
        opts = {**taken, **given}
        strings, tokenizer = opts.pop("stop_strings", None), opts.pop("tokenizer", None)
        if strings:
            if tokenizer is None:
                raise ArchError("stop strings need a tokenizer to decode the tokens",
                                hint="generate(..., stop_strings=[...], tokenizer=tok); "
                                     "archc generate --stop TEXT --tokenizer tokenizer.json")
            opts["stop"] = StopStrings(list(strings), tokenizer.decode)
        if opts.get("eos") is not None and np.size(opts["eos"]) == 0:
            opts["eos"] = None
        return generate(self.compiled(opts.pop("threads", None)), prompt, max_new_tokens,
                        **opts)

    def dump(self, format: str = "text", **options) -> str:
        from .compiler import dump
        return {"text": dump.dump_text, "json": dump.dump_json,
                "dot": dump.dump_dot}[format](self.graph, **options)


def lower_with_checkpoint(path: str | os.PathLike, model: str | None = None,
                          config: Mapping[str, object] | None = None,
                          weights: str | os.PathLike | None = None,
                          weights_map: str | None = None):
    """The model's graph, its sizes set by the checkpoint's config.json (through the
    chosen `weights` section's `config` lines) and then by `config`; no tensor is read.
    Returns (graph, the Checkpoint or None, notes on config keys the file lacks)."""
    from .dsl.lower import load_program
    from .runtime.checkpoint import choose_section, config_overrides, read_checkpoint
    ckpt = None if weights is None else read_checkpoint(weights)
    overrides: dict = {}
    notes: list[str] = []
    if ckpt is not None and ckpt.config is not None:
        sections = load_program(path).weights
        chosen = choose_section(sections, ckpt.tensors, weights_map)
        if chosen is not None:
            overrides, notes = config_overrides(sections[chosen], ckpt.config)
    with progress.task("reading the model"):
        graph = lower(path, model, {**overrides, **dict(config or {})})
    return graph, ckpt, notes


def weight_map(graph: Graph, ckpt, weights_map: str | None = None, weights=None):
    """The resolved `weights` section that names `ckpt`'s tensors, or None when they
    already are the parameter names (or the model has no section); an error when no
    section's rules match any of its tensors."""
    from .runtime.checkpoint import choose_section
    maps = graph.meta.get("weight_maps", {})
    names = {n.attrs["name"] for n in graph.params()}
    if weights_map is None and set(ckpt.tensors) <= names:
        return None
    chosen = choose_section(maps, ckpt.tensors, weights_map)
    if chosen is None and maps:
        raise no_rule_matches(weights or ckpt.path, ckpt, maps)
    if chosen is not None and 2 * key_matches(maps[chosen], ckpt.tensors) < len(ckpt.tensors):
        raise no_rule_matches(weights or ckpt.path, ckpt, {chosen: maps[chosen]}, partly=True)
    return maps[chosen] if chosen is not None else None


def load(path: str | os.PathLike, weights: str | os.PathLike | None = None, seed: int = 0,
         model: str | None = None, allow_missing: bool = False,
         config: Mapping[str, object] | None = None, weights_map: str | None = None,
         max_memory: int | str | None = None, weights_dtype: str | None = None) -> Model:
    """Parse, check and build a model; parameters come from `weights` (a .safetensors file
    or a Hugging Face folder), inline values, or deterministic random initialisation from
    `seed`. `config` sets config constants (`{"n_layer": 2}`); a Hugging Face folder's
    config.json sets those its `weights` section maps, unless `config` sets them too.
    Checkpoint names go through the model's `weights` section (`weights_map` chooses one)
    unless they already are the parameter names. `max_memory` (bytes or "8G"; default 80%
    of the RAM) refuses a model whose parameters would not fit, before allocating them.
    `weights_dtype` "int8" or "bf16" (default: the model's config constant `weights_dtype`,
    else "float32") stores the matrix-product weights packed, each as it is loaded
    (runtime/packed.py); the reference executor then computes with their float32 values."""
    from .runtime.budget import check_file, check_model, parse_size
    from .runtime.checkpoint import Reported, generation_defaults
    from .runtime.weights import apply_weights, init_params
    limit = parse_size(max_memory)
    check_weights_dtype(weights_dtype)
    if weights is not None:
        check_file(weights, limit, "weights")
    graph, ckpt, warnings = lower_with_checkpoint(path, model, config, weights, weights_map)
    check_model(graph, limit)
    mapping = None if ckpt is None else weight_map(graph, ckpt, weights_map, weights)
    keep, optimised = _packing(graph, weights_dtype)
    if ckpt is None:
        return Model(graph, init_params(graph, seed, keep), warnings, limit,
                     optimised=optimised)
    try:
        with progress.task("loading weights", unit="MB") as task:
            tensors = Reported(ckpt.tensors, task)
            task.total = tensors.nbytes()
            params, more = apply_weights(graph, tensors, seed, allow_missing,
                                         source=f"weights {weights}", mapping=mapping,
                                         keep=keep)
    except ArchError as e:
        arch = (ckpt.config or {}).get("architectures")
        if isinstance(arch, list) and arch:     # LlamaModel (no head) vs LlamaForCausalLM
            e.notes.append(f"its config.json says architectures {', '.join(map(str, arch))}")
        raise
    return Model(graph, params, warnings + more, limit, ckpt.files, optimised=optimised,
                 generation=generation_defaults(ckpt))


def check_weights_dtype(weights_dtype: str | None) -> None:
    from .dsl.lowering.model import WEIGHTS_DTYPES
    if weights_dtype is not None and weights_dtype not in WEIGHTS_DTYPES:
        raise ArchError(f"weights_dtype {weights_dtype!r} is not one of "
                        f"{', '.join(WEIGHTS_DTYPES)}",
                        hint="int8: per-block scales (GGUF Q8_0); bf16: the top 16 bits")


def _packing(graph: Graph, weights_dtype: str | None):
    """(keep, optimised): how loading stores each parameter, and the optimised graph the
    packing plan was made on (kept for the executor, which would otherwise run the
    pipeline again). Float32 weights: (None, None)."""
    from .runtime.packed import PACKED_DTYPES, packing_plan, weights_dtype_of
    from .runtime.weights import packing_keeper
    kind = weights_dtype_of(graph, weights_dtype)
    if kind not in PACKED_DTYPES:
        return None, None
    from .compiler.toolchain import COMPILER
    warnings: list[str] = []
    opt = COMPILER.optimise(graph, warnings)
    return packing_keeper(packing_plan(opt), kind), (opt, warnings)


def no_rule_matches(weights, ckpt, maps, partly: bool = False) -> ArchError:
    """No rule of any weights section matches a tensor of the checkpoint (or, `partly`,
    fewer than half of them): say so rather than list every tensor as unexpected."""
    names = list(ckpt.tensors)
    sections = ", ".join(f"`weights {n}`" for n in maps)
    family = (ckpt.config or {}).get("model_type")
    unmatched = [n for n in names if not any(key_matches(s, [n]) for s in maps.values())]
    notes = [f"its tensors are named like `{unmatched[0]}`" if unmatched
             else "it holds no tensors"]
    if family is not None:
        notes.append(f"its config.json says model_type `{family}`")
    if partly:
        found = key_matches(next(iter(maps.values())), names)
        return ArchError(f"weights {weights}: the rules of {sections} match only {found} of "
                         f"its {len(names):,} tensors", None,
                         "is it a checkpoint of another family? (--weights-map NAME chooses "
                         "another weights section)", notes)
    return ArchError(f"weights {weights}: no rule of {sections} matches any of its "
                     f"{len(names):,} tensors, so none was loaded and its config.json was not "
                     "applied", None,
                     "is it a checkpoint of another family? If its names only add or drop a "
                     "prefix (base model vs task head), add `prefix \"...\"` to the weights "
                     "section", notes)


__all__ = ["ArchError", "Model", "executor", "load", "lower_with_checkpoint"]
