"""Session and URL state: the server's settings, what the sidebar asks for, the one parser of links, the session's
language, and going from page to page with a selection.

Every page reads the sidebar's choice through :func:`current_selection`; the URL is read once per session
(:func:`init_from_query_params`, through :func:`parse_url`) and written back after each run (:func:`sync_query_params`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Mapping

import streamlit as st

from ..capture.devices import cuda_available
from ..capture.embedded import DEFAULT_MODEL, EMBEDDED
from ..escape import md_escape
from ..i18n import LANGUAGES, N_, _, browser_language, join, number, set_language
from .settings import Settings, is_loopback

DEFAULT_TEXT = "The cat sat on the mat because it was tired."
MASK_LABELS = {"model": N_("Model default"), "causal": N_("Causal"), "bidirectional": N_("Bidirectional")}
MASK_NAMES = {"causal": N_("Causal"), "bidirectional": N_("Bidirectional"), "sliding": N_("Sliding window")}
MAX_TEXT_CHARS = 100_000  # beyond this we refuse before tokenising; the token cap handles the rest
MAX_MODEL_CHARS = 200  # a hub id is at most 96 + 1 + 96; a folder path rarely longer
OTHER_MODEL = "other…"
DEVICES = ("auto", "cpu", "cuda")
MAX_INDEX_DIGITS = 4  # layer/head from a link: 0–9999, checked against the model later
LANGUAGE_KEY = "lang"  # session state and URL parameter
# Attention between tokens or between words (explorer.capture.word_trace): session state "unit", URL parameter "by".
UNIT_LABELS = {"tokens": N_("tokens"), "words": N_("words")}
UNIT_KEY = "unit"


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The AE_* settings; their permissive defaults hold only while the server listens on this machine alone."""
    return Settings.from_env(local_only=is_loopback(st.get_option("server.address")))


def visitor_is_local() -> bool:
    """Is this session's browser on the server's own machine? (Streamlit reports no IP address for loopback
    connections. A reverse proxy on the same machine makes every visitor look local: see docs/deployment.md.)"""
    return st.context.ip_address is None


# ---- what the sidebar asks for ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What the sidebar asks for. ``mask`` is None for the model's own mask."""

    model: str
    device: str
    text: str
    mask: str | None
    unit: str = "tokens"  # a key of UNIT_LABELS


def current_selection() -> Selection:
    mask = st.session_state.get("mask", "model")
    model = st.session_state.get("model_choice", DEFAULT_MODEL)
    if model == OTHER_MODEL:
        model = st.session_state.get("model_custom", "").strip()
    unit = st.session_state.get(UNIT_KEY, "tokens")
    return Selection(model, st.session_state.get("device", "cpu"), st.session_state.get("text", ""),
                     None if mask == "model" else mask, unit if unit in UNIT_LABELS else "tokens")


def mask_name(kind: str) -> str:
    """"causal" / "bidirectional" / "sliding window" in the reader's language, for use inside a sentence (a raw mask
    value never reaches a page; an unknown one is shown as it is)."""
    return _(MASK_NAMES[kind]).lower() if kind in MASK_NAMES else kind


def device_options() -> list[str]:
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


# ---- the URL --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UrlView:
    """The view a link asks for, validated. ``None``: the link does not say (or said something not understood,
    which ``notices`` reports as Markdown with the link's values escaped)."""

    model: str | None = None
    device: str | None = None  # one of DEVICES
    text: str | None = None
    mask: str | None = None  # a key of MASK_LABELS
    lang: str | None = None  # a key of explorer.i18n.LANGUAGES
    layer: int | None = None
    head: int | None = None
    by: str | None = None  # a key of UNIT_LABELS
    notices: tuple[str, ...] = field(default=())


