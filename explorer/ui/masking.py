"""The Masking page's sections: the masks, Gemma 3's sliding window, one head under both masks, and what flipping
the mask does to the output. Widgets are read by ``*_ui`` functions; figures come from :mod:`explorer.figures.masking`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from . import maps, resources, state, widgets
from .caching import cached
from ..analysis.mask_effects import (
    CAUSAL_MASK_LATEX,
    HeadUnderBoth,
    final_state_changes,
    flip_summary,
    head_under_both,
    mask_matrix,
    next_token_changes,
)
from ..capture.model import Model
from ..capture.recorder import sliding_window_of
from ..capture.tokens import display_label
from ..capture.trace import Trace
from ..capture.word_trace import WordTrace
from ..escape import md_escape
from ..figures import masking as fm
from ..figures.heatmap import MAX_CELLS, token_heatmap
from ..figures.palette import DIVERGING
from ..i18n import N_, _, join, number, percent

MASK_FORMULAS = {
    "causal": CAUSAL_MASK_LATEX,
    "bidirectional": r"M_{ij} = 0 \quad \text{%s } i, j",  # \text{}: _("for all"), filled in where shown
}
PANEL_WIDTH = 460  # px: two panels side by side on a wide screen, one under the other on a narrow one
MASK_ROLES = {
    "causal": N_("Each token sees itself and the tokens before it (GPT-style language models)."),
    "bidirectional": N_("Every token sees every token (BERT-style encoders)."),
}


def sliding_latex(window: int) -> str:
    """The sliding-window mask with its size written in."""
    return r"M_{ij} = \begin{cases} 0 & i - %d < j \le i \\ -\infty & \text{%s} \end{cases}" % (window, _("otherwise"))


@dataclass(frozen=True)
class Flip:
    """The sidebar's text under both masks, and the mask the model was trained with."""

    model: Model
    causal: Trace
    bidirectional: Trace
    trained: str


@dataclass(frozen=True)
class HeadChoice:
    layer: int
    head: int


# ---- traces and cached effects ---------------------------------------------------------------------------------------
def both_traces(model: Model) -> tuple[Trace, Trace]:
    """The sidebar's text traced under the causal and the bidirectional mask (shared trace cache)."""
    causal = resources.current_trace(mask="causal")  # shows the truncation notice once
    text = state.current_selection().text
    return causal, resources.trace_for(model, text, "bidirectional")


def flip(model: Model) -> Flip:
    causal, bidirectional = both_traces(model)
    return Flip(model, causal, bidirectional, model.default_mask)


@cached(max_entries=16)
def _next_token_changes(model: Model, causal: Trace, bidirectional: Trace) -> pd.DataFrame:
    with widgets.progress(_("Comparing next-token predictions under both masks…")) as update:
        return next_token_changes(model, causal, bidirectional, on_progress=update)


@cached(max_entries=16)
def _final_state_changes(causal: Trace, bidirectional: Trace) -> pd.DataFrame:
    return final_state_changes(causal, bidirectional)


@cached(max_entries=16)
def _head_under_both(causal: Trace | WordTrace, bidirectional: Trace | WordTrace, layer: int, head: int
                     ) -> HeadUnderBoth:
    reading = _("Reading layer {layer}, head {head} under both masks…").format(layer=layer, head=head)
    with widgets.progress(reading) as update:
        return head_under_both(causal, bidirectional, layer, head, MAX_CELLS, on_progress=update)


def head_maps(f: Flip, layer: int, head: int) -> HeadUnderBoth:
    """One head under both masks as the page draws it, by token or by word as the sidebar says, cached per trace
    (the unit included) and head: a block of queries at a time, so a long text's (n, n) maps are never held."""
    return _head_under_both(maps.shown(f.causal), maps.shown(f.bidirectional), layer, head)


def output_changes(model: Model, causal: Trace, bidirectional: Trace) -> pd.DataFrame:
    """Next-token changes for a causal LM, final-state cosine changes otherwise (cached per model and text)."""
    if model.is_causal_lm:
        return _next_token_changes(model, causal, bidirectional)
    return _final_state_changes(causal, bidirectional)


TOKEN_COLUMNS = ("token", "actual_next", "top_causal", "top_bidirectional")
COLUMN_NAMES = {
    "position": N_("position"), "token": N_("token"), "actual_next": N_("actual next"),
    "top_causal": N_("top (causal)"), "p_causal": N_("p (causal)"), "top_bidirectional": N_("top (bidirectional)"),
    "p_bidirectional": N_("p (bidirectional)"), "top_changed": N_("top changed"),
    "bidirectional_says_next": N_("bidirectional top = actual next"), "kl": N_("KL (nats)"), "cosine": N_("cosine"),
    "cosine_change": N_("1 − cosine"), "norm_causal": N_("‖h‖ causal"), "norm_bidirectional": N_("‖h‖ bidirectional"),
}


