"""The runtime side of the CLI: executor options for `archc run`, and `archc generate`.

    archc run MODEL --input x.npy [--executor numba|reference] [--threads N] [--profile]
    archc generate MODEL --weights W --input prompt_ids.npy --max-new-tokens N
                   [--temperature T --top-k K --top-p P --seed S] [--eos ID ...] [--ignore-eos]
                   [--tokenizer tokenizer.json --prompt "text" --stop TEXT ...] [--no-cache]
                   [--max-seq N] [--decoder-start ID] [--output-logits FILE]
                   [--weights-dtype int8|bf16]

Tokens stream to stdout as they are produced (ids, or text with --tokenizer); the figures
printed to stderr at the end keep loading, compiling, the prompt and decoding apart (the
tokens/s of either never includes compilation or loading). Unset, --eos and the sampling
settings are the checkpoint's (config.json's eos_token_id, generation_config.json), as
transformers takes them. For an encoder-decoder (T5)
the prompt is the encoder's input and decoding starts from --decoder-start (default: the
model's config constant `decoder_start`).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .args import COUNT, THREADS, TOKEN, add_weights_args, add_weights_dtype, real, whole
from .dsl.errors import ArchError


def add_run_args(run: argparse.ArgumentParser) -> None:
    run.add_argument("--executor", choices=("numba", "reference"), default="numba",
                     help="numba (compiled kernels, planned memory; the default) or reference "
                          "(the plain NumPy oracle)")
    _threads_arg(run)
    run.add_argument("--profile", action="store_true",
                     help="print a per-op time table (compile time reported apart)")


def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=THREADS, metavar="N",
                   help="threads for kernels and BLAS (default: every core)")


def add_generate_parser(sub, common, inputs_arg) -> None:
    gen = sub.add_parser("generate", help="generate tokens after a prompt, with a KV cache")
    common(gen)
    inputs_arg(gen, "prompt token ids (.npy, int, shape (T,) or (B, T))")
    add_weights_args(gen, "seed for sampling and for parameters without weights")
    gen.add_argument("--max-new-tokens", "-n", type=whole(0), default=32, metavar="N")
    gen.add_argument("--temperature", type=real(0), metavar="T",
                     help="0 is greedy decoding (the default, unless the checkpoint's "
                          "generation_config.json samples)")
    gen.add_argument("--top-k", type=whole(0), metavar="K",
                     help="sample among the K most likely tokens (0: all)")
    gen.add_argument("--top-p", type=real(0, 1, low_open=True), metavar="P",
                     help="sample among the most likely tokens holding P of the "
                          "probability, 0 < P <= 1")
    gen.add_argument("--eos", type=TOKEN, action="append", metavar="ID",
                     help="stop when this token is produced; repeatable (any of them stops; "
                          "default: the checkpoint's eos_token_id)")
    gen.add_argument("--ignore-eos", action="store_true",
                     help="never stop at an end-of-sequence token")
    gen.add_argument("--stop", action="append", metavar="TEXT",
                     help="stop when the generated text contains TEXT (needs --tokenizer); "
                          "repeatable")
    gen.add_argument("--decoder-start", type=TOKEN, metavar="ID",
                     help="encoder-decoder models: the token decoding starts from (default: "
                          "the config constant decoder_start)")
    gen.add_argument("--max-seq", type=COUNT, metavar="N",
                     help="positions the KV cache holds (default: the model's context)")
    gen.add_argument("--max-memory", metavar="SIZE",
                     help="refuse if parameters + KV cache would need more, e.g. 8G "
                          "(default: 80%% of the RAM)")
    add_weights_dtype(gen)
    gen.add_argument("--no-cache", action="store_true",
                     help="recompute the whole sequence for every token (slow; for checking)")
    gen.add_argument("--tokenizer", metavar="FILE",
                     help="a Hugging Face tokenizer.json: text in (--prompt), text out")
    gen.add_argument("--prompt", metavar="TEXT", help="the prompt as text (needs --tokenizer)")
    gen.add_argument("--output", "-o", metavar="FILE", help="write the new ids to a .npy file")
    gen.add_argument("--output-logits", metavar="FILE",
                     help="write each step's logits, (B, new tokens, vocab), to a .npy file")
    _threads_arg(gen)
    gen.add_argument("--profile", action="store_true", help="print a per-op time table")


def run_model(model, arrays: dict, args) -> dict:
    """`archc run`'s execution: the chosen executor, with --profile and --threads."""
    if getattr(args, "executor", "reference") == "reference" or getattr(args, "train", False):
        return model.run(arrays, train=getattr(args, "train", False), seed=args.seed,
                         executor="reference")
    from .runtime.executor import Profile
    ex = model.compiled(args.threads)
    for w in ex.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not args.profile:
        return ex.run(arrays)
    prof = Profile()
    ex.run(arrays, profile=prof)            # compiles (timed apart) and warms the threads
    timed = Profile(compile_seconds=prof.compile_seconds)
    out = ex.run(arrays, profile=timed)
    print(timed.table(), file=sys.stderr)
    return out


def _tokenizer(path: str):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ArchError("--tokenizer needs the Hugging Face `tokenizers` package",
                        hint="pip install 'archc[text]'  (or: pip install tokenizers)") from None
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001  (tokenizers raises plain Exceptions)
        raise ArchError(f"cannot read tokenizer {path}: {str(e).splitlines()[0]}") from None


