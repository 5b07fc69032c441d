"""Explain → "Weight vs contribution": one head's attention weights beside its norm-based contributions
α_ij·||W_o^h v_j|| (explorer.capture.contributions), each key's value norm, and the sink's share over layers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ...analysis.downsample import BlockMeanSum, BlockMeans
from ...analysis.sink_share import sink_positions, sink_shares
from ...capture.trace import Trace
from ...figures.heatmap import MAX_CELLS
from ...i18n import _, join
from ..caching import cached
from ..maps import head_blocks
from ..resources import current_model, current_trace
from ..widgets import kv_sharing_note, layer_head_selectors, progress, quoted

FORMULA = r"o_i^h = W_o^h \sum_j \alpha_{ij} v_j = \sum_j \alpha_{ij} f_j, \qquad f_j = W_o^h v_j, \qquad " \
          r"\text{%s}_{ij} = \frac{\alpha_{ij} \lVert f_j \rVert}{\sum_{k} \alpha_{ik} \lVert f_k \rVert}"


@cached(max_entries=32)
def contribution_blocks(trace: Trace, layer: int, head: int) -> BlockMeans:
    """One head's contributions as token_heatmap draws them (exact up to MAX_CELLS tokens, else block means),
    streamed a block of queries at a time and cached per trace and head."""
    sums = BlockMeanSum((1,), trace.n_tokens, trace.n_tokens, MAX_CELLS)
    for queries, keys, block in trace.contribution_blocks(layer, heads=slice(head, head + 1)):
        sums.add(queries, keys, block)
    return sums.result()[0]


@cached(max_entries=32)
def cached_sink_shares(trace: Trace, sink: tuple[int, ...]) -> pd.DataFrame:
    with progress(_("Measuring the sink's share in every layer, by weight and by contribution…")) as update:
        return sink_shares(trace, sink, on_progress=update)


def sink_of(model, trace: Trace) -> tuple[int, ...]:
    """The first token (decoders), or [CLS] and [SEP] (an encoder's special tokens)."""
    special = None
    if trace.mask == "bidirectional":
        marks = set(model.token_ids("a", special=True)) - set(model.token_ids("a", special=False))
        special = [t in marks for t in trace.token_ids]
    return tuple(sink_positions(trace, special))


def tab() -> None:
    from ...figures.attribution import sink_share_lines, value_norm_bars
    from ...figures.heatmap import token_heatmap

    model = current_model()
    trace = current_trace()
    st.caption(_("A weight says how much a query looks at a key; what the key then moves into the head's output is "
                 "its weight times its value vector through the head's output projection. A key with a large "
                 "weight but a small value moves little (Kobayashi et al. 2020, \"Attention is Not Only a "
                 "Weight\")."))
    st.latex(FORMULA % _("contribution"))  # the word translated, the maths not
    layer, head = layer_head_selectors(trace, key="explain_weights")
    note = kv_sharing_note(trace, head)
    if note:
        st.caption(note)
    cols = st.columns(2)
    for col, blocks, title, value in (
            (cols[0], head_blocks(trace, layer, head), _("Weights α, layer {layer} · head {head}"), _("weight")),
            (cols[1], contribution_blocks(trace, layer, head), _("Contributions, layer {layer} · head {head}"),
             _("contribution"))):
        col.plotly_chart(token_heatmap(blocks, trace.tokens, trace.tokens, title=title.format(layer=layer, head=head),
                                       value_name=value), key=f"explain_weights_{value}")
    sink = sink_of(model, trace)
    norms = trace.value_norms(layer, head)
    st.plotly_chart(value_norm_bars(trace.tokens, norms.tolist(), title=_("Value norms ||f_j|| of each key"),
                                    value_name="||f||", sink=sink), key="explain_weights_norms")
    shares = cached_sink_shares(trace, sink)
    names = join(quoted(trace.tokens[p]) for p in sink)
    what = _("the first token") if sink == (0,) else _("the special tokens")
    st.plotly_chart(sink_share_lines(shares["layer"].tolist(), shares["weight"].tolist(),
                                     shares["contribution"].tolist(),
                                     title=_("Share of {what} over layers").format(what=what),
                                     weight_name=_("by weight"), contribution_name=_("by contribution"),
                                     y_name=_("share")), key="explain_weights_sink")
    row = shares.loc[shares["layer"] == layer].iloc[0]
    st.markdown(_("Layer {layer}: {names} take {weight} of the attention by weight and {contribution} by "
                  "contribution (mean over heads and the other queries); over all layers {mean_w} by weight, "
                  "{mean_c} by contribution.").format(
        layer=layer, names=names, weight=f"{row['weight']:.3f}", contribution=f"{row['contribution']:.3f}",
        mean_w=f"{shares['weight'].mean():.3f}", mean_c=f"{shares['contribution'].mean():.3f}"))
