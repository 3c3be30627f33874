"""ONNX Runtime (fp32, CPU) as a contender of benchmarks/lm.py, on a torch.onnx export of the
very Hugging Face checkpoint archc and PyTorch run ("ort"), or on archc's own export of
its compiled graph ("ort-archc").

    python benchmarks/contenders.py make ort DIR        # DIR/onnx/{prefill,decode}.onnx
    python benchmarks/contenders.py make ort-archc DIR  # DIR/onnx-archc/model{,.decode}.onnx

Two graphs, exported with torch.onnx (the dynamo exporter, which needs onnxscript):
    prefill.onnx  input_ids (1, T) -> logits (1, T, V): every position, no cache
    decode.onnx   input_ids (1, t), past.{l}.key / past.{l}.value (1, H_kv, P, D)
                  -> logits (1, 1, V) of the last position, present.{l}.key / .value
                     (1, H_kv, P + t, D)
The decode graph with P = 0 and t = T is the prompt pass of a generation (K/V into the
cache, the last position's logits, as Hugging Face's logits_to_keep=1). Sessions run with
every graph optimisation on (ORT_ENABLE_ALL), `threads` intra-op threads, sequential
execution; decoding keeps the K/V as ORT values bound to the next step (IOBinding), so no
step copies the cache through NumPy. The two sessions hold the weights once each, so the
peak RSS row counts them twice.

"ort-archc" runs the two graphs `archc export` writes (the optional `onnx` extra) from
the same checkpoint: model.onnx (every position's logits) and model.decode.onnx (`ids` and
past_key_values.{l}.key / .value in, logits of every new position and present.{l}.* out).
Both graphs read one side file of weights. The ORT contender finds each graph's token
input, `logits` output and past/present pairs by name, so either pair runs the same way;
archc's decode graph gives logits for every position of a prompt pass (the torch export's
only the last), which its prompt row pays for.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PREFILL, DECODE = "prefill.onnx", "decode.onnx"
# archc export -o model.onnx writes model.onnx and model.decode.onnx
ARCHC_FULL, ARCHC_DECODE = "model.onnx", "model.decode.onnx"
LAYER_KV = re.compile(r"\.(\d+)\.(key|value)$")        # past.3.key ~ present.3.key


def export_hf(weights: str, out: str) -> None:
    """Export the checkpoint in `weights` to `out`/prefill.onnx and `out`/decode.onnx."""
    import torch
    import transformers
    from contenders import hf_cache_arg, hf_cache_out

    cfg = transformers.AutoConfig.from_pretrained(weights)
    cls = getattr(transformers, cfg.architectures[0])
    model = cls.from_pretrained(weights, dtype=torch.float32).eval()
    n_layer = cfg.num_hidden_layers
    h_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    d_head = cfg.hidden_size // cfg.num_attention_heads
    names = [f"past.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    arg = hf_cache_arg(model)

    class Prefill(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            return self.model(input_ids=input_ids, use_cache=False).logits

    class Decode(torch.nn.Module):
        """Flat tensors in and out: the exporter sees no Cache object."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, past):
            cache = transformers.DynamicCache(
                ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(n_layer)],
                config=cfg)
            out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1,
                             **{arg: cache})
            present = []
            for layer in hf_cache_out(out).layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    # sample sizes above 1: torch.export specialises dimensions of size 0 and 1
    ids = torch.zeros((1, 5), dtype=torch.int64)
    past = tuple(torch.zeros((1, h_kv, 7, d_head)) for _ in names)
    T = torch.export.Dim("T", min=1, max=8192)
    P = torch.export.Dim("P", min=0, max=8192)
    with torch.inference_mode():
        torch.onnx.export(Prefill(), (ids,), str(folder / PREFILL), dynamo=True,
                          input_names=["input_ids"], output_names=["logits"],
                          dynamic_shapes=({1: T},), optimize=True)
        torch.onnx.export(Decode(), (ids, past), str(folder / DECODE), dynamo=True,
                          input_names=["input_ids", *names],
                          output_names=["logits", *[n.replace("past", "present") for n in names]],
                          dynamic_shapes=({1: T}, tuple({2: P} for _ in names)), optimize=True)


