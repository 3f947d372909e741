"""The web page of ``lantern serve`` in a real browser: Debian's chromium driven by Playwright,
against a real server on 127.0.0.1 with tiny runs (a chat run, a base run and a scripted
'thinker' that always thinks). Screenshots go to each test's temporary folder."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from serve_helpers import ANSWER, THOUGHT, Server, make_runs

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("uvicorn")
CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)", allow_module_level=True)

from lanternlm.serve.app import ServeConfig, create_app, load_models  # noqa: E402

DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
DONE = "() => document.querySelector('#stop').hidden && !document.querySelector('.cursor')"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def server(runs):
    models = load_models([str(runs["chat"]), str(runs["base"]), str(runs["thinker"])], ServeConfig(max_batch=4))
    server = Server(create_app(models))
    yield server
    server.close()
    for m in models:
        m.worker.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


class Page:
    """One browser context (its own localStorage) on the page; records console errors and
    the chat requests the page sends."""

    def __init__(self, browser, url: str, viewport=DESKTOP, scheme: str = "light") -> None:
        self.context = browser.new_context(viewport=viewport, color_scheme=scheme)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[dict] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._request)
        self.url = url
        self.open()

    def _request(self, request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
            self.requests.append(json.loads(request.post_data))

    def open(self) -> None:
        self.page.goto(self.url + "/")
        self.page.wait_for_function("() => document.querySelectorAll('#model option').length > 0")

    def set(self, selector: str, value) -> None:
        """Set an input as a person would (the input and change events fire)."""
        self.page.eval_on_selector(selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', {bubbles: true}));"
                                             " e.dispatchEvent(new Event('change', {bubbles: true})); }", str(value))

    def chat(self, model: str, level: str, text: str, *, seed=7, tokens=12, temperature=0.9) -> None:
        self.page.select_option("#model", model)
        self.page.select_option("#level", level)
        self.set("#seed", seed)
        self.set("#max_tokens", tokens)
        self.set("#temperature", temperature)
        self.page.fill("#input", text)
        self.page.press("#input", "Enter")
        self.page.wait_for_function(DONE)

    def tokens(self) -> list[int]:
        return [int(x) for x in self.page.eval_on_selector_all(".msg.assistant .tok", "s => s.map(x => x.dataset.id)")]

    def popover(self, k: int) -> list[tuple[int, float, float | None]]:
        """Open answer token k's popover: its rows as (id, raw logprob, filtered logprob)."""
        self.page.locator(".msg.assistant .tok").nth(k).click()
        self.page.wait_for_selector("#popover:not([hidden]) tr[data-id]")
        rows = self.page.eval_on_selector_all("#popover tr[data-id]", "rs => rs.map(r => [r.dataset.id, "
                                                                       "r.dataset.logprob, r.dataset.filteredLogprob])")
        return [(int(i), float(lp) if lp else None, float(f) if f else None) for i, lp, f in rows]

    def shot(self, path) -> None:
        self.page.screenshot(path=str(path))

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


