"""`archc generate` from the command line: text in and out through a tiny in-process
tokenizer, streamed token by token with tokens/s at the end; T5 from encoder ids; and every
user mistake an ArchError (exit 2, no traceback)."""
import io
import sys
from pathlib import Path

import numpy as np
import pytest

import archc
from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hf"

TINY = """
config { d = 16  heads = 2  vocab = 32  n_ctx = 16 }
model tiny(ids: int[B, T]) {
    param wte: float[vocab, d] = normal(0.7)
    x = embedding(ids, wte)
    repeat 2 as layers {
        x = x + Attention(RMSNorm(x), heads, causal=true, rope=true, bias=false) as attn
    }
    logits = RMSNorm(x) @ transpose(wte)
    return logits
}
"""

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song",
             "my cat likes the warm sun", "a fish swam in the cold lake"]


def _tokenizer(path, vocab_size):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers
    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(vocab_size=vocab_size,
                                                                  special_tokens=["[UNK]"]))
    tok.save(str(path))
    return tok


class Recorder(io.StringIO):
    """stdout that remembers each write, to see tokens arrive one at a time."""
    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


def _run(argv, monkeypatch, capsys):
    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    code = main(argv)
    return code, out, capsys.readouterr().err


def test_text_in_text_out_streamed(tmp_path, monkeypatch, capsys):
    tok = _tokenizer(tmp_path / "tokenizer.json", 32)
    assert tok.get_vocab_size() <= 32
    (tmp_path / "tiny.arch").write_text(TINY)
    prompt = "the cat sat on"
    code, out, err = _run(["generate", str(tmp_path / "tiny.arch"), "--tokenizer",
                           str(tmp_path / "tokenizer.json"), "--prompt", prompt, "-n", "5",
                           "--output", str(tmp_path / "new.npy")], monkeypatch, capsys)
    assert code == 0, err
    ids = tok.encode(prompt).ids
    want = archc.load(tmp_path / "tiny.arch").generate(np.array([ids]), 5).ids[0]
    np.testing.assert_array_equal(np.load(tmp_path / "new.npy")[0], want)
    text = tok.decode(ids + [int(t) for t in want])
    assert out.getvalue() == text + "\n"
    # the prompt, then one piece per new token, then the newline
    assert out.writes[0] == tok.decode(ids) and len(out.writes) == 1 + 5 + 1
    assert "".join(out.writes[1:6]) == text[len(tok.decode(ids)):]
    assert "5 tokens: " in err and "tokens/s" in err


def test_missing_tokenizers_package_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tokenizers", None)       # import now fails
    (tmp_path / "tiny.arch").write_text(TINY)
    code, out, err = _run(["generate", str(tmp_path / "tiny.arch"), "--tokenizer",
                           str(tmp_path / "t.json"), "--prompt", "hi"], monkeypatch, capsys)
    assert code == 2 and out.getvalue() == ""
    assert "needs the Hugging Face `tokenizers` package" in err and "pip install" in err


