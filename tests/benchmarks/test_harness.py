"""The logic of benchmarks/lm.py that decides what a run reports: the logits and token
cross-checks, per-round ratios, the machine's description, the quiet check, the choice of
peers and appending to RESULTS.md. No timing, no peer packages needed."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import contenders  # noqa: E402
import lm  # noqa: E402
import machine  # noqa: E402


def _logits(seed: int = 0, T: int = 6, V: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, T, V)).astype(np.float32)


def test_logits_each_contender_against_hf_eager():
    ref = _logits()
    outs = {"archc": ref + 2e-5, "hf-eager": ref, "ort": ref - 3e-5}
    notes, dropped = lm.compare_logits(outs, 6)
    assert dropped == []
    assert notes == ["logits (T=6): max |archc − hf-eager| = 2.0e-05",
                     "logits (T=6): max |ort − hf-eager| = 3.0e-05"]


def test_logits_a_wrong_peer_is_dropped_and_a_quantised_one_only_reported():
    ref = _logits()
    wrong = ref.copy()
    wrong[0, 2] = _logits(1)[0, 2]                        # one position of another model
    outs = {"archc": ref, "hf-eager": ref, "llama.cpp-f32": wrong,
            "llama.cpp-q8_0": ref + 0.05}
    notes, dropped = lm.compare_logits(outs, 6)
    assert dropped == ["llama.cpp-f32"]
    assert notes[1].startswith("**llama.cpp-f32 dropped**: logits (T=6): max |llama.cpp-f32 − ")
    assert "top-1 agrees at 83% of positions" in notes[1]
    assert notes[2] == ("logits (T=6): max |llama.cpp-q8_0 − hf-eager| = 5.0e-02 "
                        "(quantised weights: reported, not checked)")


def test_logits_archc_outside_its_tolerance_stops_the_run(tmp_path):
    class Fake:
        def __init__(self, arr):
            self.arr = arr

        def ask(self, op, out, **_):
            np.save(out, self.arr)

    ref = _logits()
    with pytest.raises(SystemExit, match="not timing a wrong model"):
        lm.check_logits({"archc": Fake(ref + 1e-3), "hf-eager": Fake(ref)}, tmp_path, 6)


def test_logits_without_hf_eager_the_first_peer_is_the_reference():
    ref = _logits()
    notes, _ = lm.compare_logits({"archc": ref, "ort": ref, "llama.cpp-f32": ref}, 6)
    assert [n.rsplit(" = ", 1)[0] for n in notes] == ["logits (T=6): max |archc − ort|",
                                               "logits (T=6): max |llama.cpp-f32 − ort|"]


def test_tokens_where_each_contender_leaves_the_reference():
    ref = [5, 6, 7, 8, 9]
    notes = lm.check_tokens({"archc": ref, "hf-eager": ref, "ort": ref,
                             "llama.cpp-q8_0": [5, 6, 1, 2, 3], "llama.cpp-f32": [5, 0, 7, 8, 9]})
    assert notes[0] == "greedy decode: the 5 tokens of archc, ort equal hf-eager's"
    assert notes[1] == ("decode mismatch: llama.cpp-q8_0's greedy tokens leave hf-eager's at "
                        "token 2 of 5 (llama.cpp-q8_0 [1, 2, 3], hf-eager [7, 8, 9]; "
                        "quantised weights)")
    assert notes[2].startswith("**decode mismatch: llama.cpp-f32's greedy tokens leave "
                               "hf-eager's at token 1 of 5")
    assert lm.check_tokens({"archc": ref}) == []


def test_ratios_are_taken_round_by_round():
    # round 2 is slow for both: per-round ratios stay 2.0, a ratio of medians would not
    assert lm.ratio_spread([20.0, 10.0, 22.0], [10.0, 5.0, 10.0]) == "2.00× (2.00–2.20)"
    assert lm.ratio_spread([3.0], [2.0]) == "1.50×"
    assert lm.ratio_spread([], []) == "—"


CPUINFO_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
"""

