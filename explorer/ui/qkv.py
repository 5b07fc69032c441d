"""Streamlit parts of the Q, K, V page: the controls, one function per step of the walk-through, the numbers table.

The walk-through's numbers come from :func:`explorer.from_scratch.walkthrough.formula_steps`; this module only reads
the widgets (:func:`view_ui`) and lays the numbers out. :func:`steps_for` lists the steps a model has (the QK-norm and
RoPE steps only where the model has them); a step's number is its position in that list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import streamlit as st

from . import state, widgets
from ..analysis.mask_effects import CAUSAL_MASK_LATEX
from ..capture.model import Model
from ..capture.tokens import display_label, unique_labels
from ..capture.trace import Trace
from ..capture.word_trace import WordTrace
from ..figures import qkv as fq
from ..from_scratch.walkthrough import FormulaSteps, formula_steps, token_window
from ..i18n import _, ngettext

WINDOW_DEFAULT = 32
WINDOW_MAX = 128  # d_model × 128 float32 cells stays well under the 1.5 MB figure budget
FORMULA_WIDTH = 330  # px: the formula card; on narrow screens the numbers wrap below it


# ---- widgets -----------------------------------------------------------------------------------------------------
def token_option(trace: Trace, i: int) -> str:
    return f"{i} · {display_label(trace.tokens[i])}"


def token_picker(trace: Trace, label: str, key: str, default: int, container=None, help: str | None = None) -> int:
    """A selectbox over the trace's tokens whose choice survives reruns; reset to ``default`` if out of range.

    A new text may have fewer tokens than the remembered choice: then the default is used, without an error.
    """
    n = trace.n_tokens
    value = st.session_state.get(key)
    if not isinstance(value, int) or not 0 <= value < n:
        st.session_state[key] = min(max(default, 0), n - 1)
    where = container or st
    return int(where.selectbox(label, range(n), key=key, format_func=lambda i: token_option(trace, i), help=help))


def word_option(words: WordTrace, w: int) -> str:
    return f"{w} · {display_label(words.tokens[w])}"


def word_and_piece(words: WordTrace, controls) -> tuple[int, int]:
    """Word view: pick a query word, then one of its pieces (the formula runs per token). The last piece is the
    default: in a causal model it is the one that has read the whole word."""
    W = words.n_tokens
    value = st.session_state.get("qkv_word")
    if not isinstance(value, int) or not 0 <= value < W:
        st.session_state["qkv_word"] = (2 * W) // 3
    word = int(controls.selectbox(_("Query word"), range(W), key="qkv_word",
                                  format_func=lambda w: word_option(words, w),
                                  help=_("The word whose attention is followed; the walk-through below runs for one "
                                         "of its pieces.")))
    pieces = list(words.pieces(word))
    if st.session_state.get("qkv_piece") not in pieces:
        st.session_state["qkv_piece"] = pieces[-1]
    trace = words.tokens_trace
    piece = int(controls.selectbox(_("Piece (token)"), pieces, key="qkv_piece",
                                   format_func=lambda i: token_option(trace, i),
                                   help=_("The tokens this word is made of; the formula is computed for one of them.")))
    return word, piece


def query_row(trace: Trace, layer: int, head: int, query: int):
    """(n,) one query's exact attention row: one row of the map, never the (n, n) map (256 MiB at 8,192 tokens)."""
    return trace.attention_window(layer, head, queries=slice(query, query + 1))[0]


@dataclass(frozen=True)
class View:
    """What the reader picked: one head, one query token, one key token, and the window of tokens the charts show."""

    layer: int
    head: int
    query: int
    key: int
    start: int
    stop: int
    word: int | None = None  # word view: the query word (``query`` is one of its pieces)


