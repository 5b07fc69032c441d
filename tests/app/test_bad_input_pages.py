"""The bad-input catalogue (tests/texts.py) through every page; Home also with its token table.

Each page must survive each text: no exception element, no catch-all "Something went wrong" (which would mean an
error the engine did not turn into a clear message), the text box keeps exactly what was typed, and the text never
reaches an element that renders raw HTML. Out-of-range layer/head in the URL are clamped with a message.
"""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from explorer.capture.tokens import display_label
from explorer.escape import md_escape
from explorer.ui.home import STRIP_TOKENS
from explorer.ui.settings import Settings

from apptest_helpers import APP, assert_no_injection
from texts import LONG, TEXT_ERRORS, TEXTS

APP_CAP = Settings.from_env().max_tokens  # the app's cap (1024 by default), which the Home page applies

PAGES = [
    "pages/heads.py",
    "pages/qkv.py",
    "pages/masking.py",
    "pages/generation.py",
    "pages/scratch.py",
    "pages/analysis.py",
    "pages/compare.py",
]
PAGE_TEXTS = ["empty", "whitespace-only", "one-character", "10k-tokens", "emoji", "rtl-arabic-hebrew",
              "zero-width-joiners", "control-characters", "nul", "script-tag", "img-onerror",
              "markdown-latex-injection"]

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


def assert_survived(at, text: str) -> None:
    assert not at.exception, [e.value for e in at.exception]
    generic = [e.value for e in at.error if "Something went wrong" in e.value]
    assert not generic, generic
    assert at.text_area(key="text").value == text
    assert_no_injection(at, text)


@pytest.mark.parametrize("tid", PAGE_TEXTS)
@pytest.mark.parametrize("page", PAGES)
def test_page_survives_bad_text(page: str, tid: str):
    text = TEXTS[tid]
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.text_area(key="text").set_value(text).run()
    at.switch_page(page).run()
    assert_survived(at, text)
    if tid in ("empty", "whitespace-only") and page != "pages/generation.py":
        assert any("text is empty" in e.value for e in at.error), [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_out_of_range_layer_and_head_in_url(page: str):
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({"layer": "999", "head": "-3", "mask": "sideways", "device": "tpu", "model": "smollm2"})
    at.run()
    at.switch_page(page).run()
    assert_survived(at, at.text_area(key="text").value)
    if page in ("pages/heads.py", "pages/qkv.py"):
        assert any("out of range" in w.value for w in at.warning), [w.value for w in at.warning]


@pytest.mark.parametrize("tid", list(TEXTS))
def test_home_page_survives(tid: str, smollm2):
    from streamlit.testing.v1 import AppTest

    text = TEXTS[tid]
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.text_area(key="text").set_value(text).run()

    assert not at.exception, [e.value for e in at.exception]
    assert at.text_area(key="text").value == text  # the box keeps exactly what the user typed
    assert_no_injection(at, text)
    if tid in TEXT_ERRORS:
        assert any(re.search(TEXT_ERRORS[tid], e.value, re.IGNORECASE) for e in at.error), [e.value for e in at.error]
        return
    assert not at.error, [e.value for e in at.error]
    expected = smollm2.encode(text, max_tokens=APP_CAP)
    # Home's token strip: the model's own tokens, each one escaped chip, and how many there are.
    chips = " ".join(f":gray-background[{md_escape(display_label(t))}]" for t in expected.tokens[:STRIP_TOKENS])
    assert any(m.value == chips for m in at.markdown)
    n = len(expected.token_ids)
    assert any(c.value.startswith(f"{n} token") for c in at.caption), [c.value for c in at.caption]
    if tid in LONG:
        assert n == APP_CAP
        assert any(f"{n - STRIP_TOKENS} more tokens" in c.value for c in at.caption)
        assert any(f"{expected.truncated_from:,} tokens" in i.value for i in at.info)


def test_injection_check_catches_raw_html():
    """The checker above is not vacuous: it flags a page that echoes the text into unsafe markdown or st.html."""
    from streamlit.testing.v1 import AppTest

    def leaky_page():
        import streamlit as st

        st.markdown("safe words")
        st.markdown(f"<b>{st.session_state['text']}</b>", unsafe_allow_html=True)

    def leaky_html():
        import streamlit as st

        st.html(f"<div>{st.session_state['text']}</div>")

    for script in (leaky_page, leaky_html):
        at = AppTest.from_function(script)
        at.session_state["text"] = TEXTS["img-onerror"]
        at.run()
        assert not at.exception
        with pytest.raises(AssertionError, match="unsafe element"):
            assert_no_injection(at, TEXTS["img-onerror"])
