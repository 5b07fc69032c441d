"""End to end in real Chromium: start the server, type, see heatmaps, flip the mask, visit every page, step
generation, and make sure an HTML/JS payload typed by the user is never executed or injected."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from load_test import CHROMIUM, CHROMIUM_ARGS, Server  # noqa: E402 - the load test's server and browser set-up

pytestmark = pytest.mark.browser

SHOTS = ROOT / "artifacts" / "screenshots"
PAGES = ["Home", "Attention heads", "Q, K, V", "Masking", "Generation", "From scratch", "Head analysis", "Compare"]
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
        pg.goto(server)
        yield pg
        browser.close()


def wait_idle(pg) -> None:
    """Streamlit's own e2e wait: the script is not running and no skeleton is left."""
    pg.wait_for_timeout(300)
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
    pg.wait_for_function("!document.querySelector('[data-testid=\"stSkeleton\"]')")
    pg.wait_for_timeout(300)


def no_exception(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0, pg.locator('[data-testid="stException"]').first.inner_text()


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
    heatmap = page.locator(".js-plotly-plot").first
    heatmap.wait_for()
    assert "fox" in heatmap.inner_text()  # the user's tokens label the axes
    no_exception(page)
    shot(page, "heads-causal")
    page.get_by_role("tab", name="One head").click()
    wait_idle(page)
    assert page.locator(".js-plotly-plot").count() >= 1
    page.locator('[data-testid="stSidebar"] label', has_text="Bidirectional").first.click()
    wait_idle(page)
    assert page.locator(".js-plotly-plot").count() >= 1
    assert "what-if" in page.locator('[data-testid="stMain"]').inner_text().lower()
    no_exception(page)
    shot(page, "heads-bidirectional")
    page.locator('[data-testid="stSidebar"] label', has_text="Model default").first.click()
    wait_idle(page)


def test_every_page_renders(page):
    for title in PAGES:
        goto(page, title)
        no_exception(page)
        shot(page, "page-" + title.lower().replace(",", "").replace(" ", "-"))


def test_generation_steps_five_tokens(page):
    goto(page, "Generation")
    before = page.locator('[data-testid="stMain"]').inner_text()
    for _ in range(5):
        page.get_by_role("button", name="Greedy").first.click()
        wait_idle(page)
    no_exception(page)
    after = page.locator('[data-testid="stMain"]').inner_text()
    assert "5 of at most" in after and after != before
    shot(page, "generation-5-steps")


def test_html_payload_is_not_executed(page):
    goto(page, "Home")
    set_text(page, XSS)
    for title in ("Home", "Attention heads", "Q, K, V"):
        goto(page, title)
        no_exception(page)
        assert page.evaluate("window.__xss") is None
        assert page.locator('img[src="x"]').count() == 0
        assert page.locator("main script").count() == 0
    # The text box still holds exactly what the user typed.
    assert page.locator('[data-testid="stSidebar"] textarea').first.input_value() == XSS
    shot(page, "xss-payload")