def view_ui(trace: Trace, words: WordTrace | None = None) -> View:
    """The controls row: layer, head, query token (in word view: a word and one of its pieces), window size and the
    key taken apart in the neuron view."""
    n = trace.n_tokens
    controls = st.container(horizontal=True, vertical_alignment="bottom")
    layer, head = widgets.layer_head_selectors(trace, key="qkv", container=controls)
    word = None
    if words is not None:
        word, query = word_and_piece(words, controls)
    else:
        query = token_picker(trace, _("Query token"), "qkv_query", default=(2 * n) // 3, container=controls,
                             help=_("The token whose attention row is computed (row i of the map)."))
    window = WINDOW_DEFAULT
    if n > 16:
        window = controls.slider(_("Tokens shown"), 8, min(WINDOW_MAX, n), min(WINDOW_DEFAULT, n), 4, key="qkv_window",
                                 help=_("Charts show a window of tokens around the query (mostly before it); the "
                                        "table at the bottom has every key."))
    strongest = int(query_row(trace, layer, head, query).argmax())  # the key this query attends to most
    key = token_picker(trace, _("Key token (for q ⊙ k)"), "qkv_key", default=strongest, container=controls,
                       help=_("The key whose score is taken apart per dimension."))
    start, stop = token_window(n, query, window)
    return View(layer, head, query, key, start, stop, word)


def word_row(words: WordTrace, view: View) -> None:
    """Word view: the chosen word's pieces, and its attention row by word (the mean of its pieces' rows, each key
    word the sum over its pieces)."""
    if view.word is None:
        return
    trace = words.tokens_trace
    pieces = words.pieces(view.word)
    st.markdown(ngettext("**The word {word}** is {n} token: {pieces}.", "**The word {word}** is {n} tokens: {pieces}.",
                         len(pieces)).format(
        word=widgets.quoted(words.tokens[view.word]), n=len(pieces),
        pieces=", ".join(f"{i} {widgets.quoted(trace.tokens[i])}" for i in pieces)))
    row = words.attention(view.layer, view.head)[view.word].numpy()  # (W,)
    st.plotly_chart(fq.key_bars(row, unique_labels(words.tokens), title=_("Attention from this word, by word"),
                                value_name="p", picked=unique_labels(words.tokens)[view.word]), key="qkv_word_row")
    st.caption(_("Each bar: the attention of the word's pieces to a key word's pieces, summed over the key's pieces "
                 "and averaged over the query's (Clark et al. 2019); the bars sum to 1. Below, the formula for the "
                 "piece chosen above."))


# ---- the walk: what every step reads ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Walk:
    """One view's numbers and labels, shared by every step function."""

    trace: Trace
    view: View
    steps: FormulaSteps
    labels: list[str]  # unique labels of every token

    @property
    def shown(self) -> list[str]:
        return self.labels[self.view.start:self.view.stop]

    @property
    def query_label(self) -> str:
        return self.labels[self.view.query]

    @property
    def key_label(self) -> str:
        return self.labels[self.view.key]

    def window(self, values):
        """The rows of ``values`` (a tensor over tokens) inside the shown window, as numpy."""
        return values[self.view.start:self.view.stop].numpy()

    def heatmap(self, values, title: str, value_name: str, key: str) -> None:
        st.plotly_chart(fq.vectors_heatmap(self.window(values), self.shown, title=title, value_name=value_name,
                                           highlight=self.query_label), key=key)

    def bars(self, values, title: str, value_name: str, key: str, masked: bool = False) -> None:
        allowed = self.window(self.steps.allowed) if masked else None
        st.plotly_chart(fq.key_bars(self.window(values), self.shown, title=title, value_name=value_name,
                                    allowed=allowed, picked=self.key_label), key=key)


def walk(model: Model, trace: Trace, view: View) -> Walk:
    steps = formula_steps(model, trace, view.layer, view.head, view.query)
    return Walk(trace, view, steps, unique_labels(trace.tokens))


def window_caption(w: Walk) -> None:
    v, n = w.view, w.trace.n_tokens
    if v.stop - v.start < n:
        st.caption(_("Charts show tokens {start}–{last} of {n}. Query: {query} (token {index}).").format(
            start=v.start, last=v.stop - 1, n=n, query=widgets.quoted(w.trace.tokens[v.query]), index=v.query))


def step(number: int, title: str, formulas: Sequence[str], note: str | None = None):
    """Draw one step's heading and formulas and return the container for its numbers, beside them when the screen
    is wide enough and below them otherwise (a wrapping row: formulas never get squeezed into a sliver)."""
    st.markdown(f"#### {number}. {title}")
    row = st.container(horizontal=True, gap="medium")
    left = row.container(width=FORMULA_WIDTH)
    with left:
        for formula in formulas:
            st.latex(formula)
        if note:
            st.caption(note)
    return row.container(width="stretch")