def cmd_generate(args, load, read_array) -> int:
    import time
    from .args import input_files, parse_named_files, parse_sets
    from .runtime.executor import Profile
    from .runtime.budget import parse_size
    from .runtime.generate import prompt_ids, token_io
    from .runtime.io import check_output, save_outputs, to_stdout
    check_output(args.output, input_files(args.input))     # before anything is read
    check_output(args.output_logits, input_files(args.input))
    if args.output and args.output_logits and args.output == args.output_logits:
        raise ArchError("--output and --output-logits name the same file")
    tok = _tokenizer(args.tokenizer) if args.tokenizer else None
    if args.stop and tok is None:
        raise ArchError("--stop is text and needs --tokenizer tokenizer.json to decode the "
                        "tokens", hint="or stop at token ids with --eos ID")
    named = None
    if args.prompt is not None:
        if tok is None:
            raise ArchError("--prompt is text and needs --tokenizer tokenizer.json",
                            hint="or pass token ids with --input prompt_ids.npy")
        prompt = np.array([tok.encode(args.prompt).ids], dtype=np.int64)
    elif len(args.input) == 1:
        ((named, path),) = parse_named_files(args.input)
        prompt = read_array(path, what="prompt", limit=parse_size(args.max_memory))
        if isinstance(prompt, dict):
            raise ArchError(f"{path} is an .npz archive; the prompt is one .npy array")
        prompt = prompt_ids(prompt)
    else:
        raise ArchError("generate needs a prompt: --input prompt_ids.npy (or --prompt TEXT "
                        "with --tokenizer)")
    t0 = time.perf_counter()
    model = load(args.model, weights=args.weights, seed=args.seed, model=args.model_name,
                 config=parse_sets(args.set), weights_map=args.weights_map,
                 allow_missing=args.allow_missing, max_memory=args.max_memory,
                 weights_dtype=args.weights_dtype)
    load_seconds = time.perf_counter() - t0
    for w in model.warnings:
        print(f"warning: {w}", file=sys.stderr)
    reads = model.files + input_files(args.input) \
        + ([("tokenizer", args.tokenizer)] if args.tokenizer else [])
    check_output(args.output, reads, ["ids"])
    check_output(args.output_logits, reads, ["logits"])
    if args.prompt is None and named is not None and named not in model.inputs:
        from .dsl.errors import did_you_mean
        raise ArchError(f"the model has no input named `{named}`",
                        hint=did_you_mean(named, model.inputs) or
                        "inputs: " + ", ".join(model.inputs))
    t0 = time.perf_counter()
    ex = model.compiled(args.threads)
    build_seconds = time.perf_counter() - t0
    from .runtime.budget import check_generate
    check_generate(ex, prompt.shape[0], args.max_seq, model.max_memory,   # before the KV
                   args.max_new_tokens,                                    # cache is made
                   token_io(ex.graph).vocab if args.output_logits else 0)
    for w in ex.warnings:
        print(f"warning: {w}", file=sys.stderr)
    prompt = np.asarray(prompt)
    batch = 1 if prompt.ndim == 1 else prompt.shape[0]
    # with -o - the ids go to stdout as .npy bytes, so the stream of tokens goes to stderr
    out = sys.stderr if args.output and to_stdout(args.output) else sys.stdout

    shown = {"ids": [], "text": ""}
    # a decoder-only model continues the prompt (shown first); an encoder-decoder's output
    # is a new text
    if tok is not None and batch == 1 and token_io(ex.graph).encoder is None:
        shown["ids"] = [int(t) for t in np.ravel(prompt)]
        shown["text"] = tok.decode(shown["ids"])

    def show(step: int, toks: np.ndarray) -> None:
        if tok is not None and batch == 1:
            if step == 0:
                out.write(shown["text"])      # after generate's checks, not before
            # decode the whole text and print what it gained: a token alone can lose the
            # space before it (word-level) or be half a character (byte-level BPE)
            shown["ids"].append(int(toks[0]))
            text = tok.decode(shown["ids"])
            if text.startswith(shown["text"]):
                out.write(text[len(shown["text"]):])
                shown["text"] = text
        elif batch == 1:
            out.write(f"{int(toks[0])} ")
        else:
            out.write(" ".join(str(int(t)) for t in toks) + "\n")
        out.flush()

    prof = Profile() if args.profile else None
    res = model.generate(prompt, args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                         eos=() if args.ignore_eos else args.eos, stop_strings=args.stop,
                         tokenizer=tok, max_seq=args.max_seq, use_cache=not args.no_cache,
                         on_token=show, profile=prof, decoder_start=args.decoder_start,
                         keep_logits=bool(args.output_logits), threads=args.threads)
    out.write("\n")
    out.flush()
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.output:
        save_outputs(args.output, {"ids": res.ids})
    if args.output_logits:
        logits = np.stack(res.logits, axis=1) if res.logits else \
            np.zeros((batch, 0, token_io(ex.graph).vocab), np.float32)
        save_outputs(args.output_logits, {"logits": logits})
    print(res.summary(load_seconds, build_seconds), file=sys.stderr)
    if prof is not None:
        print(prof.table(), file=sys.stderr)
    return 0
