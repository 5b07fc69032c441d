"""The sidebar: language, model, device, text, mask and unit (tokens or words), drawn once in ``app.py`` so that
they persist across pages. Pages read the choice back through :func:`explorer.ui.state.current_selection`."""

from __future__ import annotations

import streamlit as st

from ..capture.devices import tf32_enabled
from ..capture.embedded import EMBEDDED
from ..i18n import LANGUAGES, _, number
from .state import (
    LANGUAGE_KEY, MASK_LABELS, MAX_TEXT_CHARS, OTHER_MODEL, UNIT_KEY, UNIT_LABELS, device_options,
    init_from_query_params, settings,
)
from .widgets import guard


def sidebar() -> None:
    """Draw the shared controls (in ``app.py``, so they persist across pages); pages read them back through
    :func:`explorer.ui.state.current_selection`."""
    with guard():  # the URL is user input: a bad link gets a message, never a crash
        init_from_query_params()
    s = settings()
    # persist_state="session": st.switch_page (a page's "open on …" buttons) ends the run early, and Streamlit then
    # drops the state of every widget the new page has not drawn yet, the sidebar's included (the text would vanish).
    with st.sidebar:
        # The label names the choice in both languages: a visitor who cannot read the current one still finds it.
        st.radio("Language / 语言", list(LANGUAGES), persist_state="session", key=LANGUAGE_KEY, horizontal=True,
                 format_func=lambda code: LANGUAGES[code][0])
        st.markdown("### " + _("Model and text"))
        choices = list(EMBEDDED) + ([OTHER_MODEL] if s.allowed_models == "any" else [])
        # Labels translated now, not inside format_func: Streamlit may call that outside this run's language context
        # (AppTest formats values in the test's thread), and it would answer in another language.
        model_labels = {n: _("{model} (embedded)").format(model=n) for n in EMBEDDED}
        model_labels[OTHER_MODEL] = _("Other: Hugging Face id or folder")
        mask_labels = {m: _(label) for m, label in MASK_LABELS.items()}
        st.selectbox(
            _("Model"),
            choices,
            persist_state="session", key="model_choice",
            format_func=model_labels.__getitem__,
            help="\n\n".join(f"**{m.name}**: {m.description}" for m in EMBEDDED.values()),
        )
        if st.session_state["model_choice"] == OTHER_MODEL:
            st.text_input(_("Model id or folder"), persist_state="session", key="model_custom",
                          placeholder=_("e.g. gpt2"))
        st.radio(_("Device"), device_options(), persist_state="session", key="device", horizontal=True,
                 help=_("CUDA appears when PyTorch sees a GPU. The numbers agree within float32 tolerance."))
        if st.session_state.get("device") == "cuda" and tf32_enabled():
            st.info(_("TF32 matrix multiplications are on in this server process, so CUDA results differ from "
                      "the float32 reference by about 1e-3 (relative): the 1e-5 agreement this app checks does not "
                      "hold here."), icon=":material/info:")
        st.text_area(_("Text"), persist_state="session", key="text", height=120, max_chars=MAX_TEXT_CHARS,
                     help=_("Any language. Cut to {n} tokens for display.").format(n=number(s.max_tokens)))
        st.radio(_("Mask"), list(MASK_LABELS), persist_state="session", key="mask",
                 format_func=mask_labels.__getitem__, horizontal=True,
                 help=_("Overriding the model's own mask is a what-if: it changes the computation."))
        unit_labels = {u: _(label) for u, label in UNIT_LABELS.items()}
        st.radio(_("Attention between"), list(UNIT_LABELS), persist_state="session", key=UNIT_KEY,
                 format_func=unit_labels.__getitem__, horizontal=True,
                 help=_("Words: a word's pieces (sub-words, the byte pieces of a Chinese character) taken together, "
                        "by the usual rule: attention to a word is the sum over its pieces, attention from a word "
                        "the mean over them, so rows still sum to 1. Chinese is cut into words by jieba."))
    notice = st.session_state.pop("_ae_notice", None)
    if notice:
        st.warning(notice)