# ---- the steps, in order -----------------------------------------------------------------------------------------
def input_step(number: int, w: Walk) -> None:
    s, layer = w.steps, w.view.layer
    with step(number, _("The input x"), [rf"x \in \mathbb{{R}}^{{n \times d}},\quad n = {s.n_tokens},\ d = {s.d_model}"],
              _("What layer {layer}'s attention reads: one {d}-dimensional vector per token (after the block's norm "
                "in pre-norm models such as SmolLM2; the previous layer's output in BERT).").format(layer=layer,
                                                                                                  d=s.d_model)):
        w.heatmap(s.x, _("x at layer {layer}").format(layer=layer), "x", "qkv_x")


def projection_step(number: int, w: Walk) -> None:
    s, head, kv = w.steps, w.view.head, w.steps.kv_head
    bias = s.b_q is not None
    formulas = [
        rf"Q = x\,W_q^{{({head})}}{' + b_q' if bias else ''}",
        rf"K = x\,W_k^{{({kv})}}{' + b_k' if bias else ''}",
        rf"V = x\,W_v^{{({kv})}}{' + b_v' if bias else ''}",
        rf"W \in \mathbb{{R}}^{{{s.d_model} \times {s.head_dim}}}",
        rf"Q, K, V \in \mathbb{{R}}^{{{s.n_tokens} \times {s.head_dim}}}",
    ]
    notes = [widgets.kv_sharing_note(w.trace, head)]
    if s.uses_qk_norm:
        notes.append(_("Q and K here are before the QK-norm (the next step normalises them)."))
    elif s.uses_rope:
        notes.append(_("Q and K here are before the rotary embedding (the next step rotates them)."))
    q_first, k_first = (s.q_raw, s.k_raw) if s.uses_qk_norm else (s.q_pre, s.k_pre) if s.uses_rope else (s.q, s.k)
    with step(number, _("Project to queries, keys and values"), formulas, " ".join(n for n in notes if n) or None):
        tab_q, tab_k, tab_v, tab_w = st.tabs(["Q", "K", "V", _("The weights")])
        with tab_q:
            w.heatmap(q_first, _("Q, head {head}").format(head=head), "q", "qkv_q_proj")
        with tab_k:
            w.heatmap(k_first, _("K, key/value head {kv}").format(kv=kv), "k", "qkv_k_proj")
        with tab_v:
            w.heatmap(s.v, _("V, key/value head {kv}").format(kv=kv), "v", "qkv_v")
        with tab_w:
            st.caption(_("The {D} columns of W_q, W_k, W_v that make this head (shown as {D} rows × {d} inputs).")
                       .format(D=s.head_dim, d=s.d_model))
            for name, weight in (("W_q", s.w_q), ("W_k", s.w_k), ("W_v", s.w_v)):
                st.plotly_chart(fq.weights_heatmap(weight.numpy(), title=name), key=f"qkv_{name}")


def latex_number(x: float) -> str:
    """A small constant for LaTeX: 1e-06 as 10^{-6}, 2.5e-05 as 2.5 \times 10^{-5}."""
    mantissa, exponent = f"{x:.2g}".split("e") if "e" in f"{x:.2g}" else (f"{x:.2g}", "")
    if not exponent:
        return mantissa
    power = rf"10^{{{int(exponent)}}}"
    return power if mantissa == "1" else rf"{mantissa} \times {power}"


def qk_norm_formulas(s: FormulaSteps) -> list[str]:
    """RMSNorm of each query and key vector over its D dimensions, with Gemma's (1 + w) or Qwen3's w scaling."""
    gain = {1.0: r"(1 + w_q)", 0.0: r"w_q"}.get(s.norm_offset)
    if gain is None:  # a norm of neither form: named, not spelled out
        return [r"\hat q_i = \mathrm{norm}_q(q_i),\quad \hat k_j = \mathrm{norm}_k(k_j)"]
    eps = rf"\varepsilon = {latex_number(s.norm_eps)}" if s.norm_eps is not None else r"\varepsilon"
    return [
        rf"\hat q_i = \frac{{q_i}}{{\sqrt{{\tfrac1D \sum_m q_{{i,m}}^2 + \varepsilon}}}} \odot {gain}",
        rf"\hat k_j = \frac{{k_j}}{{\sqrt{{\tfrac1D \sum_m k_{{j,m}}^2 + \varepsilon}}}} \odot {gain.replace('q', 'k')}",
        rf"D = {s.head_dim},\ {eps}",
    ]