def test_chat_streams_and_every_token_shows_the_apis_distribution(browser, server, tmp_path):
    page = Page(browser, server.url)
    p = page.page
    p.evaluate("""() => { window.counts = []; new MutationObserver(() => window.counts.push(
        document.querySelectorAll('.msg.assistant .tok').length)).observe(document.querySelector('#messages'),
        {childList: true, subtree: true}); }""")
    page.chat("chat", "none", "hi", tokens=24)
    counts = p.evaluate("window.counts")
    final = len(page.tokens())
    assert final == 24 and 0 < min(c for c in counts if c) < final  # the answer arrived in pieces
    # the same request without streaming: the page's popovers hold the API's numbers
    body = {**page.requests[-1], "stream": False}
    body.pop("stream_options")
    api = httpx.post(server.url + "/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]["content"]
    assert [e["id"] for e in api] == page.tokens()
    seen = []
    for k in (0, 3):
        rows = page.popover(k)
        want = api[k]
        assert [(r[0], r[1]) for r in rows[:10]] == [(a["id"], pytest.approx(a["logprob"], abs=1e-5)) for a in want["top_logprobs"]]
        filtered = {a["id"]: a["logprob"] for a in want["filtered_top_logprobs"]}
        assert all(f == pytest.approx(filtered[i], abs=1e-5) for i, _, f in rows if i in filtered)
        assert p.locator("#popover tr.chosen").get_attribute("data-id") == str(want["id"])
        seen.append(rows)
    assert seen[0] != seen[1]
    page.shot(tmp_path / "popover.png")
    # branch at token 2: another candidate there, the same tokens before it
    before = page.tokens()
    rows = page.popover(2)
    other = next(i for i, _, _ in rows if i != before[2])
    p.locator(f"#popover tr[data-id='{other}']").click()
    p.wait_for_function(DONE)
    after = page.tokens()
    assert after[:2] == before[:2] and after[2] == other and len(after) > 3
    assert p.locator(".tok.branched").count() == 1
    assert page.requests[-1]["reply_prefix"][-1] == other
    # the conversation survives a reload, distributions included
    p.reload()
    p.wait_for_selector(".msg.assistant .tok")
    assert page.tokens() == after and p.locator(".tok.branched").count() == 1
    assert page.popover(0) == seen[0]
    page.close()


def test_temperature_slider_reshapes_the_next_token_bars(browser, server, tmp_path):
    page = Page(browser, server.url)
    p = page.page
    page.chat("chat", "none", "hi", temperature=1)
    p.click(".tabs [data-tab='next']")
    p.wait_for_selector("#panel-next tr[data-id]")
    read = lambda: p.eval_on_selector_all("#panel-next tr[data-id]", "rs => rs.map(r => [+r.dataset.raw, +r.dataset.filtered])")
    before = read()
    assert [f for _, f in before] == pytest.approx([r for r, _ in before], rel=1e-5)  # temperature 1, no filter: raw
    p.focus("#temperature")
    for _ in range(14):
        p.keyboard.press("ArrowLeft")  # 1 -> 0.3, as a person moves the slider
    assert p.input_value("#temperature") == "0.3"
    p.wait_for_selector("#panel-next[data-temperature='0.3']")
    after = read()
    assert [r for r, _ in after] == [r for r, _ in before]  # the raw distribution stays
    assert after[0][1] > before[0][1]  # cooler: the top gains, and the others fall behind it as (p_i/p_0)^(1/T)
    assert [f / after[0][1] for _, f in after] == pytest.approx([(r / after[0][0]) ** (1 / 0.3) for r, _ in after], rel=1e-3)
    page.set("#top_k", 3)
    p.wait_for_function("() => document.querySelector('#panel-next .kept').textContent === '3'")
    assert p.locator("#panel-next .removed").count() == 7
    page.shot(tmp_path / "next_token.png")
    page.close()


def test_the_reasoning_level_turns_thinking_on_and_it_folds(browser, server, runs, tmp_path):
    page = Page(browser, server.url)
    p = page.page
    page.chat("thinker", "none", "hi", temperature=0, tokens=64)
    assert p.locator("details.thinking").count() == 0
    p.evaluate("""() => { window.folded = 0; new MutationObserver(rs => rs.forEach(r => {
        if (r.target.matches('details.thinking') && r.oldValue !== null) window.folded++; }))
        .observe(document.querySelector('#messages'), {subtree: true, attributeFilter: ['open'], attributeOldValue: true}); }""")
    p.select_option("#level", "high")
    p.click("#regenerate")
    p.wait_for_function(DONE)
    details = p.locator("details.thinking")
    assert details.count() == 1 and details.get_attribute("open") is None
    assert p.evaluate("window.folded") == 1  # open while it thought, folded when the answer began
    thought = len(runs["tokenizer"].encode(THOUGHT)) + 2  # its markers included, as the API counts
    assert p.inner_text("details.thinking summary") == f"Thought for {thought} tokens"
    assert p.inner_text(".msg.assistant .answer") == ANSWER
    p.click("details.thinking summary")
    assert p.inner_text(".thought") == THOUGHT
    page.shot(tmp_path / "thinking.png")
    page.close()


def test_attention_panel_hover_reads_a_row(browser, server, tmp_path):
    page = Page(browser, server.url)
    p = page.page
    page.chat("chat", "none", "the cat sat")
    p.click(".tabs [data-tab='attention']")
    canvas = p.wait_for_selector("#panel-attention canvas.heat")
    n = p.locator("#panel-attention .chip").count()
    box = canvas.bounding_box()
    p.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * (n - 0.5) / n)  # the last row
    p.wait_for_selector("#panel-attention .readout[data-row]")
    assert p.get_attribute("#panel-attention .readout", "data-row") == str(n - 1)
    assert "attends most to" in p.inner_text("#panel-attention .readout")
    p.select_option("#panel-attention select[aria-label=head]", "1")
    p.wait_for_function("() => !document.querySelector('#panel-attention .readout[data-row]')")
    p.hover("#panel-attention .chip >> nth=3")
    assert p.get_attribute("#panel-attention .readout", "data-row") == "3"
    page.shot(tmp_path / "attention.png")
    for tab in ("tokens", "embeddings", "model"):
        p.click(f".tabs [data-tab='{tab}']")
        p.wait_for_selector(f"#panel-{tab} .{'pieces' if tab == 'tokens' else 'emb-list' if tab == 'embeddings' else 'kv'}")
    page.close()