def test_tokenizer_larger_than_the_model(tmp_path, monkeypatch, capsys):
    tok = _tokenizer(tmp_path / "tokenizer.json", 64)
    big = max(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert big[1] >= 16
    (tmp_path / "tiny.arch").write_text(TINY)
    code, out, err = _run(["generate", str(tmp_path / "tiny.arch"), "--set", "vocab=16",
                           "--tokenizer", str(tmp_path / "tokenizer.json"),
                           "--prompt", f"the {big[0]}"], monkeypatch, capsys)
    assert code == 2 and out.getvalue() == ""
    assert f"token id {big[1]}, outside the model's vocabulary (0..15)" in err
    assert "tokenizer with a larger vocabulary" in err and "Traceback" not in err


def test_t5_from_encoder_ids(tmp_path, monkeypatch, capsys):
    z = np.load(FIXTURES / "t5" / "io.npz")
    np.save(tmp_path / "ids.npy", z["input_ids"][:1])
    for extra in ([], ["--decoder-start", "0"]):
        code, out, err = _run(["generate", "examples/t5.arch", "--weights",
                               str(FIXTURES / "t5"), "--input", str(tmp_path / "ids.npy"),
                               "-n", "8", *extra], monkeypatch, capsys)
        assert code == 0, err
        assert out.getvalue().split() == [str(int(t)) for t in z["greedy_ids"][:8]]
        assert "no KV cache" not in err


SEQ2SEQ_NO_START = """
config { d = 8  heads = 2  vocab = 16 }
model s2s(src: int[B, N], tgt: int[B, M]) {
    param emb: float[vocab, d] = normal(0.7)
    x = embedding(src, emb)
    y = embedding(tgt, emb)
    y = y + Attention(y, heads, causal=true) as attn
    y = y + Attention(y, heads, kv=x) as cross
    logits = y @ transpose(emb)
    return logits
}
"""

NO_LOGITS = """
model m(ids: int[B, T]) {
    param wte: float[16, 8] = normal(1.0)
    h = embedding(ids, wte)
    return hidden = h, pooled = take(h, axis=1, index=0)
}
"""


@pytest.mark.parametrize("source, prompt, extra, message", [
    ("examples/ffn.arch", [[1, 2]], [], "generate needs"),
    (NO_LOGITS, [[1, 2]], [], "generate needs an output named `logits`"),
    (NO_LOGITS.replace("hidden = h, pooled = ", "y = "), [[1, 2]], [],
     "generate needs logits of shape (B, T, vocab); output `y` is float[B, 8]"),
    (SEQ2SEQ_NO_START, [[1, 2, 3]], [], "declares no decoder start token"),
    (SEQ2SEQ_NO_START, [[1, 2, 3]], ["--decoder-start", "16"],
     "the decoder start has token id 16, outside the model's vocabulary (0..15)"),
    (TINY, [list(range(20))], [], "the prompt has 20 tokens but the model's context is 16"),
    (TINY, [[1, 2, 40]], [], "the prompt has token id 40, outside the model's vocabulary"),
    (TINY, [[1, -1]], [], "the prompt has token id -1"),
    (TINY, [[1, 2]], ["-n", "20"], "need 21 positions but the KV cache holds 16"),
    (TINY, [[1, 2]], ["--max-seq", "4", "-n", "5"], "(--max-seq 4)"),
])
def test_user_errors_are_arch_errors(tmp_path, monkeypatch, capsys, source, prompt, extra,
                                     message):
    arch = source
    if not source.endswith(".arch"):
        arch = str(tmp_path / "m.arch")
        Path(arch).write_text(source)
    np.save(tmp_path / "p.npy", np.array(prompt, np.int64))
    code, out, err = _run(["generate", arch, "--input", str(tmp_path / "p.npy"), *extra],
                          monkeypatch, capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err and "internal error" not in err
    assert out.getvalue() == ""          # nothing streamed before the error


def test_named_prompt_input_and_several_stop_tokens(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.arch").write_text(TINY)
    np.save(tmp_path / "p.npy", np.array([[1, 2, 3]]))
    assert main(["generate", "tiny.arch", "-i", "ids=p.npy", "-n", "12", "-o", "all.npy"]) == 0
    full = np.load(tmp_path / "all.npy")[0]
    capsys.readouterr()
    # stop at whichever of two ids comes first
    a, b = int(full[5]), int(full[2])
    first = min(i for i, t in enumerate(full) if t in (a, b))
    assert main(["generate", "tiny.arch", "-i", "ids=p.npy", "-n", "12", "--eos", str(a),
                 "--eos", str(b), "-o", "stop.npy"]) == 0
    got = np.load(tmp_path / "stop.npy")[0]
    np.testing.assert_array_equal(got[:first + 1], full[:first + 1])
    assert main(["generate", "tiny.arch", "-i", "idz=p.npy", "-n", "2"]) == 2
    assert "no input named `idz`" in capsys.readouterr().err


def test_stop_strings_end_the_text(tmp_path, monkeypatch, capsys):
    tok = _tokenizer(tmp_path / "tokenizer.json", 32)
    (tmp_path / "tiny.arch").write_text(TINY)
    ids = tok.encode("the cat sat on").ids
    free = archc.load(tmp_path / "tiny.arch").generate(np.array([ids]), 8).ids[0]
    words = tok.decode([int(t) for t in free]).split()
    stop = words[2]
    first = words.index(stop)               # the stop word's first place in the text
    code, out, err = _run(["generate", str(tmp_path / "tiny.arch"), "--tokenizer",
                           str(tmp_path / "tokenizer.json"), "--prompt", "the cat sat on",
                           "-n", "8", "--stop", stop, "--stop", "no such words here"],
                          monkeypatch, capsys)
    assert code == 0, err
    assert out.getvalue() == tok.decode(ids + [int(t) for t in free[:first + 1]]) + "\n"
    assert err.splitlines()[-1].startswith(f"{first + 1} token")


def test_stop_strings_need_a_tokenizer(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.arch").write_text(TINY)
    np.save(tmp_path / "p.npy", np.array([[1, 2]]))
    code, _, err = _run(["generate", str(tmp_path / "tiny.arch"), "-i",
                         str(tmp_path / "p.npy"), "--stop", "x"], monkeypatch, capsys)
    assert code == 2 and "--stop is text and needs --tokenizer" in err
    with pytest.raises(archc.ArchError, match="stop strings need a tokenizer"):
        archc.load(tmp_path / "tiny.arch").generate(np.array([[1, 2]]), 2, stop_strings=["x"])
