"""Every page of app.py runs in every language: ``?lang=zh`` and ``?lang=en`` (AppTest, the real embedded model),
with no exception and no error element; in Chinese the navigation's page titles are Chinese.

The pages are read from app.py's PAGES, so a page added there (Intervene) is covered without editing this file."""

from __future__ import annotations

import re

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, app_pages, assert_clean

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


PAGES = app_pages()
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # ideographs, CJK and full-width punctuation


def test_app_pages_are_found():
    assert PAGES[0] == "pages/home.py" and "pages/heads.py" in PAGES and len(PAGES) >= 8


@pytest.fixture
def navigation_titles(monkeypatch) -> list[list[str]]:
    """The page titles app.py hands to st.navigation, one list per script run."""
    seen: list[list[str]] = []
    original = st.navigation

    def recording(pages, *args, **kwargs):
        seen.append([page.title for page in pages])
        return original(pages, *args, **kwargs)

    monkeypatch.setattr(st, "navigation", recording)
    return seen


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_in_every_language(page, lang, navigation_titles):
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["lang"] = lang
    at.run()
    assert_clean(at)
    if page != PAGES[0]:
        at.switch_page(page).run()
        assert_clean(at)
    assert at.session_state["lang"] == lang and at.query_params["lang"] == lang  # kept, and kept in the link
    assert at.radio(key="lang").value == lang
    titles = navigation_titles[-1]
    assert len(titles) == len(PAGES)
    if lang == "zh":
        untranslated = [t for t in titles if not CJK.search(t)]
        assert not untranslated, f"navigation titles not in Chinese: {untranslated}"
    else:
        assert not [t for t in titles if CJK.search(t)]


def test_switching_the_language_keeps_text_model_and_view(navigation_titles):
    text = "Switching the language keeps this sentence."
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({"lang": "en", "model": "minilm", "layer": "2", "head": "5"})
    at.run()
    at.text_area(key="text").set_value(text).run()
    at.switch_page("pages/heads.py").run()
    assert_clean(at)
    at.radio(key="lang").set_value("zh").run()
    assert_clean(at)
    assert at.query_params["lang"] == "zh" and CJK.search(navigation_titles[-1][1])  # "Attention heads", in Chinese
    assert at.session_state["text"] == text and at.session_state["model_choice"] == "minilm"
    assert (at.number_input(key="heads_layer").value, at.number_input(key="heads_head").value) == (2, 5)
    assert at.query_params["text"] == text and at.query_params["layer"] == "2"


def test_the_url_parser_takes_known_languages_only():
    from explorer.ui.state import parse_url

    assert parse_url({"lang": "zh"}, allow_any_model=False).lang == "zh"
    assert parse_url({"lang": "en"}, allow_any_model=False).lang == "en"
    bad = parse_url({"lang": "zh<script>"}, allow_any_model=False)
    assert bad.lang is None and len(bad.notices) == 1 and "\\<script\\>" in bad.notices[0]  # dropped, escaped
