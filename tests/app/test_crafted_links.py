"""Crafted links and hostile token strings: every string from outside reaches the page as data, never as markup.

Anyone can send a link to the app, so a URL parameter is as hostile as typed text. These tests open the app the way
such a link does (AppTest, one run on the linked page) and check what would reach the browser:

- no exception box, no catch-all "Something went wrong", and a notice for each parameter that was not understood;
- no Markdown string on the page (bodies, alerts, labels, tooltips, metric values) parses into a link, an image or
  raw HTML, or, once parsed, matches a pattern Streamlit's renderer turns into markup (literal autolinks, emoji
  shortcodes, arrows); no payload reaches one unescaped, and its text is still shown;
- no string in a Plotly figure, and no HTML element (st.html), holds a tag or attribute other than the few the app
  writes itself.

The references are independent of the app's escape functions: markdown-it-py (a port of the CommonMark reference
parser) and ``html.unescape`` for Plotly's entities. ``tests/e2e/test_browser.py`` visits the same kinds of links in
Chromium, where Streamlit's real renderer runs, and checks every link and image on the page.
"""

from __future__ import annotations

import html
import json
import re
import string
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import explorer
from explorer import ExplorerError
from explorer.ui import resources, state
from explorer.capture.devices import cuda_available
from explorer.escape import md_escape, plotly_escape
from explorer.ui.settings import Settings, is_loopback

from crafted import BAD_INDICES, EVIL, MODEL_LINKS, TAG_TEXT, TAG_TOKENS, TEXT_PAYLOAD, tag_model as build_tag_model
from markup import (
    MARKUP_TOKENS, assert_data_not_markup, figure_strings, found_in_text, open_link, rendered_text, shown, visible,
)

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["pages/heads.py", "pages/qkv.py", "pages/masking.py", "pages/generation.py", "pages/scratch.py",
         "pages/analysis.py", "pages/compare.py"]

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")


# ---- the two escapes, against independent references -----------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(string.printable + "²٣大\u2028"), max_size=80))
def test_md_escape_is_one_paragraph_of_the_same_text(text):
    kinds, shown = rendered_text(md_escape(text))
    assert kinds <= {"paragraph_open", "paragraph_close", "inline", "text", "softbreak"}, kinds
    assert visible(shown) == visible(re.sub(r"\r\n|[\r\n\u2028\u2029]", " ", text))
    assert not found_in_text(shown)


@pytest.mark.parametrize("payload", [*MODEL_LINKS.values(), *TAG_TOKENS, TEXT_PAYLOAD,
                                     ":smile: :+1: a -> b >= c -- d", "HTTP://X.Y WWW.X.Y"])
def test_md_escape_payloads(payload):
    kinds, shown = rendered_text(md_escape(payload))
    assert not kinds & MARKUP_TOKENS and not found_in_text(shown)
    assert visible(shown) == visible(payload)
    assert "$" not in md_escape(payload).replace("\\$", "")  # no unescaped maths delimiter


@given(st.text(alphabet=st.sampled_from(string.printable + "²大"), max_size=80))
def test_plotly_escape_shows_the_same_text(text):
    escaped = plotly_escape(text)
    assert html.unescape(escaped) == text
    assert not set("<>%$") & set(escaped)
    assert not re.search(r"&(?!amp;|lt;|gt;|#37;|#36;)", escaped)  # every & starts one of our entities


# ---- crafted links through the app -------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ["pages/home.py", "pages/heads.py"])
@pytest.mark.parametrize("cid", list(MODEL_LINKS))
def test_crafted_model_link(page, cid):
    model = MODEL_LINKS[cid]
    at = open_link(page, {"model": model})
    assert_data_not_markup(at, [model])
    assert at.error, "a model that does not load says so"
    assert re.sub(r"\s+", " ", model.strip()) in shown(at)  # the link's value is shown as text, not dropped


