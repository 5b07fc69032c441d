"""The bad-input catalogue (tests/texts.py) typed into the real app's sidebar (AppTest, Home page): the text box keeps
exactly what was typed, nothing raises, the tokens shown are the engine's, and the user's text never lands in an
element that renders raw HTML."""

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

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


@pytest.mark.parametrize("tid", list(TEXTS))
def test_home_page_survives(tid: str, smollm2):
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
