"""End to end in real Chromium: start the server, type, see heatmaps, flip the mask, visit every page, step
generation, and make sure that HTML/JS/Markdown payloads, typed or in a crafted link, are never executed or
rendered as markup: every link and image on the page is one the app put there.

A page passes only without an exception box and without an error alert (``ui.guard`` shows unexpected errors as
``st.error``), unless the test expects one; chart checks look inside the open tab's panel only.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from crafted import BAD_INDICES, MODEL_LINKS, TAG_TEXT, TAG_TOKENS, TEXT_PAYLOAD, tag_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from load_test import CHROMIUM, CHROMIUM_ARGS, Server  # noqa: E402 - the load test's server and browser set-up

pytestmark = pytest.mark.browser

SHOTS = ROOT / "artifacts" / "screenshots"
PAGES = ["Home", "Attention heads", "Q, K, V", "Masking", "Generation", "From scratch", "Head analysis", "Intervene",
         "Explain", "Compare"]
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> **bold** $x^2$ 大规模'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is required for the browser test (`make test` installs it).")
    # Its log goes to a file (a pipe nobody reads would block a chatty server) and it stops with its children.
    with Server(_free_port(), dict(os.environ, PYTHONPATH=str(ROOT))) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
        )
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(180_000)
        pg.dialogs = []  # alert(), confirm(), prompt() a payload might open
        pg.on("dialog", lambda dialog: (pg.dialogs.append(dialog.message), dialog.dismiss()))
        pg.goto(server)
        yield pg
        browser.close()


def wait_idle(pg) -> None:
    """Streamlit's own e2e wait: the script is not running and no skeleton is left."""
    pg.wait_for_timeout(300)
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
    pg.wait_for_function("!document.querySelector('[data-testid=\"stSkeleton\"]')")
    pg.wait_for_timeout(300)


EXCEPTION = '[data-testid="stException"]'
ERROR_ALERT = '[data-testid="stAlertContentError"]'  # st.error, which ui.guard uses for anything unexpected


def no_exception(pg) -> None:
    assert pg.locator(EXCEPTION).count() == 0, pg.locator(EXCEPTION).first.inner_text()


def no_error(pg) -> None:
    """Neither an exception box nor an error alert (a "Something went wrong" would otherwise pass)."""
    no_exception(pg)
    assert pg.locator(ERROR_ALERT).count() == 0, pg.locator(ERROR_ALERT).first.inner_text()


def open_tab_charts(pg) -> list[str]:
    """The titles of the plotly charts inside the open tab's panel (closed tabs' charts do not count)."""
    return pg.evaluate("""() => {
        const tab = document.querySelector('[role="tab"][aria-selected="true"]');
        const panel = tab && document.querySelector(`[role="tabpanel"][aria-labelledby="${tab.id}"]`);
        if (!panel || panel.hidden) return [];
        const title = plot => (plot.querySelector('.gtitle') || {}).textContent || '';
        return [...panel.querySelectorAll('.js-plotly-plot')].map(title);
    }""")


# The one external address the app itself uses: Streamlit draws the page icon (app.py's ":material/visibility:") from
# Google's Material Symbols.
KNOWN_EXTERNAL = ["https://fonts.gstatic.com/s/i/short-term/release/materialsymbolsrounded/visibility/"]


def foreign_links(pg) -> list[str]:
    """Every link or image on the page that points anywhere but this app, an inline data: image or
    :data:`KNOWN_EXTERNAL`."""
    return pg.evaluate("""(known) => {
        const origin = window.location.origin + '/';
        const out = [];
        for (const el of document.querySelectorAll('a, area, img, image, iframe, source, video, audio, link[href]')) {
            for (const name of ['href', 'xlink:href', 'src', 'srcset']) {
                const value = el.getAttribute(name);
                if (value === null) continue;
                const url = new URL(value, window.location.href).href;
                const inApp = url.startsWith(origin) || value.startsWith('#');
                const inlineImage = el.tagName.toLowerCase() !== 'a' && url.startsWith('data:image/');
                const appsOwn = known.some(prefix => url.startsWith(prefix));
                if (!inApp && !inlineImage && !appsOwn) out.push(`${el.tagName} ${name}=${value}`);
            }
        }
        return out;
    }""", KNOWN_EXTERNAL)