@pytest.mark.parametrize("raw", BAD_INDICES)
def test_bad_index_in_link(raw):
    at = open_link("pages/heads.py", {"model": "smollm2", "layer": raw, "head": "1"})
    assert_data_not_markup(at)
    assert at.number_input(key="heads_layer").value == 0 and at.number_input(key="heads_head").value == 1
    notices = visible(" ".join(rendered_text(w.value)[1] for w in at.warning))
    assert "The link's layer" in notices and "was ignored" in notices, notices


@pytest.mark.parametrize("page", PAGES)
def test_superscript_layer_and_head_on_every_page(page):
    at = open_link(page, {"model": "smollm2", "layer": "²", "head": "³"})
    assert_data_not_markup(at)
    notices = visible(" ".join(rendered_text(w.value)[1] for w in at.warning))
    assert "layer “²” was ignored" in notices and "head “³” was ignored" in notices, notices


def test_valid_index_and_enums_in_link():
    at = open_link("pages/heads.py", {"model": "minilm", "layer": "5", "head": "11", "mask": "causal",
                                      "device": "cpu"})
    assert_data_not_markup(at)
    assert (at.number_input(key="heads_layer").value, at.number_input(key="heads_head").value) == (5, 11)
    assert at.radio(key="mask").value == "causal" and "ignored" not in shown(at)


def test_crafted_enums_in_link():
    mask, device = f"[m]({EVIL}/m)", f"<{EVIL}/d>"
    at = open_link("pages/heads.py", {"mask": mask, "device": device})
    assert_data_not_markup(at, [mask, device])
    assert at.radio(key="mask").value == "model"
    assert at.radio(key="device").value == ("cuda" if cuda_available() else "cpu")  # AE_DEFAULT_DEVICE=auto
    assert f"The link's mask “{mask}” was ignored" in shown(at)


@pytest.mark.parametrize("page", ["pages/home.py", "pages/heads.py", "pages/qkv.py", "pages/analysis.py"])
def test_crafted_text_in_link(page):
    at = open_link(page, {"text": TEXT_PAYLOAD})
    assert_data_not_markup(at, [TEXT_PAYLOAD])
    assert at.text_area(key="text").value == TEXT_PAYLOAD


def test_url_parser_is_strict():
    """The parser itself: ASCII digits in range only, known enums only, bounded strings."""
    view = state.parse_url({"layer": "²", "head": "0012", "mask": "bidirectional", "device": "tpu", "embed": "true",
                         "model": "x" * 201}, allow_any_model=True)
    assert (view.layer, view.head, view.mask, view.device, view.model) == (None, 12, "bidirectional", None, None)
    assert len(view.notices) == 3  # layer, device, model; "embed" is Streamlit's own and left alone
    assert state.parse_url({"model": "gpt2"}, allow_any_model=False).model is None
    assert state.parse_url({"model": "minilm", "layer": "9999"}, allow_any_model=False) == state.UrlView("minilm", layer=9999)
    assert state.parse_url({"layer": "10000"}, allow_any_model=False).layer is None


# ---- tokens that are whole tags, on every page --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tag_model(tmp_path_factory) -> str:
    folder = build_tag_model(tmp_path_factory.mktemp("tag_tokens"))
    assert explorer.load(folder, device="cpu").trace(TAG_TEXT).tokens == TAG_TOKENS  # one payload, one token
    return folder


TABS = {"pages/heads.py": ("heads_tab", ["Heads of one layer", "All layers × heads", "One head",
                                         "Lines (head view)"]),
        "pages/analysis.py": ("analysis_section", ["Statistics", "Q/K geometry", "Logit lens", "Rollout", "Export"]),
        "pages/intervene.py": ("intervene_tab", ["Ablate", "Patch"]),
        "pages/scratch.py": ("scratch_tab", ["Textbook vs the model", "The tutorial variant"])}