def qk_norm_step(number: int, w: Walk) -> None:
    s = w.steps
    note = {1.0: _("RMSNorm with (1 + w) scaling, as in Gemma 3: "), 0.0: _("RMSNorm with w scaling, as in Qwen3: ")}
    with step(number, _("Normalise Q and K (QK-norm)"), qk_norm_formulas(s),
              note.get(s.norm_offset, "") + _("each head's query and key vectors are scaled to a fixed root-mean-square "
                                              "size, times a learned gain per dimension, before any scoring. It keeps "
                                              "the scores from growing with the vectors' length. V is not normalised.")):
        before_after(w, (s.q_raw, s.k_raw), (s.q_pre, s.k_pre), (_("Q after the QK-norm"), _("K after the QK-norm")),
                     (_("Q after the norm"), _("K after the norm")), "norm",
                     names=(_("before the norm"), _("after the norm")))


ROPE_FORMULAS = [
    r"q_i \leftarrow R_{i}\, q_i,\quad k_j \leftarrow R_{j}\, k_j",
    r"\small q'_m = q_m \cos i\theta_m - q_{m+D/2} \sin i\theta_m",
    r"\small q'_{m+D/2} = q_m \sin i\theta_m + q_{m+D/2} \cos i\theta_m",
    r"\small q'_i \cdot k'_j \text{ %s } i - j",  # \text{}: _("depends only on"), filled in where shown
]


def rope_step(number: int, w: Walk) -> None:
    s = w.steps
    with step(number, _("Rotate Q and K by position (RoPE)"), [f.replace("%s", _("depends only on")) for f in ROPE_FORMULAS],
              _("Dimension m is paired with m + D/2, and each pair is turned by an angle that grows with the token's "
                "position i (θ_m falls with m); the pair keeps its length. V is not rotated.")):
        before_after(w, (s.q_pre, s.k_pre), (s.q, s.k), (_("Q after RoPE"), _("K after RoPE")),
                     (_("Q after RoPE"), _("K after RoPE")), "rope")


def before_after(w: Walk, before: tuple, after: tuple, titles: tuple[str, str], tab_names: tuple[str, str],
                 key: str, names: tuple[str, str] | None = None) -> None:
    """A step that changes Q and K in place (QK-norm, RoPE): the chosen query's q and key's k before → after it, then
    all of Q and of K after it. ``before``/``after`` are (Q, K) per-head tensors (H, n, D)."""
    v = w.view
    tab_vec, tab_q, tab_k = st.tabs([_("q and k of two tokens"), *tab_names])
    with tab_vec:
        st.plotly_chart(fq.rope_comparison(
            {"q": before[0][v.query].numpy(), "k": before[1][v.key].numpy()},
            {"q": after[0][v.query].numpy(), "k": after[1][v.key].numpy()},
            labels={"q": _("q of {token} (position {i})").format(token=w.query_label, i=v.query),
                    "k": _("k of {token} (position {i})").format(token=w.key_label, i=v.key)},
            before_name=names[0] if names else None, after_name=names[1] if names else None), key=f"qkv_{key}")
    with tab_q:
        w.heatmap(after[0], titles[0], "q", f"qkv_q_{key}")
    with tab_k:
        w.heatmap(after[1], titles[1], "k", f"qkv_k_{key}")


