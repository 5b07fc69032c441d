"""The Explain page's "Why it looks there" tab: one head's score of one key split into parts of the residual stream
(:func:`explorer.qk_attribution`), with the worked example on the induction probe. Figures:
:mod:`explorer.figures.explain`."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ..caching import cached
from ..resources import current_model, current_trace
from ..widgets import layer_head_selectors, quoted
from ...analysis.qk_attribution import InductionExample, QKAttribution, induction_example, qk_attribution
from ...capture.model import Model
from ...capture.projections import block_layout
from ...capture.trace import Trace
from ...figures import explain as fe
from ...i18n import N_, _, percent

EXAMPLE_KEY = "explain_qk_example"  # True while the worked example (the induction probe) is shown
QUERY_KEY, KEY_KEY, BASELINE_KEY = "explain_qk_query", "explain_qk_key", "explain_qk_baseline"
ROW_KEY = "explain_qk_row"  # the attention-row chart (a click picks the key)
FOR_KEY = "_explain_qk_for"  # (text, layer, head, query) the key was last defaulted for
BASELINES = {"mean": N_("minus the mean over the keys it sees"), "none": N_("the raw score")}
FORMULA = (r"s = \Big(\sum_a q_a\Big)\cdot\Big(\sum_b k_b\Big)\cdot\text{scale} = "
           r"\sum_a\sum_b q_a\cdot k_b\cdot\text{scale}")
MIN_PREVIOUS_TOKEN = 0.5  # a head whose previous-token score on the probe reaches this is called a previous-token head


@dataclass(frozen=True)
class QKRequest:
    layer: int
    head: int
    query: int
    key: int
    baseline: str | None


@st.cache_resource(show_spinner=False, max_entries=3)
def _example(_model: Model, key: tuple) -> InductionExample:
    with st.spinner(_("Tracing the induction probe and splitting the score…")):
        return induction_example(_model)


def example_for(model: Model) -> InductionExample:
    """The worked example of ``model`` (its probe trace included), computed once per model and device."""
    return _example(model, model.fingerprint)


@cached(max_entries=32)
def _attribution(trace: Trace, model: Model, request: QKRequest) -> QKAttribution:
    with st.spinner(_("Splitting the score into the parts of the residual stream…")):
        return qk_attribution(trace, request.layer, request.head, request.query, request.key,
                              baseline=request.baseline, model=model)


def attribution_for(trace: Trace, model: Model, request: QKRequest) -> QKAttribution:
    """The split, cached by the trace's and the model's fingerprints (the probe and the sidebar's text never share
    an entry)."""
    return _attribution(trace, model, request)


def use_example(model: Model) -> None:
    """Show the worked example: its head, query and key become the selection (before the widgets are drawn)."""
    ex = example_for(model)
    a = ex.attribution
    st.session_state[EXAMPLE_KEY] = True
    st.session_state["_ae_layer"], st.session_state["_ae_head"] = a.layer, a.head
    st.session_state[QUERY_KEY], st.session_state[KEY_KEY] = a.query, a.key
    st.session_state[BASELINE_KEY] = "mean"
    st.session_state[FOR_KEY] = (ex.trace.text, a.layer, a.head, a.query)


def _pick_key() -> None:
    """A click on a bar of the query's attention row picks that key."""
    points = st.session_state[ROW_KEY].selection.get("points") or []
    if points and points[0].get("x") is not None:
        st.session_state[KEY_KEY] = int(points[0]["x"])


def qk_ui(trace: Trace) -> QKRequest:
    """Head, query, key (default: the query's top key) and baseline; out-of-range values are clamped."""
    row = st.container(horizontal=True)
    layer, head = layer_head_selectors(trace, key="explain_qk", container=row)
    n = trace.n_tokens
    cols = (row, row, st)
    if not 0 <= st.session_state.get(QUERY_KEY, -1) < n:
        st.session_state[QUERY_KEY] = n - 1
    st.session_state.setdefault(BASELINE_KEY, "mean")
    query = int(cols[0].number_input(_("Query position"), 0, n - 1, step=1, key=QUERY_KEY))
    if st.session_state.get(FOR_KEY) != (trace.text, layer, head, query) or not 0 <= st.session_state.get(KEY_KEY, 0) < n:
        st.session_state[KEY_KEY] = int(trace.top_keys(layer, head, query, k=1)[0][0])
        st.session_state[FOR_KEY] = (trace.text, layer, head, query)
    key = int(cols[1].number_input(_("Key position"), 0, n - 1, step=1, key=KEY_KEY,
                                   help=_("Default: the key this query weighs most. Click a bar below to pick "
                                          "another.")))
    baseline = cols[2].radio(_("Score"), list(BASELINES), format_func=lambda b: _(BASELINES[b]), key=BASELINE_KEY,
                             horizontal=True)
    return QKRequest(layer, head, query, key, None if baseline == "none" else baseline)


