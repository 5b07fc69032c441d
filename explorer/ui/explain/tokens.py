"""Explain → "Which tokens drove it": token attributions of a next-token prediction by five methods
(explorer.analysis.attribution), their deletion curves and AOPC (explorer.analysis.deletion), and the worked
indirect-object example. Results are cached on small keys: the model, device, token ids, answer, wrong, method."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from ...analysis.attribution import BASELINES, METHODS, Attribution, attribute
from ...analysis.deletion import DEFAULT_STEPS, DeletionCurve, deletable, deletion_curve
from ...capture.model import Model
from ...escape import md_escape
from ...i18n import N_, _
from ..caching import cached
from ..resources import current_model
from ..state import settings

IOI = dict(text="When Mary and John went to the store, John gave a drink to", answer=" Mary", wrong=" John")
BASELINE_NAMES = {"pad": N_("pad token at every position"), "zero": N_("zero embeddings")}
MAX_GAP = 0.05  # IG's completeness gap above which the page says why
IG_FORMULA = r"\text{IG}_i = (x_i - b_i) \cdot \int_0^1 \frac{\partial F(b + t(x - b))}{\partial x_i}\,dt, \qquad " \
             r"\sum_i \text{IG}_i = F(x) - F(b)"
ZERO_GAP = N_(
    "The completeness gap is {pct} of F(x) − F(b): the scores do not add up to the change they explain. From zero "
    "embeddings the path starts where every RMSNorm's input is below its eps: there each norm multiplies by "
    "1/√eps instead of normalising, so the residual stream grows by orders of magnitude per layer and F swings "
    "back and forth over dozens of decades of the path's first thousandth. No affordable number of steps resolves "
    "that; choose the pad-token baseline, whose path stays at the scale of real embeddings.")
PAD_GAP = N_(
    "The completeness gap is {pct} of F(x) − F(b): F changes too abruptly somewhere along this path for the "
    "steps taken (a head switching the key it attends to). Read the scores with care.")
AOPC_FORMULA = r"\text{AOPC} = \frac{1}{K} \sum_{k=1}^{K} \big(F(x) - F(x \setminus \text{top}_k)\big)"


@dataclass(frozen=True)
class TokensRequest:
    text: str
    answer: str
    wrong: str
    methods: tuple[str, ...]
    steps: int
    baseline: str


def use_ioi_example() -> None:
    """Fill the tab's inputs with the indirect-object prompt (the worked example button's callback)."""
    for name, value in IOI.items():
        st.session_state[f"explain_tokens_{name}"] = value


def tokens_ui() -> TokensRequest:
    # A callback, run before the script: it fills the inputs before they are drawn, on the same run.
    st.button(_("Worked example: who gets the drink?"), icon=":material/play_arrow:", key="explain_tokens_ioi",
              on_click=use_ioi_example)
    text = st.text_area(_("Prompt (the model predicts the token after it)"), key="explain_tokens_text", height=80)
    cols = st.columns([2, 2, 1])
    answer = cols[0].text_input(_("Answer token"), key="explain_tokens_answer")
    wrong = cols[1].text_input(_("Wrong token (optional: then the target is the logit difference)"),
                               key="explain_tokens_wrong")
    steps = cols[2].number_input(_("Tokens to delete"), 1, 10, DEFAULT_STEPS, key="explain_tokens_steps")
    cols = st.columns([3, 1])
    methods = cols[0].multiselect(_("Methods"), list(METHODS), default=list(METHODS), key="explain_tokens_methods",
                                  format_func=lambda m: _(METHODS[m]))
    baseline = cols[1].radio(_("Baseline"), list(BASELINES), key="explain_tokens_baseline",
                             format_func=lambda b: _(BASELINE_NAMES[b]))
    return TokensRequest(text, answer, wrong, tuple(methods), int(steps), baseline)


@cached(max_entries=64)
def _attribution(model: Model, ids: tuple[int, ...], answer: str, wrong: str, method: str,
                 baseline: str) -> Attribution:
    return attribute(model, list(ids), answer, wrong or None, method=method, baseline=baseline)


@cached(max_entries=64)
def _deletion(model: Model, ids: tuple[int, ...], _attr: Attribution, answer: str, wrong: str, method: str,
              baseline: str, steps: int) -> DeletionCurve:
    # _attr is not hashed: (ids, answer, wrong, method, baseline) are what it was computed from
    return deletion_curve(model, list(ids), _attr, answer, wrong or None, steps=steps)


def tab() -> None:
    from ...figures.attribution import deletion_curves, token_scores

    model = current_model()
    request = tokens_ui()
    if not (request.text.strip() and request.answer):
        st.info(_("Type a prompt and the answer token (or use the worked example)."))
        return
    if not request.methods:
        st.info(_("Choose at least one method."))
        return
    ids = tuple(model.encode(request.text, max_tokens=settings().max_tokens).token_ids)
    results: dict[str, Attribution] = {}

    def baseline_of(method: str) -> str:  # only integrated gradients has a baseline; the others' key stays fixed
        return request.baseline if method == "integrated_gradients" else "pad"

    for method in request.methods:
        with st.spinner(_("Attributing with {method}…").format(method=_(METHODS[method]))):
            results[method] = _attribution(model, ids, request.answer, request.wrong, method, baseline_of(method))
    first = next(iter(results.values()))
    target_name = _("logit difference") if request.wrong else _("logit of the answer")
    cols = st.columns(3)
    cols[0].metric(_("Target F at the input ({name})").format(name=target_name), f"{first.target:.3f}")
    ig = results.get("integrated_gradients")
    if ig is not None:
        cols[1].metric(_("F at the baseline"), f"{ig.baseline_target:.3f}")
        cols[2].metric(_("Completeness gap"), f"{ig.gap:+.3f}", help=_("Σ scores − (F(x) − F(b))"))
        st.latex(IG_FORMULA)
        st.caption(_("Integrated gradients: {passes} forward+backward passes; the gap is {pct} of F(x) − F(b).")
                   .format(passes=ig.passes, pct=f"{100 * ig.relative_gap:.1f}%"))
        if ig.relative_gap > MAX_GAP:
            st.warning((ZERO_GAP if request.baseline == "zero" else PAD_GAP).format(
                pct=f"{100 * ig.relative_gap:.1f}%"))
    labels = {m: _(METHODS[m]) for m in results}
    st.plotly_chart(token_scores(list(first.tokens), {labels[m]: a.scores for m, a in results.items()},
                                 title=_("Each token's score, by method"), value_name=_("score")),
                    key="explain_tokens_scores")
    curves = {}
    for method, attr in results.items():
        with st.spinner(_("Deleting the top tokens of {method}…").format(method=labels[method])):
            curves[method] = _deletion(model, ids, attr, request.answer, request.wrong, method, baseline_of(method),
                                       request.steps)
    random = next(iter(curves.values())).random_targets
    st.plotly_chart(deletion_curves({labels[m]: c.targets for m, c in curves.items()}, random,
                                    title=_("Target after deleting each method's top-k tokens"),
                                    random_name=_("random order"), x_name=_("tokens deleted (k)"),
                                    y_name=target_name), key="explain_tokens_deletion")
    st.latex(AOPC_FORMULA)
    table = aopc_table(curves, first, labels)
    st.dataframe(table, hide_index=True, key="explain_tokens_aopc")
    st.markdown(verdict(curves, labels))
    st.caption(_("The last token (it makes the prediction) and special tokens in front are never deleted; {n} of "
                 "the {total} tokens could be.").format(n=len(deletable(model, ids)), total=len(ids)))


def aopc_table(curves: dict[str, DeletionCurve], first: Attribution, labels: dict[str, str]) -> pd.DataFrame:
    rows = []
    for method, curve in curves.items():
        rows.append({_("method"): labels[method], "AOPC": round(curve.aopc, 4),
                     _("random AOPC"): round(curve.random_aopc, 4),
                     _("deleted, in order"): " ".join("“" + first.tokens[p] + "”" for p in curve.order)})
    return pd.DataFrame(rows).sort_values("AOPC", ascending=False, kind="stable")


def verdict(curves: dict[str, DeletionCurve], labels: dict[str, str]) -> str:
    """In words, from the numbers: which method's deletions moved the target most, and which did no better than
    random."""
    best = max(curves, key=lambda m: curves[m].aopc)
    random = curves[best].random_aopc
    text = _("Most faithful here: {method} (AOPC {aopc}, against {random} for random deletions).").format(
        method=md_escape(labels[best]), aopc=f"{curves[best].aopc:.3f}", random=f"{random:.3f}")
    worse = [labels[m] for m, c in curves.items() if c.aopc <= random]
    if worse:
        text += " " + _("No better than random: {methods}.").format(methods=", ".join(md_escape(w) for w in worse))
    return text
