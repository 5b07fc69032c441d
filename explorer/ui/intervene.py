"""Streamlit glue for the Intervene page: read the widgets into small frozen requests, compute (cached by the model's
fingerprint, the token ids, the heads and the mode), and hand numbers to the pure figure builders.

Ablated traces are cached here, keyed on the heads and the mode, never in the sidebar's TraceCache, which is keyed
without them and would hand a plain trace for an ablated one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch

from ..analysis.loss import next_token_loss
from ..analysis.stats import induction_probe
from ..decoding.continuation import greedy_continuation
from ..capture.intervention import Head
from ..capture.model import Model
from ..capture.trace import Trace
from ..errors import ExplorerError
from ..escape import md_escape
from ..i18n import N_, _, join, ngettext
from . import resources, state, widgets
from .caching import cached
from .maps import cached_head_stats, head_blocks
from .tabs import Tab
from .trace_cache import TraceCache

HEADS_KEY = state.INTERVENE_HEADS_KEY  # the multiselect's state: a list of (layer, head), kept per session
SOURCE_KEY = "intervene_source"
SOURCES = {"text": N_("The sidebar's text"), "probe": N_("Induction probe (50 random tokens, twice)")}
PRESETS = {"induction": N_("Top-k induction heads"), "previous_token": N_("Top-k previous-token heads")}
MAX_CONTINUATION = 12  # greedy tokens after the text: a cached step each (a whole pass each under mean ablation)
IOI = dict(clean="When Mary and John went to the store, John gave a drink to",
           corrupt="When Mary and John went to the store, Mary gave a drink to", answer=" Mary", wrong=" John")
_HEAD_ITEM = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})")  # re's [0-9] is ASCII only, unlike str.isdigit


# ---- heads: from the URL, from other pages ------------------------------------------------------------------
def parse_heads(raw: str) -> tuple[list[Head], list[str]]:
    """``"17.3,18.6"`` → ([(17, 3), (18, 6)], dropped items). Strict: ASCII digits, ``layer.head``, ≤ 64 items."""
    heads, dropped = [], []
    for item in raw.split(",")[:64]:
        match = _HEAD_ITEM.fullmatch(item.strip())
        if match:
            heads.append((int(match[1]), int(match[2])))
        elif item.strip():
            dropped.append(item.strip()[:20])
    return sorted(set(heads)), dropped


def heads_from_url() -> None:
    """Take ``?heads=17.3,18.6`` once per distinct value (the URL is user input: bad items get an escaped notice)."""
    raw = st.query_params.get("heads")
    if raw is None or st.session_state.get("_iv_url_heads") == raw:
        return
    st.session_state["_iv_url_heads"] = raw
    heads, dropped = parse_heads(raw)
    st.session_state[HEADS_KEY] = heads
    if dropped:
        st.warning(_("The link's heads {items} were ignored: write each as layer.head, e.g. 17.3.").format(
            items=join("“" + md_escape(d) + "”" for d in dropped)))


def keep_valid_heads(model: Model) -> list[Head]:
    """The chosen heads that exist in this model (a model switch may leave some out of range), as tuples."""
    chosen = [tuple(h) for h in st.session_state.get(HEADS_KEY, [])]
    valid = [(l, h) for l, h in chosen if 0 <= l < model.n_layers and 0 <= h < model.n_heads]
    st.session_state[HEADS_KEY] = valid
    return valid


# ---- requests -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AblateRequest:
    source: str  # "text" | "probe"
    heads: tuple[Head, ...]
    ablation: str  # "zero" | "mean"
    continuation: int  # greedy tokens to generate before and after


@dataclass(frozen=True)
class PatchRequest:
    clean: str
    corrupt: str
    answer: str
    wrong: str


def preset_heads(model: Model, kind: str, k: int) -> list[Head]:
    """The k heads with the highest induction (on the probe) or previous-token score (on the sidebar's text)."""
    sel = state.current_selection()
    frame = cached_head_stats(model, resources.trace_for(model, sel.text, sel.mask))
    top = frame.sort_values(kind, ascending=False, kind="stable").head(k)
    return sorted(zip(top["layer"].astype(int).tolist(), top["head"].astype(int).tolist()))


def use_induction_example(model: Model) -> None:
    """Fill the Ablate tab's widgets (call before they are drawn): the probe, zero ablation, top-5 induction heads."""
    st.session_state[SOURCE_KEY] = "probe"
    st.session_state["intervene_ablation"] = "zero"
    st.session_state[HEADS_KEY] = preset_heads(model, "induction", 5)


def use_ioi_example() -> None:
    """Fill the Patch tab's inputs (call before they are drawn) with the indirect-object pair."""
    for name, value in IOI.items():
        st.session_state[f"intervene_{name}"] = value


# ---- compute --------------------------------------------------------------------------------------------------
def input_ids(model: Model, source: str) -> tuple[int, ...]:
    if source == "probe":
        return tuple(induction_probe(model).encoded.token_ids)
    text = state.current_selection().text
    if not text.strip():
        raise ExplorerError(_("Type a text in the sidebar first."))
    return tuple(model.encode_input(text, max_tokens=state.settings().max_tokens).token_ids)


@st.cache_resource(show_spinner=False)
def _traces() -> TraceCache:
    """Traces of token ids with heads ablated, shared by sessions (read-only), bounded like the sidebar's cache: an
    8,192-token trace is about 2 GiB."""
    s = state.settings()
    return TraceCache(max_entries=min(6, s.trace_cache_entries), max_bytes=s.trace_cache_mb << 20)


def traced(model: Model, ids: tuple[int, ...], heads: tuple[Head, ...], ablation: str) -> Trace:
    """A trace of ``ids`` with ``heads`` ablated (none: the plain run)."""
    ablation = ablation if heads else "zero"

    def build() -> Trace:
        what = (_("Running {model} with the heads switched off…") if heads else
                _("Running {model} over the text, layer by layer…")).format(model=md_escape(model.name))
        with widgets.progress(what) as update:
            return model.trace(list(ids), ablate=list(heads), ablation=ablation, keep_inputs=False,
                               on_progress=update)

    return _traces().get_or_build((model.fingerprint, ids, heads, ablation), build)


def plain_trace(model: Model, source: str, ids: tuple[int, ...]) -> Trace:
    """The un-ablated run: for the sidebar's text, the sidebar's own trace under the model's mask (shared with the
    other pages, so a long text is not traced twice)."""
    if source == "text":
        trace = resources.trace_for(model, state.current_selection().text, None)
        if tuple(trace.token_ids) == ids:
            return trace
    return traced(model, ids, (), "zero")


@cached(max_entries=16)
def _continuation(model: Model, ids: tuple[int, ...], n: int, heads: tuple[Head, ...], ablation: str) -> list[int]:
    with widgets.progress(ngettext("Continuing the text greedily, {n} token…", "Continuing the text greedily, {n} tokens…",
                              n).format(n=n)) as update:
        return greedy_continuation(model, list(ids), min(n, MAX_CONTINUATION), list(heads), ablation,
                                   on_progress=update)


def continuation(model: Model, ids: tuple[int, ...], n: int, heads: tuple[Head, ...], ablation: str) -> str:
    return model.decode(_continuation(model, ids, n, heads, ablation))  # under the tokenizer's lock


def top_k(model: Model, trace: Trace, k: int = 10) -> tuple[list[int], list[str], list[float]]:
    """The k most likely next tokens after the last position: (ids, token strings, probabilities)."""
    probs = torch.softmax(trace.logits_at([trace.n_tokens - 1])[0].double(), dim=-1)  # (vocab,)
    values, ids = probs.topk(k)
    ids = ids.tolist()
    return ids, [model.decode_token(i) for i in ids], values.tolist()


@cached(max_entries=16)
def loss_of(trace: Trace) -> np.ndarray:
    """:func:`next_token_loss`, cached per trace (every position's logits: seconds to minutes at 8,192 tokens)."""
    with widgets.progress(_("Scoring every next token of the text…")) as update:
        return next_token_loss(trace, on_progress=update)


def second_half_loss(losses: np.ndarray, model: Model) -> float:
    """Mean loss over the probe's second copy, from its second token on: what an induction head can predict."""
    probe = induction_probe(model)
    first = probe.start + probe.period + 1  # token index of t_2 in the second copy
    return float(losses[first - 1 : probe.start + 2 * probe.period - 1].mean())  # losses[i] predicts token i+1


@cached(max_entries=8)
def attribution(model: Model, request: PatchRequest) -> tuple[pd.DataFrame, float, float]:
    result = model.patch_heads(request.clean, request.corrupt, request.answer, request.wrong, method="attribution")
    return result.to_frame(), result.ld_clean, result.ld_corrupt


def exact_with_progress(model: Model, request: PatchRequest, layers_per_chunk: int = 3) -> pd.DataFrame:
    """Exact patching of every head, a few layers at a time, with a progress bar between chunks (the engine's
    sweep has no callback). Kept in the session, keyed on the model and the request."""
    key = (model.fingerprint, request)
    kept = st.session_state.get("_iv_exact")
    if kept and kept[0] == key:
        return kept[1]
    bar = st.progress(0.0, text=_("Patching every head exactly…"))
    parts = []
    for start in range(0, model.n_layers, layers_per_chunk):
        layers = range(start, min(model.n_layers, start + layers_per_chunk))
        heads = [(l, h) for l in layers for h in range(model.n_heads)]
        parts.append(model.patch_heads(request.clean, request.corrupt, request.answer, request.wrong,
                                       method="exact", heads=heads).to_frame())
        bar.progress(layers.stop / model.n_layers,
                     text=_("Patched layers 0–{last} of {n}").format(last=layers.stop - 1, n=model.n_layers))
    bar.empty()
    frame = pd.concat(parts, ignore_index=True)
    st.session_state["_iv_exact"] = (key, frame)
    return frame


def exact_if_kept(model: Model, request: PatchRequest) -> pd.DataFrame | None:
    kept = st.session_state.get("_iv_exact")
    return kept[1] if kept and kept[0] == (model.fingerprint, request) else None


def effect_grid(frame: pd.DataFrame, n_layers: int, n_heads: int) -> np.ndarray:
    grid = np.full((n_layers, n_heads), np.nan)
    grid[frame["layer"].to_numpy(), frame["head"].to_numpy()] = frame["effect"].to_numpy()
    return grid


# ---- the Ablate tab -------------------------------------------------------------------------------------------
# The formulas' \text{} words are filled in where shown (formula_words), so that they read in the page's language.
ZERO_FORMULA = r"o = W_O\,[z_1;\,\dots;\,z_H], \qquad \text{{{zero}}}:\; z_h \leftarrow 0, \qquad " \
               r"\text{{{mean}}}:\; z_h \leftarrow \tfrac{{1}}{{T}}\textstyle\sum_{{t}} z_{{h,t}}"
LOSS_FORMULA = r"\ell_i = -\ln p(x_{i+1} \mid x_{\le i})"
PATCH_FORMULA = r"\text{{{effect}}}_h = \frac{{LD_{{\text{{{patched}}}\,h}} - LD_{{\text{{{clean}}}}}}}{{LD_{{\text{{{corrupt}}}}} - " \
                r"LD_{{\text{{{clean}}}}}}}, \qquad LD = \mathrm{{logit}}(\text{{{answer}}}) - \mathrm{{logit}}(\text{{{wrong}}})"
ATTRIBUTION_FORMULA = r"\text{{{effect}}}_h \approx \frac{{(a^{{h}}_{{\text{{{corrupt}}}}} - a^{{h}}_{{\text{{{clean}}}}}) \cdot " \
                      r"\partial LD / \partial a^{{h}}}}{{LD_{{\text{{{corrupt}}}}} - LD_{{\text{{{clean}}}}}}}"


def formula_words() -> dict[str, str]:
    """The words inside the Intervene formulas' \\text{}, in the reader's language."""
    return {"zero": _("zero"), "mean": _("mean"), "effect": _("effect"), "patched": _("patched"),
            "clean": _("clean"), "corrupt": _("corrupt"), "answer": _("answer"), "wrong": _("wrong")}


def head_label(head: Head) -> str:
    return f"{head[0]}.{head[1]}"


def ablate_ui(model: Model) -> AblateRequest:
    """The Ablate tab's controls: examples and presets first (they fill the widgets below them)."""
    row = st.columns([2, 2, 1, 2], vertical_alignment="bottom")
    if row[0].button(_("Worked example: ablate the induction heads"), icon=":material/play_arrow:",
                     key="intervene_induction_example"):
        use_induction_example(model)
    preset = row[1].selectbox(_("Preset"), list(PRESETS), format_func=lambda p: _(PRESETS[p]), key="intervene_preset",
                              persist_state="session")
    k = row[2].number_input("k", 1, 20, 5, key="intervene_k", persist_state="session")
    if row[3].button(_("Use the preset"), key="intervene_use_preset"):
        st.session_state[HEADS_KEY] = preset_heads(model, preset, int(k))
    keep_valid_heads(model)
    options = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    heads = st.multiselect(_("Heads to switch off (layer.head)"), options, key=HEADS_KEY, format_func=head_label,
                           persist_state="session",
                           placeholder=_("Pick heads, a preset or an example"))
    cols = st.columns(3)
    source = cols[0].radio(_("Input"), list(SOURCES), format_func=lambda s: _(SOURCES[s]), key=SOURCE_KEY,
                            persist_state="session")
    ablation = cols[1].radio(_("Mode"), ["zero", "mean"], key="intervene_ablation", horizontal=True,
                             format_func=lambda m: _("zero") if m == "zero" else _("mean"), persist_state="session")
    n = cols[2].slider(_("Greedy tokens to continue"), 0, MAX_CONTINUATION, 8, key="intervene_continue",
                       persist_state="session")
    return AblateRequest(source, tuple(sorted(tuple(h) for h in heads)), ablation, int(n))


def ablate_tab() -> None:
    from ..figures.heatmap import token_heatmap
    from ..figures.intervene import loss_chart, next_token_bars

    model = resources.current_model()
    request = ablate_ui(model)
    st.latex(ZERO_FORMULA.format(**formula_words()))
    st.caption(_("Each head h writes z_h (its attention-weighted values) into the output projection W_O. Zeroing "
                 "removes its contribution at every position; mean ablation replaces it by its average over the "
                 "text, which keeps its typical output and removes only what depends on the tokens."))
    if not request.heads:
        st.info(_("Choose heads to switch off: from the list, a preset, or the worked example."))
        return
    first = request.heads[0]
    if st.button(_("Why does head {head} look there?").format(head=head_label(first)), key="intervene_explain",
                 icon=":material/psychology_alt:", help=_("Opens the Explain page with this head (the first one "
                                                          "chosen), on the sidebar's text.")):
        state.open_explain(*first)
    ids = input_ids(model, request.source)
    before = plain_trace(model, request.source, ids)
    after = traced(model, ids, request.heads, request.ablation)
    if model.is_causal_lm:
        loss_before, loss_after = loss_of(before), loss_of(after)
        cols = st.columns(3)
        cols[0].metric(_("Mean loss before (nats)"), f"{loss_before.mean():.3f}")
        cols[1].metric(_("Mean loss after (nats)"), f"{loss_after.mean():.3f}",
                       delta=f"{loss_after.mean() - loss_before.mean():+.3f}", delta_color="inverse")
        if request.source == "probe":
            half = second_half_loss(loss_before, model), second_half_loss(loss_after, model)
            cols[2].metric(_("Second half: loss before → after (nats)"), f"{half[0]:.3f} → {half[1]:.3f}")
        st.latex(LOSS_FORMULA)
        st.plotly_chart(loss_chart(before.tokens, {_("before"): loss_before, _("after"): loss_after},
                                   title=_("Loss of each next token")), key="intervene_loss")
        st.plotly_chart(next_token_bars(top_k(model, before), top_k(model, after),
                                        titles=(_("Next token before"), _("Next token after")),
                                        value_name=_("probability"), changed_name=_("in only one top 10")),
                        key="intervene_topk")
        if request.continuation:
            cols = st.columns(2)
            for col, heads, name in ((cols[0], (), _("Greedy continuation before")),
                                     (cols[1], request.heads, _("Greedy continuation after"))):
                col.caption(name)
                col.code(continuation(model, ids, request.continuation, heads, request.ablation), language=None)
    else:
        st.info(_("This model is an encoder: it predicts no next token, so only the attention maps are compared."))
    st.caption(_("A head downstream reads what the switched-off heads wrote: its map may change."))
    first = min(l for l, _h in request.heads)
    cols = st.columns(2)
    layer = cols[0].number_input(_("Layer"), 0, model.n_layers - 1, min(first + 1, model.n_layers - 1),
                                 key="intervene_map_layer", persist_state="session")
    head = cols[1].number_input(_("Head"), 0, model.n_heads - 1, 0, key="intervene_map_head",
                                persist_state="session")
    cols = st.columns(2)
    for col, trace, title in ((cols[0], before, _("Layer {layer} · head {head}, before")),
                              (cols[1], after, _("Layer {layer} · head {head}, after"))):
        title = title.format(layer=layer, head=head)
        col.plotly_chart(token_heatmap(head_blocks(trace, int(layer), int(head)), trace.tokens, trace.tokens,
                                       title=title, row_title=_("query"), col_title=_("key")),
                         key=f"intervene_map_{'after' if trace is after else 'before'}")


# ---- the Patch tab --------------------------------------------------------------------------------------------
def patch_ui() -> PatchRequest:
    if st.button(_("Worked example: who gets the drink?"), icon=":material/play_arrow:", key="intervene_ioi_example"):
        use_ioi_example()
    cols = st.columns(2)
    clean = cols[0].text_area(_("Clean text"), key="intervene_clean", height=80, persist_state="session")
    corrupt = cols[1].text_area(_("Corrupt text (same number of tokens)"), key="intervene_corrupt", height=80,
                                 persist_state="session")
    cols = st.columns(2)
    answer = cols[0].text_input(_("Answer token (clean)"), key="intervene_answer", persist_state="session")
    wrong = cols[1].text_input(_("Wrong token"), key="intervene_wrong", persist_state="session")
    return PatchRequest(clean, corrupt, answer, wrong)


def patch_tab() -> None:
    from ..figures.analysis import layer_head_heatmap
    from ..figures.intervene import attribution_scatter

    model = resources.current_model()
    request = patch_ui()
    st.latex(PATCH_FORMULA.format(**formula_words()))
    st.caption(_("Patching puts one head's output from the corrupt run into the clean run, at every position. An "
                 "effect of 1 means that head alone carries the whole change in the logit difference; 0, none of it."))
    if not all((request.clean.strip(), request.corrupt.strip(), request.answer, request.wrong)):
        st.info(_("Type a clean and a corrupt text, an answer token and a wrong token, or use the worked example."))
        return
    frame, ld_clean, ld_corrupt = attribution(model, request)
    cols = st.columns(2)
    cols[0].metric(_("Logit difference, clean"), f"{ld_clean:.3f}")
    cols[1].metric(_("Logit difference, corrupt"), f"{ld_corrupt:.3f}")
    exact = exact_if_kept(model, request)
    if st.button(_("Run exact patching (one forward per head)"), key="intervene_exact", disabled=exact is not None):
        exact = exact_with_progress(model, request)
    shown = [(_("Attribution (first order, instant)"), frame, "intervene_attr_map")]
    if exact is not None:
        shown.append((_("Exact patching"), exact, "intervene_exact_map"))
    st.latex(ATTRIBUTION_FORMULA.format(**formula_words()))
    cols = st.columns(len(shown))
    for col, (title, table, key) in zip(cols, shown):
        fig = layer_head_heatmap(effect_grid(table, model.n_layers, model.n_heads), title, _("effect"))
        with col:
            event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points")
            points = [p for p in event.selection.points if p.get("customdata") is not None] if event else []
            if points:
                state.open_on_heads_page(int(points[0]["customdata"][0]), int(points[0]["customdata"][1]))
            top = table.reindex(table["effect"].abs().sort_values(ascending=False).index).head(5)
            st.caption(_("Strongest: {heads}").format(heads=join(
                f"{int(r.layer)}.{int(r.head)} ({r.effect:+.2f})" for r in top.itertuples())))
    st.caption(_("Click a cell to open that head on the Attention heads page."))
    if exact is not None:
        r = float(np.corrcoef(frame["effect"], exact["effect"])[0, 1])
        heads = list(zip(frame["layer"].astype(int), frame["head"].astype(int)))
        st.plotly_chart(attribution_scatter(frame["effect"].to_numpy(), exact["effect"].to_numpy(), heads,
                                            title=_("Attribution against exact (r = {r})").format(r=f"{r:.3f}"),
                                            x_name=_("attribution"), y_name=_("exact")), key="intervene_scatter")


# ---- the page's tabs: only the open one runs; every widget above keeps its value while its tab is closed --------
TABS: list[Tab] = [(N_("Ablate"), ablate_tab), (N_("Patch"), patch_tab)]
TAB_KEY = "intervene_tab"  # the open tab (its translated label)