@pytest.mark.parametrize("page", PAGES)
def test_tag_tokens_on_every_page(page, tag_model):
    at = open_link(page, {"model": tag_model, "text": TAG_TEXT, "layer": "1", "head": "2"})
    if page == "pages/generation.py":  # generation reads its own prompt box
        at.session_state["gen_prompt"] = TAG_TEXT
        at.run()
    key, tabs = TABS.get(page, (None, [None]))
    labels = []
    for tab in tabs:
        if tab is not None:
            at.session_state[key] = tab
            at.run()
        assert_data_not_markup(at, TAG_TOKENS)
        assert not at.error, [e.value for e in at.error]
        labels += figure_strings(at)
    # The data is kept: the figures show the tokens themselves, as entities that Plotly displays as the tag.
    assert any("<img src=x onerror=alert(1)>" in html.unescape(s) for s in labels)


def test_tag_tokens_in_captions_and_metrics(tag_model):
    at = open_link("pages/qkv.py", {"model": tag_model, "text": TAG_TEXT, "layer": "1", "head": "2"})
    at.selectbox(key="qkv_query").set_value(TAG_TOKENS.index("<img src=x onerror=alert(1)>")).run()
    assert_data_not_markup(at, TAG_TOKENS)
    assert "query “<img src=x onerror=alert(1)>” (token 1)" in shown(at)


# ---- safe defaults: localhost only, and path errors that say nothing to other machines -------------------------
def test_permissive_defaults_only_on_localhost():
    assert Settings.from_env({}, local_only=True) == Settings(allowed_models="any", allow_local_paths=True)
    assert Settings.from_env({}, local_only=False) == Settings(allowed_models="embedded", allow_local_paths=False)
    opened = {"AE_ALLOWED_MODELS": "any", "AE_ALLOW_LOCAL_PATHS": "1"}
    assert Settings.from_env(opened, local_only=False) == Settings(allowed_models="any", allow_local_paths=True)
    closed = {"AE_ALLOWED_MODELS": "embedded", "AE_ALLOW_LOCAL_PATHS": "0"}
    assert Settings.from_env(closed, local_only=True) == Settings()
    for address in ("localhost", "127.0.0.1", "127.5.0.1", "::1", "[::1]"):
        assert is_loopback(address), address
    for address in (None, "", "0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert not is_loopback(address), address


def test_make_run_and_config_bind_to_localhost():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    makefile = (ROOT / "Makefile").read_text()
    assert "ADDRESS ?= localhost" in makefile
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "--server.address $(ADDRESS)" in run


def test_paths_off_never_look_at_the_disk(tmp_path, monkeypatch):
    """With local paths off, a bare name gets the same answer whether or not such a folder exists."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a folder").mkdir()
    messages = []
    for name in ("a folder", "b folder"):
        with pytest.raises(ExplorerError) as refused:
            explorer.load(name, allow_local_paths=False, allow_hub=False)
        messages.append(str(refused.value).replace(name, "NAME"))
    assert messages[0] == messages[1]


def _path_cases(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return {"missing": str(tmp_path / "missing"), "not a model": str(empty), "no weights": str(no_weights),
            "a file": str(Path(__file__))}


def test_path_errors_are_one_message_for_other_machines(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "visitor_is_local", lambda: False)
    errors = {}
    for case, path in _path_cases(tmp_path).items():
        at = open_link("pages/home.py", {"model": path})
        assert_data_not_markup(at)
        errors[case] = [e.value for e in at.error]
    assert all(found == [md_escape(resources.PATH_HIDDEN)] for found in errors.values()), errors


def test_path_errors_say_why_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "visitor_is_local", lambda: True)  # AppTest's mock runtime has no real peer address
    errors = {}
    for case, path in _path_cases(tmp_path).items():
        at = open_link("pages/home.py", {"model": path})
        assert_data_not_markup(at)
        errors[case] = shown(at)
    assert "There is no file or folder" in errors["missing"]
    assert "is not a model folder" in errors["not a model"] and "no .safetensors" in errors["no weights"]