def score_step(number: int, w: Walk) -> None:
    s, v, tokens = w.steps, w.view, w.trace.tokens
    with step(number, _("Score the query against every key"),
              [rf"s_j = q_i \cdot k_j = \sum_{{m=1}}^{{{s.head_dim}}} q_{{i,m}}\, k_{{j,m}}"],
              _("One dot product per key, for query {query} (token {i}). The amber bar is the key chosen above.")
              .format(query=widgets.quoted(tokens[v.query]), i=v.query)):
        w.bars(s.scores, "q·k", _("score"), "qkv_scores")
    st.markdown(_("**Behind one score: q ⊙ k** (BertViz's neuron view) for key {key} (token {j}): the score is the sum "
                  "of {D} products, one per dimension.").format(key=widgets.quoted(tokens[v.key]), j=v.key, D=s.head_dim))
    products = s.products(v.key)
    row = st.container(horizontal=True, gap="medium")
    with row.container(width=FORMULA_WIDTH):
        st.latex(rf"\sum_m q_{{i,m}} k_{{j,m}} = {float(products.sum()):.4f}")
        st.metric(_("Score q·k"), f"{float(s.scores[v.key]):.4f}")
    neuron = fq.neuron_view(s.q[v.query].numpy(), s.k[v.key].numpy(), products.numpy(),
                            query_label=w.query_label, key_label=w.key_label)
    row.container(width="stretch").plotly_chart(neuron, key="qkv_neuron")


def scale_step(number: int, w: Walk) -> None:
    s = w.steps
    if abs(s.scale * s.head_dim**0.5 - 1) < 1e-6:
        relation = "=" if f"{s.scale:.4g}" == f"{s.scale:.12g}" else r"\approx"
        formulas = [rf"\tilde s_j = \frac{{s_j}}{{\sqrt{{d_k}}}} = \frac{{s_j}}{{\sqrt{{{s.head_dim}}}}}",
                    rf"{relation} s_j \times {s.scale:.4g}"]
    else:  # e.g. GPT-2 variants that also divide by the layer index
        formulas = [rf"\tilde s_j = s_j \times {s.scale:.6g}"]
    with step(number, _("Scale"), formulas,
              _("Keeps the scores' spread independent of the head size, so the softmax is not saturated.")):
        w.bars(s.scaled, _("scaled score"), _("scaled"), "qkv_scaled")


def mask_formulas(kind: str, window: int | None) -> list[str]:
    """M_ij for one layer's mask kind; a sliding window of W keys lets query i see keys i − W < j ≤ i."""
    if kind == "sliding" and window:
        return [r"M_{ij} = \begin{cases} 0 & i - W < j \le i \\ -\infty & \text{%s} \end{cases}" % _("otherwise"),
                rf"W = {window}"]
    return [{"causal": CAUSAL_MASK_LATEX,
             "bidirectional": r"M_{ij} = 0 \text{ %s } j" % _("for every")}.get(kind, r"M_{ij} \in \{0, -\infty\}")]


def mask_note(trace: Trace, layer: int, hidden: int) -> str:
    record = trace.layer(layer)
    n = trace.n_tokens
    if record.mask_kind == "sliding":
        kind = _("This layer uses a sliding window of {w} keys: each query sees itself and the "
                 "{before} keys before it, no further back.").format(w=record.window, before=record.window - 1)
    else:
        kind = _("This run used the {mask} mask.").format(mask=state.mask_name(trace.mask))
    seen = (_("{hidden} of {n} keys get −∞ for this query (shown as grey ×), so the softmax gives them exactly 0.")
            .format(hidden=hidden, n=n) if hidden else _("This query may attend to every key."))
    what_if = "" if trace.mask_is_model_default else " " + _("The model was trained with another mask: a what-if.")
    return f"{kind} {seen}{what_if}"


def mask_step(number: int, w: Walk) -> None:
    s, record = w.steps, w.trace.layer(w.view.layer)
    hidden = int((~s.allowed).sum())
    with step(number, _("Add the mask"), [r"\hat s_j = \tilde s_j + M_{ij}", *mask_formulas(record.mask_kind, record.window)],
              mask_note(w.trace, w.view.layer, hidden)):
        w.bars(s.masked, _("scaled score + mask"), _("masked score"), "qkv_masked", masked=True)


def softmax_step(number: int, w: Walk) -> None:
    s, v = w.steps, w.view
    note = _("The query's row of the attention map. p of the chosen key: {p}.").format(p=f"{float(s.probs[v.key]):.4f}")
    if v.stop - v.start < s.n_tokens:
        note += " " + _("The keys shown hold {share} of it.").format(share=f"{float(s.probs[v.start:v.stop].sum()):.1%}")
    with step(number, _("Softmax"), [r"p_{ij} = \frac{e^{\hat s_j}}{\sum_{j'} e^{\hat s_{j'}}}", r"\sum_j p_{ij} = 1"],
              note):
        w.bars(s.probs, _("attention p"), "p", "qkv_probs", masked=True)