CPUINFO_SPR = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni
"""


def test_cpu_info_names_the_core_and_its_isa():
    zen3 = machine.cpu_info(CPUINFO_ZEN3)
    assert (zen3["core"], zen3["isa"]) == ("Zen 3", ["AVX2", "FMA"])
    spr = machine.cpu_info(CPUINFO_SPR)
    assert spr["core"] == "Sapphire Rapids"
    assert spr["isa"] == ["AVX2", "FMA", "AVX-VNNI", "AVX-512", "AVX-512 VNNI", "AVX-512 BF16",
                          "AMX-BF16", "AMX-INT8"]
    assert machine.cpu_info("")["model"]                 # nothing readable: still a name


def test_describe_says_what_the_cpu_lacks_and_which_blas_kernel_runs(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    blas = [{"internal_api": "openblas", "version": "0.3.31", "architecture": "Haswell",
             "threading_layer": "pthreads", "num_threads": 2}]
    text = machine.describe(machine.cpu_info(CPUINFO_ZEN3), blas)
    assert text.startswith("AMD EPYC (family 25, model 1: Zen 3), ")
    assert "ISA AVX2, FMA (no AVX-512, AVX-512 BF16, AMX-BF16)" in text
    assert text.endswith("NumPy BLAS openblas 0.3.31 (kernel Haswell, pthreads)")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert machine.describe(machine.cpu_info(CPUINFO_SPR), []).endswith(
        "NumPy BLAS unknown (threadpoolctl not installed); set here: OPENBLAS_CORETYPE=Haswell")


def test_quiet_check_names_other_busy_processes_and_leaves_out_the_excluded(monkeypatch):
    hz = machine.os.sysconf("SC_CLK_TCK")
    gone = 10 ** 9          # pids with no /proc entry: their command is the name given
    snapshots = iter([{gone: ("pytest", 0), gone + 1: ("load", 0), gone + 2: ("idle", 0)},
                      {gone: ("pytest", hz // 2), gone + 1: ("load", hz // 2),
                       gone + 2: ("idle", 0), gone + 3: ("new", hz)}])
    monkeypatch.setattr(machine, "_cpu_ticks", lambda: next(snapshots))
    monkeypatch.setattr(machine.time, "sleep", lambda s: None)
    seen = machine.quiet_check(exclude={gone + 1}, interval=0.5)
    # pytest used half a second in half a second; the excluded load and a process that
    # started in between are not judged
    assert seen["busy"] == [(gone, "pytest", 1.0)]
    assert not seen["quiet"]
    assert machine.quiet_line(seen).endswith("NOT quiet: `pytest` 100%")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_quiet_check_reads_this_machine():
    load = machine.start_load()
    try:
        seen = machine.quiet_check(exclude={load.pid}, interval=0.2)
    finally:
        load.kill()
        load.wait()
    assert load.pid not in [pid for pid, _, _ in seen["busy"]]
    assert all(share > 0.1 for _, _, share in seen["busy"])
    assert len(seen["load"]) == 3


def test_quiet_summary_names_the_rounds_that_were_not_quiet():
    q = {"load": (1.0, 1.0, 1.0), "busy": [], "quiet": True}
    busy = {"load": (2.5, 1.0, 1.0), "busy": [(7, "pytest -q", 0.9)], "quiet": False}
    assert lm.quiet_summary([q, q], False).startswith("quiet machine: no other busy process")
    assert lm.quiet_summary([q, busy], True) == (
        "**not quiet** (besides the competing load): round 2: `pytest -q` 90%; "
        "load average by round 1.0, 2.5")


def test_peers_are_chosen_by_what_is_installed(monkeypatch):
    monkeypatch.setattr(lm, "missing", lambda k: None if k != "ort" else "ort skipped: no")
    assert lm.choose_peers("eager,sdpa,ort,eager") == (["hf-eager", "hf-sdpa"], ["ort skipped: no"])
    assert lm.choose_peers("none") == ([], [])
    assert contenders.missing("nope").startswith("unknown contender 'nope'")


def test_write_appends_to_results_and_keeps_what_was_there(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\nearlier runs\n")
    args = SimpleNamespace(write=True, out=str(out))
    header = ["`python benchmarks/lm.py --tiny`, today", "Machine: m", "Versions: v"]
    lm.write_results(args, header, ["### table 1"], out.read_text(), done=False)
    assert out.read_text().endswith("## Run of `python benchmarks/lm.py --tiny`, today "
                                    "(in progress)\n\nMachine: m\nVersions: v\n\n### table 1")
    lm.write_results(args, header, ["### table 1", "### table 2"],
                     "# Benchmark results\n\nearlier runs\n", done=True)
    assert out.read_text() == ("# Benchmark results\n\nearlier runs\n\n"
                               "## Run of `python benchmarks/lm.py --tiny`, today\n\n"
                               "Machine: m\nVersions: v\n\n### table 1\n### table 2")
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]