def archc_export_missing() -> str | None:
    """Why ORT cannot run archc's own export here (None when it can)."""
    if importlib.util.find_spec("archc.onnx_export") is None:
        return "this archc has no `archc export` (ONNX)"
    if importlib.util.find_spec("onnx") is None:
        return "onnx not installed (pip install -e '.[onnx]')"
    return None


def export_archc(arch: str, weights: str, out: str) -> None:
    """`archc export` of the model `arch` on the checkpoint `weights`: out/model.onnx and
    out/model.decode.onnx (weights in one side file)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "archc", "export", arch, "-o",
                          str(Path(out) / ARCHC_FULL), "--weights", weights, "--external-data"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"archc export failed: {res.stderr.strip()[-2000:]}")


class ORT:
    """ONNX Runtime on a full graph and a decode graph (see the module docstring)."""

    def __init__(self, full: str, decode: str, threads: int, name: str = "ort"):
        import onnxruntime as ort
        self.name = name
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        cpu = ["CPUExecutionProvider"]
        self.prefill_sess = ort.InferenceSession(full, so, providers=cpu)
        self.decode_sess = ort.InferenceSession(decode, so, providers=cpu)
        self.ids_name = self.prefill_sess.get_inputs()[0].name
        inputs = self.decode_sess.get_inputs()
        self.past_names = [i.name for i in inputs if LAYER_KV.search(i.name)]
        outputs = [o.name for o in self.decode_sess.get_outputs()]
        # the decode graph's outputs in the order the next step's past inputs want them
        present = {LAYER_KV.search(o).groups(): o for o in outputs if LAYER_KV.search(o)}
        self.out_names = ["logits"] + [present[LAYER_KV.search(p).groups()]
                                       for p in self.past_names]
        _, h_kv, _, d_head = next(i for i in inputs if i.name == self.past_names[0]).shape
        self.empty = np.zeros((1, h_kv, 0, d_head), np.float32)     # the cache before a prompt
        logits = next(o for o in self.prefill_sess.get_outputs() if o.name == "logits")
        self.vocab = int(logits.shape[-1])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return self.prefill_sess.run(["logits"], {self.ids_name: ids})[0]

    def prefill(self, ids: np.ndarray) -> float:
        t = time.perf_counter()
        self.prefill_sess.run(["logits"], {self.ids_name: ids})
        return time.perf_counter() - t

    def _step(self, ids: np.ndarray, past: list | None) -> tuple[np.ndarray, list]:
        """One run of the decode graph: (last position's logits (V,), present K/V as ORT
        values). `past` None is the empty cache."""
        b = self.decode_sess.io_binding()
        b.bind_cpu_input(self.ids_name, ids)
        for i, name in enumerate(self.past_names):
            if past is None:
                b.bind_cpu_input(name, self.empty)
            else:
                b.bind_ortvalue_input(name, past[i])
        for name in self.out_names:
            b.bind_output(name)
        self.decode_sess.run_with_iobinding(b)
        outs = b.get_outputs()
        return outs[0].numpy()[0, -1], outs[1:]

    def prompt(self, ids: np.ndarray) -> float:
        t = time.perf_counter()
        self._step(ids, None)
        return time.perf_counter() - t

    def decode(self, ids: np.ndarray, new: int, on_first=None) -> tuple[float, int, list]:
        """Greedy: the prompt pass's token, then `new` - 1 timed steps (argmax included)."""
        logits, past = self._step(ids, None)
        tok = int(logits.argmax())
        if on_first is not None:
            on_first()
        toks = [tok]
        step = np.zeros((1, 1), np.int64)
        t = time.perf_counter()
        for _ in range(new - 1):
            step[0, 0] = tok
            logits, past = self._step(step, past)
            tok = int(logits.argmax())
            toks.append(tok)
        return time.perf_counter() - t, new - 1, toks

    def plan(self, prompt: int, new: int) -> dict:
        return {}