def tab() -> None:
    model = current_model()
    if st.button(_("Worked example: why does the induction head look there?"), icon=":material/play_arrow:",
                 key="explain_qk_example_button", disabled=not model.is_causal_lm,
                 help=None if model.is_causal_lm else _("An encoder sees the whole probe at once: it has no "
                                                        "induction target.")):
        use_example(model)
    example = st.session_state.get(EXAMPLE_KEY, False) and model.is_causal_lm
    if example:
        ex = example_for(model)
        trace = ex.trace
        st.info(_("Showing the induction probe: {period} random tokens, repeated twice (not the sidebar's "
                  "text).").format(period=ex.period), icon=":material/science:")
        if st.button(_("Back to the sidebar's text"), key="explain_qk_back"):
            st.session_state[EXAMPLE_KEY] = False
            st.rerun()
    else:
        trace = current_trace()
    request = qk_ui(trace)
    st.latex(FORMULA)
    st.caption(_("q_a is part a of the residual stream entering the layer at the query (the embeddings, an earlier "
                 "head's output W_O·z, an earlier MLP's output, the biases), carried through the norms, W_Q and RoPE; "
                 "k_b likewise at the key. Every norm's scale is frozen at the value it had on this text, which makes "
                 "the split exact: the parts add up to the score the model computed. It does not say what the score "
                 "would be without a part: removing one would change the norms' scales."))
    draw(trace, model, request)
    if example:
        findings(example_for(model), request)


def draw(trace: Trace, model: Model, request: QKRequest) -> None:
    a = attribution_for(trace, model, request)
    tokens = trace.tokens
    cols = st.columns(4)
    cols[0].metric(_("Score s"), f"{a.score:.4f}")
    cols[1].metric(_("Raw score q·k·scale"), f"{a.raw_score:.4f}")
    cols[2].metric(_("Attention weight"), percent(a.weight, 1))
    cols[3].metric(_("Parts add up to"), f"{a.parts_total:.4f}", delta=f"|Δ| = {a.error:.1e}", delta_color="off",
                   delta_arrow="off", help=_("The sum of every part, against the score the model computed: equal to "
                                             "float32 rounding, as the frozen norms make the split exact."))
    st.caption(_("Head {layer}.{head}, query {query} {query_token} → key {key} {key_token}.").format(
        layer=a.layer, head=a.head, query=a.query, query_token=quoted(tokens[a.query]), key=a.key,
        key_token=quoted(tokens[a.key])) + (" " + _("With the mean baseline each key part is its value at this key "
                                                      "minus its mean over the keys the query sees: what made this "
                                                      "key stand out.") if a.baseline else ""))
    if block_layout(model, 0).post_norm:
        st.caption(_("Post-norm encoder: every part is carried through each later LayerNorm with that norm's scale "
                     "frozen (centring is linear), as DecompX does; the split stays exact."))
    row = trace.attention_window(request.layer, request.head, queries=slice(request.query, request.query + 1))[0]
    st.plotly_chart(fe.attention_row(row.numpy(), tokens, query=a.query, key=a.key,
                                     title=_("Where query {query} looks (head {layer}.{head}): click a bar to pick "
                                             "the key").format(query=a.query, layer=a.layer, head=a.head),
                                     value_name=_("weight")),
                    key=ROW_KEY, on_select=_pick_key, selection_mode="points", config={"displayModeBar": False})
    left, right = st.columns(2)
    left.plotly_chart(fe.part_bars(a.key_parts, title=_("Key side: what in the key's stream made the score"),
                                   value_name=_("part of s")), key="explain_qk_key_bars")
    right.plotly_chart(fe.part_bars(a.query_parts, title=_("Query side: what in the query's stream asked"),
                                    value_name=_("part of s")), key="explain_qk_query_bars")
    if a.layer > 0:
        st.plotly_chart(fe.head_parts_map(a.head_grid("key"), a.other_parts("key"),
                                          title=_("Key side, every earlier head (and the MLPs beside them)"),
                                          value_name=_("part of s"), embed_name=_("embed"), mlp_name=_("MLP"),
                                          layer_name=_("layer"), head_name=_("head")), key="explain_qk_map")
    bias = a.key_parts.get("bias")
    if bias is not None:
        st.caption(_("The biases (and LayerNorm's β) add {value} on the key side.").format(value=f"{bias:.4f}"))


def findings(ex: InductionExample, request: QKRequest) -> None:
    """What the worked example shows, from its numbers (only while its own head, query and key are chosen)."""
    a = ex.attribution
    if (request.layer, request.head, request.query, request.key, request.baseline) != (
            a.layer, a.head, a.query, a.key, a.baseline):
        return
    top = ex.top_key_heads(3)
    first = top.iloc[0]
    is_prev = first.previous_token >= MIN_PREVIOUS_TOKEN
    lines = [_("Head {layer}.{head} is the strongest induction head (score {score} on the probe). Query {query} "
               "{token} repeats an earlier token; its key {key} {target} is the token that followed that earlier "
               "occurrence, and it gets {weight} of the attention.").format(
        layer=a.layer, head=a.head, score=f"{ex.induction:.2f}", query=a.query, token=quoted(ex.trace.tokens[a.query]),
        key=a.key, target=quoted(ex.trace.tokens[a.key]), weight=percent(a.weight, 1))]
    lines.append(_("Above the mean over the keys, its score is {score}; the largest key-side head parts: "
                   "{parts}.").format(score=f"{a.score:.2f}", parts=", ".join(
                       _("{head} ({part}, previous-token score {prev})").format(
                           head=r.name, part=f"{r.part:+.2f}", prev=f"{r.previous_token:.2f}")
                       for r in top.itertuples())))
    if is_prev:
        lines.append(_("The previous-token head {head} stands out: it wrote “my previous token was …” into the key's "
                       "stream, which is what the induction head's query looks for ({share} of the score).").format(
            head=first["name"], share=percent(first.part / a.score if a.score else 0.0, 0)))
    else:
        lines.append(_("No previous-token head stands out here: the largest key-side head part comes from {head}, "
                       "whose previous-token score is {prev}.").format(head=first["name"],
                                                                         prev=f"{first.previous_token:.2f}"))
    st.success("\n\n".join(lines), icon=":material/lightbulb:")