def changes_table(changes: pd.DataFrame) -> pd.DataFrame:
    """The engine's table with readable column names and tokens with visible whitespace (shown as plain text)."""
    shown = changes.copy()
    for column in TOKEN_COLUMNS:
        if column in shown:
            shown[column] = [display_label(t) if t else "" for t in shown[column]]
    return shown.rename(columns={k: _(v) for k, v in COLUMN_NAMES.items()})


# ---- sections ----------------------------------------------------------------------------------------------------------
def intro() -> None:
    st.caption(_("Before the softmax, the mask adds 0 to the scores a query may use and −∞ to the others, so those "
                 "keys get exactly zero attention:"))
    st.latex(r"A = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right)")


def trained_warning(f: Flip) -> None:
    other = "bidirectional" if f.trained == "causal" else "causal"
    st.warning(
        _("**{model}** was trained with the **{trained}** mask. Running it with the {other} mask is a what-if: the "
          "model never learned to work that way, so what you see under that mask shows what the mask changes, not "
          "how the model behaves.").format(model=md_escape(f.model.name), trained=state.mask_name(f.trained),
                                           other=state.mask_name(other)),
        icon="⚠️",
    )
    st.caption(_("This page always shows both masks; the sidebar's mask setting does not apply here."))


def masks(f: Flip) -> None:
    """The causal and the bidirectional mask as matrices over the first tokens of the text."""
    st.subheader(_("The two masks"))
    n = f.causal.n_tokens
    m = min(n, fm.MASK_TOKENS)
    row = st.container(horizontal=True, gap="medium")
    for kind in ("causal", "bidirectional"):
        with row.container(width=PANEL_WIDTH):
            name = _(state.MASK_NAMES[kind])
            st.markdown(_("**{mask}** (what this model was trained with)").format(mask=name) if kind == f.trained
                        else "**{mask}**".format(mask=name))
            st.latex(MASK_FORMULAS[kind].replace("%s", _("for all")))
            st.caption(_(MASK_ROLES[kind]))
            st.plotly_chart(fm.mask_figure(mask_matrix(kind, m), f.causal.tokens[:m],
                                           title=_("{mask} mask M").format(mask=name)),
                            key=f"masking_matrix_{kind}", config={"displayModeBar": False})
    if n > m:
        st.caption(_("The first {m} of {n} tokens; the pattern is the same for any length.").format(m=m, n=n))


def sliding_window(f: Flip) -> None:
    """Models with sliding-window layers (Gemma 3): the window of a local layer against a global layer's causal mask,
    on the model's own run of the text; nothing for other models."""
    if not any(sliding_window_of(module) for module in f.model.attention_modules):
        return  # no second trace for models without windows
    # The model's own run of the first tokens says which layers ran with a window, and their masks' corner (the
    # panels show MASK_TOKENS tokens): a whole third trace of a long text would take seconds and GiBs for that.
    own = resources.trace_for(f.model, state.current_selection().text, None, max_tokens=fm.MASK_TOKENS)
    local = [layer.index for layer in own.layers if layer.mask_kind == "sliding"]
    if not local:
        return
    window = own.layer(local[0]).window
    full = [layer.index for layer in own.layers if layer.mask_kind != "sliding"]
    n = f.causal.n_tokens
    st.subheader(_("Sliding window (local layers)"))
    st.markdown(_("**{model}** has two kinds of layers. Layers {local} are *local*: a query sees only the last {w} "
                  "keys up to itself, a sliding window. Layers {full} are *global*: the plain causal mask.").format(
        model=md_escape(f.model.name), local=join(local), full=join(full) or "–",
        w=window))
    st.latex(sliding_latex(window))
    m = min(n, fm.MASK_TOKENS)
    row = st.container(horizontal=True, gap="medium")
    for layer, label in ((local[0], _("Local layer {layer}: window of {w}")), (full[0] if full else None,
                                                                             _("Global layer {layer}: causal"))):
        if layer is None:
            continue
        row.container(width=PANEL_WIDTH).plotly_chart(
            fm.mask_figure(own.allowed(layer)[:m, :m].numpy(), own.tokens[:m],
                           title=label.format(layer=layer, w=window)),
            key=f"masking_sliding_L{layer}", config={"displayModeBar": False})
    hidden = fm.window_hidden_pairs(n, window)
    if hidden == 0:
        st.caption(_("Your text has {n} tokens, no more than the window of {w}: every query's window reaches back to "
                     "the first token, so on this text the two masks are the same. The sketch below shows where they "
                     "part, on {span} positions.").format(n=n, w=window, span=fm.window_span(window)))
    else:
        st.caption(_("Your text has {n} tokens, more than the window of {w}: on each local layer the window hides "
                     "{hidden} query–key pairs that the causal mask allows.").format(n=n, w=window, hidden=hidden))
    st.plotly_chart(fm.window_figure(window, max(n, fm.window_span(window)), text_tokens=n,
                                     title=_("Where the window cuts: positions 0–{last}").format(
                                         last=max(n, fm.window_span(window)) - 1)),
                    key="masking_window_sketch", config={"displayModeBar": False})
    st.caption(_("What the overrides change: **causal** drops the window on the local layers (global layers are "
                 "unchanged), which differs from the model's own run only for queries at position {w} or later; "
                 "**bidirectional** lifts both the window and the causal cut on every layer. Below, *causal* means "
                 "that causal mask without the window.").format(w=window))