def test_keyboard_new_line_stop_and_new_chat(browser, server, runs):
    page = Page(browser, server.url)
    p = page.page
    p.select_option("#model", "chat")
    p.select_option("#level", "none")
    page.set("#max_tokens", 400)
    p.click("#input")
    p.keyboard.type("one")
    p.keyboard.press("Shift+Enter")  # a new line, not a message
    p.keyboard.type("two")
    assert p.input_value("#input") == "one\ntwo" and p.locator(".msg").count() == 0
    p.evaluate("""() => new MutationObserver((_, o) => { if (document.querySelector('.msg.assistant .tok')) {
        o.disconnect(); document.querySelector('#stop').click(); } }).observe(document.querySelector('#messages'),
        {childList: true, subtree: true})""")  # Stop as soon as the answer starts
    p.keyboard.press("Enter")
    p.wait_for_function(DONE)
    assert p.inner_text(".msg.user") == "one\ntwo"
    assert 0 < len(page.tokens()) < 300 and "stopped" in p.inner_text(".msg.assistant .meta")
    p.click("#new-chat")
    assert p.locator(".msg").count() == 0 and p.locator(".empty").count() == 1
    page.close()


def test_base_runs_get_a_completion_playground(browser, server):
    page = Page(browser, server.url)
    p = page.page
    p.select_option("#model", "base")
    assert p.locator("#chat-controls").is_hidden()
    page.set("#max_tokens", 6)
    p.fill("#input", "the cat")
    p.press("#input", "Enter")
    p.wait_for_function(DONE)
    assert len(page.tokens()) == 6
    rows = page.popover(1)
    assert len(rows) >= 10 and p.locator("#popover tr.chosen").count() == 1
    page.close()


@pytest.mark.parametrize("viewport,scheme", [(DESKTOP, "light"), (PHONE, "dark")], ids=["desktop-light", "phone-dark"])
def test_readable_at_desktop_and_phone_width(browser, server, tmp_path, viewport, scheme):
    page = Page(browser, server.url, viewport, scheme)
    p = page.page
    page.chat("thinker", "high", "hi", temperature=0, tokens=64)
    page.popover(1)
    assert p.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # nothing runs off the side
    pop = p.locator("#popover").bounding_box()
    assert pop["x"] >= 0 and pop["x"] + pop["width"] <= viewport["width"]
    dark = p.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (dark == "rgb(20, 20, 22)") == (scheme == "dark")
    page.shot(tmp_path / f"page_{viewport['width']}_{scheme}.png")
    p.keyboard.press("Escape")
    for tab, ready in (("tokens", ".pieces"), ("attention", "canvas"), ("next", "tr[data-id]"), ("embeddings", ".emb-list"),
                       ("model", "table.mem")):
        p.click(f".tabs [data-tab='{tab}']")
        p.wait_for_selector(f"#panel-{tab} {ready}")
        assert p.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), tab
        p.screenshot(path=str(tmp_path / f"{tab}_{viewport['width']}_{scheme}.png"), full_page=True)
    page.close()
