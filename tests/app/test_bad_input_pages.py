"""The bad-input catalogue (tests/texts.py) through every page (Home, with its token table, in test_bad_input_home.py).

Each page must survive each text: no exception element, no catch-all "Something went wrong" (which would mean an
error the engine did not turn into a clear message), the text box keeps exactly what was typed, and the text never
reaches an element that renders raw HTML. Out-of-range layer/head in the URL are clamped with a message.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, assert_no_injection
from texts import TEXTS

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