def one_head_ui(trace: Trace) -> HeadChoice:
    controls = st.container(horizontal=True, vertical_alignment="bottom")
    layer, head = widgets.layer_head_selectors(trace, key="masking", container=controls)
    return HeadChoice(layer, head)


def one_head(f: Flip) -> None:
    """One head's map under each mask on a shared colour scale, and their difference."""
    st.subheader(_("One head under both masks"))
    choice = one_head_ui(f.causal)
    layer, head = choice.layer, choice.head
    pair = head_maps(f, layer, head)
    labels = maps.shown(f.causal).tokens  # the words' texts in word view
    widgets.word_view_note(maps.shown(f.causal))
    panels = {"causal": pair.causal, "bidirectional": pair.bidirectional}
    zmax = max(float(np.nanmax(a.values)) for a in panels.values())  # the cells drawn: exact, or block means
    row = st.container(horizontal=True, gap="medium")
    for kind, attention in panels.items():
        title = (_("{mask} (trained)") if kind == f.trained else _("{mask} (what-if)")).format(
            mask=state.mask_name(kind))
        figure = token_heatmap(attention, labels, labels, title=title, zmax=zmax,
                               showscale=kind == "bidirectional")  # one colour bar: both share the scale
        row.container(width=PANEL_WIDTH).plotly_chart(fm.fit_panel(figure, max_ticks=10, max_height=PANEL_WIDTH),
                                                      key=f"masking_attention_{kind}")
    figure = token_heatmap(pair.difference, labels, labels, zmin=None, zmax=None,
                           colorscale=DIVERGING, value_name=_("bidirectional − causal"),
                           title=_("Difference, layer {layer} head {head}: bidirectional − causal").format(
                               layer=layer, head=head))
    st.container(width=2 * PANEL_WIDTH).plotly_chart(fm.fit_panel(figure, max_ticks=24, max_height=720),
                                                     key="masking_difference")
    later = pair.later_share
    inputs = (_("From layer 1 on the two runs also differ in their inputs, since every earlier layer changed too.")
              if layer > 0 else _("In layer 0 both runs have the same Q and K: only the mask differs."))
    st.caption(_("Red: more attention under the bidirectional mask; blue: less. Under it, queries put on average "
                 "**{share}** of this head's attention on later tokens, which the causal mask hides (the upper "
                 "triangle). {inputs}").format(share=percent(later, 1), inputs=inputs))


def output_change(f: Flip) -> None:
    """Per position: how far the next-token prediction (or, for an encoder, the final state) moved."""
    st.subheader(_("What the flip does to the output"))
    changes = output_changes(f.model, f.causal, f.bidirectional)
    summary = flip_summary(changes)
    if f.model.is_causal_lm:
        st.caption(_(
            "For each position, the model's prediction of the next token under the causal mask (trained) and the "
            "bidirectional one (what-if), and how far the whole distribution moved: KL(causal ‖ bidirectional). "
            "Under the bidirectional mask a position can already see the very token it is asked to predict. "
            "Amber bars: the top token changed."))
        c1, c2, c3 = st.columns(3)
        c1.metric(_("Mean KL (nats)"), number(summary["mean_kl"], 3))
        c2.metric(_("Top token changed"), percent(summary["share_top_changed"]))
        c3.metric(_("Bidirectional top = actual next"),
                  percent(changes["bidirectional_says_next"].iloc[:-1].mean()) if f.causal.n_tokens > 1 else "–")
        st.plotly_chart(fm.kl_chart(changes), key="masking_kl")
    else:
        st.caption(_("{model} makes no next-token predictions; instead, how far each token's final hidden state turns "
                     "when the mask flips: 1 − cos(h_causal, h_bidirectional). 0 means unchanged in direction.").format(
            model=md_escape(f.model.name)))
        c1, c2 = st.columns(2)
        c1.metric(_("Mean 1 − cosine"), number(summary["mean_cosine_change"], 3))
        c2.metric(_("Largest 1 − cosine"), number(summary["max_cosine_change"], 3))
        st.plotly_chart(fm.cosine_chart(changes), key="masking_cosine")
    st.dataframe(changes_table(changes), hide_index=True, key="masking_table")
