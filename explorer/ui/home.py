"""The sections of Home: the first look at attention for the sidebar's text (one telling head, named with the reason
it was picked, and every head as a thumbnail), the tokens as a strip, and the tour of the pages."""

from __future__ import annotations

import streamlit as st

from ..analysis.stats import TellingHead, telling_head
from ..capture.tokens import display_label
from ..capture.trace import Trace
from ..capture.word_trace import WordTrace
from ..escape import md_escape
from ..figures import heads as fh
from ..i18n import N_, _, ngettext, percent
from . import maps, resources, state, widgets

GRID_KEY = "home_grid"
_PICKED = "_ae_home_pick"  # a thumbnail clicked on Home: opened on the heads page at the start of the next run
STRIP_TOKENS = 400  # tokens shown in the strip; a longer text says how many more there are

# What each telling pattern means, and where to see it in the map (kinds from explorer.analysis.stats.TELLING_KINDS).
REASONS = {
    "previous_token": N_("**Previous-token head {layer}.{head}** (layer {layer}, head {head}): on average {share} of "
                         "each token's attention goes to the token just before it. In the map below that is the "
                         "bright diagonal just under the main one."),
    "self": N_("**Self head {layer}.{head}** (layer {layer}, head {head}): on average {share} of each token's "
               "attention stays on the token itself. In the map below that is the bright main diagonal."),
    "first_token": N_("**First-token head {layer}.{head}** (layer {layer}, head {head}): on average {share} of each "
                      "token's attention goes to the first token. That is an attention sink, a place to park "
                      "attention rather than a meaning; no head follows this text more plainly. In the map below "
                      "it is the bright first column."),
}

# The same, in word view (the sidebar's "Attention between: words"): the statistics are those of the word maps.
REASONS_BY_WORD = {
    "previous_token": N_("**Previous-word head {layer}.{head}** (layer {layer}, head {head}): on average {share} of "
                         "each word's attention goes to the word just before it. In the map below that is the bright "
                         "diagonal just under the main one."),
    "self": N_("**Self head {layer}.{head}** (layer {layer}, head {head}): on average {share} of each word's "
               "attention stays on the word itself (its own pieces). In the map below that is the bright main "
               "diagonal."),
    "first_token": N_("**First-word head {layer}.{head}** (layer {layer}, head {head}): on average {share} of each "
                      "word's attention goes to the first word. That is an attention sink, a place to park attention "
                      "rather than a meaning; no head follows this text more plainly. In the map below it is the "
                      "bright first column."),
}

PAGES_TOUR = (
    N_("**Attention heads**: every head of a layer, all layers × heads at a glance, one head large, BertViz-style "
       "lines."),
    N_("**Q, K, V**: follow $\\mathrm{softmax}(QK^\\top/\\sqrt{d_k} + M)\\,V$ step by step for one token."),
    N_("**Masking**: causal vs bidirectional on the same model, and what the flip changes."),
    N_("**Generation**: the next-token distribution through temperature, top-k and top-p, one step at a time."),
    N_("**From scratch**: a textbook multi-head attention on CPU or GPU, checked against the model."),
    N_("**Head analysis**: which heads matter: statistics, Q/K geometry, logit lens, rollout, export."),
)


def pick_head(trace: Trace | WordTrace) -> TellingHead:
    """The head Home shows first: :func:`telling_head` over the trace's head statistics (from the overview pass
    that also makes the thumbnails)."""
    return telling_head(maps.overview(trace).statistics)


# ---- sections ---------------------------------------------------------------------------------------------------
def intro() -> None:
    st.markdown(_("See what a transformer's attention does with **your** sentence, with the real numbers of a real "
                  "model. Type in the sidebar; everything below follows."))


def follow_pick() -> None:
    """A thumbnail clicked in the last run: open that head on the heads page (outside the callback, where
    ``st.switch_page`` is allowed)."""
    picked = st.session_state.pop(_PICKED, None)
    if picked is not None:
        state.open_on_heads_page(*picked)