def parse_url(params: Mapping[str, str], allow_any_model: bool) -> UrlView:
    """The one parser of URL parameters (user input: anyone can craft a link). Numbers are ASCII digits only
    (``"²".isdigit()`` is true, ``int("²")`` raises), enums come from their known sets, strings are bounded;
    anything else is dropped with a notice. Unknown parameters (Streamlit's own ``embed``, …) are left alone."""
    found: dict = {}
    notices: list[str] = []

    def ignored(key: str, why: str) -> None:
        notices.append(_("The link's {key} “{value}” was ignored: {why}.").format(
            key=key, value=md_escape(_clip(params[key])), why=why))

    if "model" in params:
        model = params["model"].strip()
        if model in EMBEDDED or (allow_any_model and 0 < len(model) <= MAX_MODEL_CHARS):
            found["model"] = model
        else:
            why = (_("this server opens {models} or a Hugging Face id or folder of at most {n} characters")
                   if allow_any_model else _("this server opens {models} only"))
            ignored("model", why.format(models=join(EMBEDDED), n=MAX_MODEL_CHARS))
    for key, known in (("device", DEVICES), ("mask", tuple(MASK_LABELS)), ("lang", tuple(LANGUAGES)),
                       ("by", tuple(UNIT_LABELS))):
        if key in params:
            if params[key] in known:
                found[key] = params[key]
            else:
                ignored(key, _("it is none of {values}").format(values=join(known)))
    if "text" in params:
        found["text"] = params["text"][:MAX_TEXT_CHARS]
        if len(params["text"]) > MAX_TEXT_CHARS:
            notices.append(_("The link's text was cut to its first {n} characters.").format(
                n=number(MAX_TEXT_CHARS)))
    for key in ("layer", "head"):
        if key in params:
            raw = params[key]
            if raw.isascii() and raw.isdigit() and len(raw) <= MAX_INDEX_DIGITS:
                found[key] = int(raw)
            else:
                ignored(key, _("it is not a whole number from 0 to {last}; showing 0").format(
                    last=10**MAX_INDEX_DIGITS - 1))
    return UrlView(**found, notices=tuple(notices))


def _clip(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _url_view() -> UrlView:
    return parse_url(st.query_params.to_dict(), allow_any_model=settings().allowed_models == "any")


def init_language() -> str:
    """Speak the session's language for this script run; call first in ``app.py``, before ``st.navigation`` (page
    titles are translated). A session's first run takes it from the link's ``?lang=``, else from the browser's
    locale, else English; afterwards the sidebar's choice (session state) rules."""
    if LANGUAGE_KEY not in st.session_state:
        try:
            asked = _url_view().lang
        except Exception:  # noqa: BLE001 - a bad link must not stop the app; the sidebar's guard reports it
            asked = None
        st.session_state[LANGUAGE_KEY] = asked or browser_language(st.context.locale)
    return set_language(st.session_state[LANGUAGE_KEY])


#: The embedded model that reads Chinese best: Gemma 3's tokenizer keeps most Chinese words whole (SmolLM2 splits them
#: into byte pieces), so a Chinese reader who names no model starts with it. A link's or the sidebar's choice rules.
CHINESE_MODEL = "gemma3"


def suggested_model(language: str | None) -> str:
    """The model a session starts with when its link names none: Gemma 3 for a Chinese reader, else the default."""
    installed = CHINESE_MODEL in EMBEDDED and importlib.util.find_spec(EMBEDDED[CHINESE_MODEL].package) is not None
    return CHINESE_MODEL if language == "zh" and installed else DEFAULT_MODEL


def init_from_query_params() -> None:
    """On a session's first run, seed the widgets from the URL (through :func:`parse_url`)."""
    if st.session_state.get("_ae_init"):
        return
    st.session_state["_ae_init"] = True
    s = settings()
    view = _url_view()
    notices = list(view.notices)
    model = view.model or suggested_model(st.session_state.get(LANGUAGE_KEY))
    if model in EMBEDDED:
        st.session_state["model_choice"] = model
    else:
        st.session_state["model_choice"] = OTHER_MODEL
        st.session_state["model_custom"] = model
    device = view.device or s.default_device
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        notices.append(_("The link asked for CUDA, but there is no GPU here: using the CPU.") if view.device else
                       _("This server's AE_DEFAULT_DEVICE asked for CUDA, but there is no GPU here: using the CPU."))
        device = "cpu"
    st.session_state["device"] = device if device in device_options() else device_options()[0]
    st.session_state["text"] = DEFAULT_TEXT if view.text is None else view.text
    st.session_state["mask"] = view.mask or "model"
    st.session_state[UNIT_KEY] = view.by or "tokens"
    for key in ("layer", "head"):
        if getattr(view, key) is not None:
            st.session_state[f"_ae_{key}"] = getattr(view, key)
    if notices:
        st.session_state["_ae_notice"] = "\n\n".join(notices)


def sync_query_params() -> None:
    """Write the view into the URL so that a link reproduces it."""
    sel = {
        "model": current_selection().model,
        "device": st.session_state.get("device"),
        "mask": st.session_state.get("mask"),
        "lang": st.session_state.get(LANGUAGE_KEY),
        "by": "words" if st.session_state.get(UNIT_KEY) == "words" else None,  # tokens, the default, is left out
    }
    text = st.session_state.get("text", "")
    if len(text) <= 1500:  # long texts would make unusable links; they are simply left out
        sel["text"] = text
    for key in ("layer", "head"):
        if f"_ae_{key}" in st.session_state and st.session_state[f"_ae_{key}"] >= 0:
            sel[key] = str(st.session_state[f"_ae_{key}"])
    wanted = {k: str(v) for k, v in sel.items() if v not in (None, "")}
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)