def assert_no_markup(pg) -> None:
    """No link or image the app did not put there, no script effect, no dialog."""
    assert foreign_links(pg) == []
    assert pg.evaluate("window.__xss") is None
    assert pg.dialogs == []


def set_text(pg, text: str) -> None:
    box = pg.locator('[data-testid="stSidebar"] textarea').first
    box.fill(text)
    box.press("Control+Enter")
    wait_idle(pg)


def goto(pg, title: str) -> None:
    pg.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    wait_idle(pg)


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_type_see_heatmaps_flip_mask(page):
    wait_idle(page)
    set_text(page, "The quick brown fox jumps over the lazy dog.")
    goto(page, "Attention heads")
    page.locator(".js-plotly-plot").first.wait_for()
    assert open_tab_charts(page) == ["Layer 0: all 9 heads"]  # the default tab: every head of layer 0
    panel_chart = page.locator(".js-plotly-plot").first
    assert "fox" in panel_chart.inner_text()  # the user's tokens label the axes
    no_error(page)
    shot(page, "heads-causal")
    page.get_by_role("tab", name="One head").click()
    wait_idle(page)
    assert open_tab_charts(page) == ["Layer 0 · head 0 · kv 0"]
    page.locator('[data-testid="stSidebar"] label', has_text="Bidirectional").first.click()
    wait_idle(page)
    assert open_tab_charts(page) == ["Layer 0 · head 0 · kv 0"]
    assert "what-if" in page.locator('[data-testid="stMain"]').inner_text().lower()
    no_error(page)
    shot(page, "heads-bidirectional")
    page.locator('[data-testid="stSidebar"] label', has_text="Model default").first.click()
    wait_idle(page)


def test_every_page_renders(page):
    for title in PAGES:
        goto(page, title)
        no_error(page)
        assert_no_markup(page)
        shot(page, "page-" + title.lower().replace(",", "").replace(" ", "-"))


def test_generation_steps_five_tokens(page):
    goto(page, "Generation")
    before = page.locator('[data-testid="stMain"]').inner_text()
    for _ in range(5):
        page.get_by_role("button", name="Greedy").first.click()
        wait_idle(page)
    no_error(page)
    after = page.locator('[data-testid="stMain"]').inner_text()
    assert "5 of at most" in after and after != before
    shot(page, "generation-5-steps")


def test_html_payload_is_not_executed(page):
    goto(page, "Home")
    set_text(page, XSS)
    for title in ("Home", "Attention heads", "Q, K, V"):
        goto(page, title)
        no_error(page)
        assert_no_markup(page)
        assert page.locator('img[src="x"]').count() == 0
        assert page.locator("main script").count() == 0
    # The text box still holds exactly what the user typed.
    assert page.locator('[data-testid="stSidebar"] textarea').first.input_value() == XSS
    shot(page, "xss-payload")


# ---- crafted links ------------------------------------------------------------------------------------------------
def visit(pg, server: str, path: str, query: dict) -> None:
    pg.goto(f"{server}/{path}?{urlencode(query)}")
    wait_idle(pg)


def main_text(pg) -> str:
    return pg.locator('[data-testid="stMain"]').inner_text().replace("\u2060", "")


@pytest.mark.parametrize("cid", list(MODEL_LINKS))
def test_crafted_model_link(page, server, cid):
    model = MODEL_LINKS[cid]
    visit(page, server, "heads", {"model": model})
    no_exception(page)
    assert_no_markup(page)
    alert = page.locator(ERROR_ALERT)
    assert alert.count() == 1  # the model does not load, and says so, quoting the link's value as text
    assert " ".join(model.split()) in " ".join(alert.inner_text().replace("\u2060", "").split())
    if cid == "markdown-link":
        shot(page, "crafted-model-link")