def first_look(trace: Trace | WordTrace) -> None:
    """One telling head, large and named with the reason, beside every head as a thumbnail (by token or by word, as
    the sidebar says)."""
    pick = pick_head(trace)
    reasons = REASONS_BY_WORD if trace.unit == "word" else REASONS
    kv_heads = [trace.kv_head(h) for h in range(trace.n_heads)] if trace.n_kv_heads < trace.n_heads else None
    st.subheader(_("What attention does with your text"))
    st.markdown(_(reasons[pick.kind]).format(layer=pick.layer, head=pick.head, share=percent(pick.score)))
    if st.button(_("Open this head on Attention heads"), key="home_open_head", type="primary",
                 icon=":material/open_in_new:"):
        state.open_on_heads_page(pick.layer, pick.head)
    big, overview = st.columns([3, 2], gap="medium")
    with big:
        st.plotly_chart(
            fh.head_heatmap(maps.head_map(trace, pick.layer, pick.head), trace.tokens, layer=pick.layer,
                            head=pick.head, kv_heads=kv_heads),
            key="home_head",
        )
    with overview:
        seen = maps.overview(trace)  # the heads page's cache: every head read once for both pages
        st.caption(_("Every head of the model: rows are layers, columns heads; each thumbnail is one head's map like "
                     "the one on the left (outlined). Click one to open it on Attention heads."))
        st.plotly_chart(
            fh.model_view_grid(seen.thumbs, kv_heads=kv_heads, selected=(pick.layer, pick.head), tokens_per_cell=seen.step,
                               n_tokens=trace.n_tokens, thumb_px=_thumb_px(trace.n_layers, trace.n_heads)),
            key=GRID_KEY, on_select=_pick_from_grid, selection_mode="points", config={"displayModeBar": False},
        )


def _thumb_px(n_layers: int, n_heads: int) -> int:
    """Thumbnail height for the overview column (about 330 px of thumbnails across, at most about 720 px down):
    about as tall as wide, so each map keeps its square shape."""
    return max(16, min(56, 330 // n_heads, 720 // n_layers))


def _pick_from_grid() -> None:
    points = st.session_state[GRID_KEY].selection.get("points") or []
    custom = points[0].get("customdata") if points else None
    if custom:
        st.session_state[_PICKED] = (int(custom[0]), int(custom[1]))


def token_strip(trace: Trace | WordTrace, device: str) -> None:
    """The tokens as the model sees them (or, in word view, its words), in one compact strip (whitespace made
    visible)."""
    st.subheader(_("Your text, as the model sees it") if trace.unit == "token" else _("Your text, word by word"))
    facts = [ngettext("{n} token", "{n} tokens", trace.n_tokens).format(n=trace.n_tokens)]
    if trace.unit == "word":
        facts = [widgets.unit_count(trace.n_tokens, "word"), widgets.unit_count(trace.tokens_trace.n_tokens, "token")]
    facts += [
             _("{layers} layers × {heads} heads").format(layers=trace.n_layers, heads=trace.n_heads)]
    if trace.n_kv_heads != trace.n_heads:
        facts.append(_("{n} key/value heads, shared").format(n=trace.n_kv_heads))
    mask = state.mask_name(trace.mask)
    facts.append(_("mask: {mask}").format(mask=mask) if trace.mask_is_model_default
                 else _("mask: {mask} (what-if)").format(mask=mask))
    facts.append(_("device: {device}").format(device=device))
    dtype = resources.dtype_name(trace.dtype)
    if dtype != "float32":  # the server's AE_DTYPE: the maps differ from a float32 run by that type's rounding
        facts.append(_("dtype: {dtype}").format(dtype=dtype))
    st.caption(" · ".join(facts))
    shown = trace.tokens[:STRIP_TOKENS]
    # Each token a grey chip; md_escape keeps a token's own brackets and markup from ending the chip or styling it.
    st.markdown(" ".join(f":gray-background[{md_escape(display_label(t))}]" for t in shown))
    if trace.n_tokens > len(shown) and trace.unit == "word":
        st.caption(ngettext("… and {n} more word.", "… and {n} more words.", trace.n_tokens - len(shown)).format(
            n=trace.n_tokens - len(shown)))
    elif trace.n_tokens > len(shown):
        more = trace.n_tokens - len(shown)
        st.caption(ngettext("… and {n} more token (Attention heads and Q, K, V show them all).",
                            "… and {n} more tokens (Attention heads and Q, K, V show them all).", more
                            ).format(n=more))


def tour() -> None:
    st.subheader(_("Go deeper"))
    st.markdown("\n".join("- " + _(line) for line in PAGES_TOUR))
