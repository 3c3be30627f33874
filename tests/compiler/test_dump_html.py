"""`archc dump -f html` in a real browser: headless Chromium (Debian's package) driven over
the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no extra package). The
GPT-2 example's page loads with no console error, no exception and no request that leaves
the file; every layer is listed; scopes open and close; a click on a node in the picture
finds its row. Skipped where Chromium is not installed (CI installs it: .ci/run)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from archc.cli import main
from archc.compiler.dump import layer_groups
from archc.compiler.pipeline import run_pipeline
from archc.dsl.lower import lower

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


class Browser:
    """One headless Chromium; `send` a DevTools command and get its result; `events` holds
    every event received so far."""

    def __init__(self, profile: Path):
        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()

        def wire():                 # the protocol's pipe is fds 3 (commands) and 4 (replies)
            a = fcntl.fcntl(to_chrome, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire, close_fds=False)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session = None

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self.events.append(self._read(deadline))

    def js(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


def problems(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions, failed loads and requests that leave the file."""
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails'].get('text')} "
                       f"{p['exceptionDetails'].get('exception', {}).get('description')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
        elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            out.append(f"log {p['entry']['level']}: {p['entry'].get('text')}")
        elif m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                out.append(f"network request: {url}")
        elif m == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText')}")
    return out


@pytest.fixture(scope="module")
def gpt2_page(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed")
    d = tmp_path_factory.mktemp("html")
    page = d / "gpt2.html"
    assert main(["dump", str(ROOT / "examples" / "gpt2.arch"), "-f", "html", "-o",
                 str(page)]) == 0
    browser = Browser(d / "profile")
    try:
        browser.open(page.as_uri())
        yield browser, page
    finally:
        browser.close()


@needs_chromium
def test_the_gpt2_page_loads_cleanly_and_lists_every_layer(gpt2_page):
    browser, page = gpt2_page
    assert problems(browser.events) == []
    g = run_pipeline(lower(ROOT / "examples" / "gpt2.arch")).graph
    want = [grp.name or "(model)" for grp in layer_groups(g)]
    assert len(want) == 15 and "layers.11" in want           # (model): wte, wpe, 12, ln_f
    shown = browser.js("""Array.from(document.querySelectorAll('details.layer > summary'))
        .filter(s => s.checkVisibility())
        .map(s => s.querySelector('.row span').textContent)""")
    assert shown == want
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text and "http://" not in text.replace(
        "http://www.w3.org/", "")                                   # SVG's namespaces only


@needs_chromium
def test_scopes_open_and_close(gpt2_page):
    browser, _ = gpt2_page
    visible = """(() => { const r = document.querySelector(
        '#layer-layers\\\\.3 details.scope details.scope tr');
        return r.checkVisibility(); })()"""
    assert browser.js(visible) is False                             # closed by default
    browser.js("document.getElementById('open-all').click()")
    assert browser.js(visible) is True
    browser.js("document.getElementById('close-all').click()")
    assert browser.js(visible) is False
    assert problems(browser.events) == []


@needs_chromium
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_a_click_on_the_picture_finds_the_node(gpt2_page):
    browser, _ = gpt2_page
    found = browser.js("""(() => {
        const g = Array.from(document.querySelectorAll('.picture g.node'))
            .find(n => n.querySelector('title').textContent === 'layers.0.mlp.up.linear');
        g.dispatchEvent(new MouseEvent('click', {bubbles: true}));
        const hit = document.querySelector('tr.hit');
        return [hit.dataset.node, hit.checkVisibility()];
    })()""")
    assert found == ["layers.0.mlp.up.linear", True]
    assert problems(browser.events) == []


def test_the_page_without_graphviz_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "ffn.html"
    assert main(["dump", str(ROOT / "examples" / "ffn.arch"), "-f", "html", "--dim", "T=8",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert "no picture: drawing the picture (--format svg, png, html) needs Graphviz" in text
    assert "<svg" not in text and 'id="layer-hidden"' in text
    assert "warning: the page has no picture" in capsys.readouterr().err