def test_crafted_indices_enums_and_text(page, server):
    for path, query in [("heads", {"layer": "²"}), ("qkv", {"head": "³"}),
                        *(("heads", {"layer": raw, "head": raw}) for raw in BAD_INDICES),
                        ("masking", {"mask": "[m](https://evil.example/m)", "device": "<https://evil.example/d>"}),
                        ("qkv", {"text": TEXT_PAYLOAD})]:
        visit(page, server, path, query)
        no_error(page)
        assert_no_markup(page)
        assert page.locator(".js-plotly-plot").count() >= 1, (path, query)  # the page itself still renders
        if "text" not in query:
            assert "was ignored" in main_text(page), (path, query)
    assert page.locator('[data-testid="stSidebar"] textarea').first.input_value() == TEXT_PAYLOAD
    shot(page, "crafted-text")


@pytest.fixture(scope="module")
def tag_folder(tmp_path_factory) -> str:
    return tag_model(tmp_path_factory.mktemp("tag_tokens"))


def test_tag_tokens_on_every_page(page, server, tag_folder):
    """Tokens that are whole tags and Markdown, in every chart, caption, metric and table of every page."""
    tabs = {"heads": ["Heads of one layer", "All layers × heads", "One head", "Lines (head view)"],
            "analysis": ["Statistics", "Q/K geometry", "Logit lens", "Rollout", "Export"],
            "scratch": ["Textbook vs the model", "The tutorial variant"]}
    for path in ("", "heads", "qkv", "masking", "generation", "scratch", "analysis", "compare"):
        visit(page, server, path, {"model": tag_folder, "text": TAG_TEXT, "layer": "1", "head": "2"})
        for tab in tabs.get(path, [None]):
            if tab is not None:
                page.get_by_role("tab", name=tab, exact=True).click()
                wait_idle(page)
            no_error(page)
            assert_no_markup(page)
            assert page.locator('[data-testid="stMain"] script, [data-testid="stMain"] b').count() == 0
        if path == "qkv":
            # The data is kept: the charts label their axes with the tokens themselves, shown as text.
            ticks = page.eval_on_selector_all(".js-plotly-plot .xtick text", "ticks => ticks.map(t => t.textContent)")
            assert any(t.endswith("<b>bold</b>") for t in ticks), ticks
            shot(page, "tag-tokens-qkv")
    assert set(TAG_TOKENS) <= set(page.locator('[data-testid="stSidebar"] textarea').first.input_value().split("\n"))


# ---- 简体中文 -------------------------------------------------------------------------------------------------------
PATHS = ["", "heads", "qkv", "masking", "generation", "scratch", "analysis", "intervene", "compare"]
CJK = re.compile(r"[\u4e00-\u9fff]")


def english_paragraphs(pg, text: str) -> list[str]:
    """Visible paragraphs of four or more English words and no Chinese, leaving out the user's own text and tokens."""
    own = set(re.findall(r"[A-Za-z]+", text))
    found = []
    for para in pg.locator('[data-testid="stMain"] p').all_inner_texts():  # prose, captions and alerts alike
        words = [w for w in re.findall(r"[A-Za-z]{3,}", para) if w not in own]
        if len(words) >= 4 and not CJK.search(para):
            found.append(para)
    return found


def test_every_page_speaks_chinese(page, server):
    text = "The cat sat on the mat because it was tired."
    for path in PATHS:
        visit(page, server, path, {"lang": "zh", "text": text})
        no_error(page)
        labels = [item.split("\n")[-1] for item in page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()]
        assert len(labels) == len(PAGES) and not set(labels) & set(PAGES), labels  # none left in English
        assert all(CJK.search(label) or not re.search("[A-Za-z]{2,}", label) for label in labels), labels  # Q、K、V
        title = page.locator("h1").first.inner_text()
        assert CJK.search(title) or title == "Attention Explorer", (path, title)  # Home's title is the product's name
        assert not english_paragraphs(page, text), (path, english_paragraphs(page, text))
        shot(page, "zh-" + (path or "home"))
    visit(page, server, "analysis", {"lang": "en", "text": text})  # the detector is not blind: English is found
    assert english_paragraphs(page, text)