# ---- pages: running under app.py, and going to another page with a selection --------------------------------------
HEADS_PAGE = "pages/heads.py"
INTERVENE_PAGE = "pages/intervene.py"
EXPLAIN_PAGE = "pages/explain.py"
INTERVENE_HEADS_KEY = "intervene_heads"  # the Intervene page's chosen heads: a list of (layer, head), per session


def require_entrypoint() -> None:
    """Make sure the page runs under ``app.py``'s navigation and sidebar.

    Because page files live in ``pages/``, Streamlit runs a fresh server's *first* script run in its legacy
    multipage mode: a deep link such as ``/heads?text=…`` would run the page file alone, without the sidebar or
    the URL's state. ``app.py``'s ``st.navigation`` switches the process to the current mode; if a page finds
    itself running before that happened, it flips the switch and reruns, so the same URL runs through ``app.py``.
    """
    if leave_legacy_pages_mode():
        st.rerun()


def leave_legacy_pages_mode() -> bool:
    """Switch this process out of Streamlit's legacy ``pages/`` mode; True when it was in it.

    The one use of a private Streamlit API (``PagesManager.uses_pages_directory``, a class attribute: None until
    the first run decides, True in legacy mode); tests/app/test_isolation.py checks that it still behaves so, and the
    tests' ``navigation_like_a_server`` fixture calls this too.
    """
    from streamlit.runtime.pages_manager import PagesManager

    was_legacy = bool(PagesManager.uses_pages_directory)
    PagesManager.uses_pages_directory = False
    return was_legacy


def open_on_heads_page(layer: int, head: int) -> None:
    """Make (layer, head) the shared selection and go to the heads page."""
    st.session_state["_ae_layer"] = int(layer)
    st.session_state["_ae_head"] = int(head)
    st.switch_page(HEADS_PAGE)


def open_intervene(heads: list[tuple[int, int]]) -> None:
    """Choose ``heads`` on the Intervene page and go there."""
    st.session_state[INTERVENE_HEADS_KEY] = sorted({(int(layer), int(head)) for layer, head in heads})
    st.switch_page(INTERVENE_PAGE)


def open_explain(layer: int, head: int) -> None:
    """Make (layer, head) the shared selection and go to the Explain page (its tabs read the shared selection)."""
    st.session_state["_ae_layer"] = int(layer)
    st.session_state["_ae_head"] = int(head)
    st.session_state.pop("explain_qk_example", None)  # the sidebar's text, not the worked example's probe
    st.session_state["explain_tab"] = _("Why it looks there")  # the tab that answers it (explorer.ui.explain)
    st.switch_page(EXPLAIN_PAGE)