def values_step(number: int, w: Walk) -> None:
    s = w.steps
    with step(number, _("Average the values"), [r"o_i = \sum_j p_{ij}\, v_j", rf"o_i \in \mathbb{{R}}^{{{s.head_dim}}}"],
              _("Each key's value vector, weighted by its attention; their sum is the head's output.")):
        tab_o, tab_pv = st.tabs([_("The head's output o"), _("Each key's share p·v")])
        tab_o.plotly_chart(fq.vector_bars(s.head_out.numpy(), title=_("o for {token}, head {head}").format(
            token=w.query_label, head=w.view.head), value_name="o"), key="qkv_head_out")
        with tab_pv:
            w.heatmap(s.weighted_values(), "p_j · v_j", "p·v", "qkv_pv")


def output_step(number: int, w: Walk) -> None:
    s, layer, head = w.steps, w.view.layer, w.view.head
    out_norm = float(s.layer_out.norm())
    share = float(s.head_contribution.norm()) / out_norm if out_norm else 0.0
    with step(number, _("Mix the heads (W_o)"),
              [r"\mathrm{attn}_i = [\,o_i^{(0)}; \dots; o_i^{(H-1)}\,]\, W_o", r"= \textstyle\sum_h o_i^{(h)} W_o^{(h)}",
               rf"W_o \in \mathbb{{R}}^{{{w.trace.n_heads * s.head_dim} \times {s.d_model}}}"],
              _("The layer's attention output for this token: every head's output concatenated and projected back to "
                "the model's width (plus a bias in BERT), then added to the residual stream.")):
        c1, c2, c3 = st.columns(3)
        c1.metric(_("‖head {head}'s part‖").format(head=head), f"{float(s.head_contribution.norm()):.3f}")
        c2.metric(_("‖attention output‖"), f"{out_norm:.3f}")
        c3.metric(_("Share of the norm"), f"{share:.2f}")
        st.plotly_chart(fq.vector_bars(s.layer_out.numpy(), title=_("Attention output of layer {layer} for {token}")
                                       .format(layer=layer, token=w.query_label), value_name=_("output"), height=220),
                        key="qkv_layer_out")


def steps_for(s: FormulaSteps) -> list[Callable[[int, Walk], None]]:
    """The steps this model's attention takes, in order: QK-norm and RoPE only where the model has them."""
    return [input_step, projection_step, *([qk_norm_step] if s.uses_qk_norm else []),
            *([rope_step] if s.uses_rope else []), score_step, scale_step, mask_step, softmax_step, values_step,
            output_step]


# ---- every number, and the check ------------------------------------------------------------------------------------
def numbers_table(steps: FormulaSteps, tokens: Sequence[str]) -> pd.DataFrame:
    """Every key's numbers for the chosen query: the table a reader can check the charts against."""
    return pd.DataFrame({
        _("key"): range(steps.n_tokens),
        _("token"): [display_label(t) for t in tokens],
        _("allowed"): steps.allowed.numpy(),
        "q·k": steps.scores.numpy(),
        _("× scale"): steps.scaled.numpy(),
        _("+ mask"): steps.masked.numpy(),
        _("p (softmax)"): steps.probs.numpy(),
        "‖p·v‖": steps.weighted_values().norm(dim=-1).numpy(),
    })


def numbers_and_check(w: Walk) -> None:
    """The table of every key, and the recomputed numbers checked against what the model computed."""
    s, v, trace = w.steps, w.view, w.trace
    with st.expander(_("Every key's numbers for query {query} ({n} rows)").format(query=v.query, n=trace.n_tokens)):
        st.dataframe(numbers_table(s, trace.tokens), hide_index=True, key="qkv_table")
    row = query_row(trace, v.layer, v.head, v.query)  # what the model computed, rebuilt from its q, k and lse
    dp = float((s.probs - row).abs().max())
    do = float((s.head_out - row @ trace.v(v.layer, v.head)).abs().max())
    st.caption(_("Check: recomputed from x and the weights, these agree with the model's own attention "
                 "(max |Δp| = {dp}, max |Δo| = {do}).").format(dp=f"{dp:.1e}", do=f"{do:.1e}"))
