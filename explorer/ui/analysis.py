"""The Head analysis page's sections (statistics, Q/K geometry, logit lens, rollout, export), one tab each
(:func:`tabs`). Widgets are read by ``*_ui`` functions that return small frozen dataclasses; figures come from
:mod:`explorer.figures.analysis`; what other pages share (cached maps and statistics, figures with downloads) is in
:mod:`explorer.ui.maps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from ..analysis import export
from . import state, widgets
from .caching import cached
from .maps import cached_head_stats, head_blocks, remember_view, show_figure, square_height, viewed_specs
from .tabs import Tab
from .widgets import progress
from ..analysis.geometry import qk_plane, score_vs_distance
from ..analysis.lens import logit_lens
from ..analysis.downsample import BlockMeans
from ..analysis.rollout import ASSUMPTIONS, RolloutBlocks, rollout_blocks
from ..analysis.stats import FORMULAS, LABELS, MEANINGS, STATISTICS
from ..capture.model import Model
from ..capture.tokens import display_label, unique_labels
from ..capture.trace import Trace
from ..escape import md_escape
from ..figures.analysis import layer_head_heatmap, lens_figure, qk_plane_figure
from ..figures.heatmap import MAX_CELLS, token_heatmap
from ..i18n import N_, _, join, number, percent


# ---- the rollout (cached per trace and last layer) -------------------------------------------------------------------
@cached(max_entries=16)
def cached_rollout(trace: Trace, last_layer: int) -> RolloutBlocks:
    """The rollout as the page shows it: exact up to MAX_CELLS tokens, else exact block means of R."""
    # The rows the figure draws, carried down through the layers: never an (n, n) product (8192³ at 8,192 tokens)
    with progress(_("Rolling attention out through layers 0–{last}, a block of queries at a time…").format(
            last=last_layer)) as update:
        return rollout_blocks(trace, MAX_CELLS, last_layer, on_progress=update)


def build_maps(trace: Trace, specs: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Rebuild the viewed maps from their recipes."""
    maps = {}
    for name, spec in specs.items():
        if spec[0] == "attention":
            maps[name] = trace.attention(spec[1], spec[2]).numpy()
        elif spec[0] == "rollout":
            blocks = cached_rollout(trace, spec[1]).blocks
            suffix = f"_block_means_{blocks.row_step}x{blocks.col_step}" if blocks.downsampled else ""
            maps[name + suffix] = blocks.values
    return maps


# ---- the Head analysis page's sections ------------------------------------------------------------------------------
PROJECTIONS = {"pca": N_("PCA (shared axes)"), "query": N_("Along this query")}
LENS_WINDOW = 24  # positions shown at once: a readable table
CSV_MAX_TOKENS = 2048  # a map's CSV: 2,048² cells ≈ 50 MB of text; beyond, the .npz holds it exactly
CSV_BYTES_PER_CELL = 12  # "%.9g" and a comma


def stat_label(name: str) -> str:
    return _(LABELS[name])


@dataclass(frozen=True)
class HeadChoice:
    layer: int
    head: int


@dataclass(frozen=True)
class GeometryParams:
    layer: int
    head: int
    query: int
    method: str  # "pca" | "query"


@dataclass(frozen=True)
class RolloutParams:
    last_layer: int
    scale: str  # "log" | "linear"


def statistics_sort_ui() -> str:
    return st.selectbox(_("Sort the table by"), STATISTICS, index=STATISTICS.index("induction"),
                        format_func=stat_label, key="analysis_sort")


def statistics(model: Model, trace: Trace) -> None:
    """The table and the layer × head maps of every statistic; clicking a head opens it on the heads page."""
    frame = cached_head_stats(model, trace)
    st.caption(_(
        "Entropy, previous token, first token and self are averaged over the {n} tokens of your text. Induction is "
        "measured on a probe: 50 random tokens (seeded, no special tokens) repeated twice. **Click a row or a cell to "
        "open that head on the Attention heads page.**").format(n=trace.n_tokens))
    sort_by = statistics_sort_ui()
    table = frame.sort_values(sort_by, ascending=sort_by == "entropy", kind="stable").reset_index(drop=True)
    max_entropy = float(np.log(max(2, trace.n_tokens)))
    config = {"layer": st.column_config.NumberColumn(_("layer"), width="small"),
              "head": st.column_config.NumberColumn(_("head"), width="small"),
              "entropy": st.column_config.ProgressColumn(_("entropy (nats)"), format="%.3f", min_value=0.0,
                                                         max_value=max_entropy)}
    config.update({name: st.column_config.ProgressColumn(stat_label(name), format="%.3f", min_value=0.0,
                                                         max_value=1.0)
                   for name in STATISTICS if name != "entropy"})
    picked = st.dataframe(table, hide_index=True, column_config=config, on_select="rerun",
                          selection_mode="single-row", key="analysis_stats_table", height=320)
    if picked.selection.rows:
        row = table.iloc[picked.selection.rows[0]]
        state.open_on_heads_page(int(row["layer"]), int(row["head"]))
    cols = st.columns([3, 2, 2, 1], vertical_alignment="bottom")
    choice = cols[0].selectbox(
        _("Or pick a head"), range(len(table)), key="analysis_open_choice",
        format_func=lambda i: _("layer {layer} · head {head} ({statistic} {value})").format(
            layer=table["layer"][i], head=table["head"][i], statistic=stat_label(sort_by).lower(),
            value=f"{table[sort_by][i]:.3f}"),
    )
    if cols[1].button(_("Open on the Attention heads page"), icon=":material/open_in_new:", key="analysis_open"):
        state.open_on_heads_page(int(table["layer"][choice]), int(table["head"][choice]))
    if cols[2].button(_("Intervene on this head"), icon=":material/science:", key="analysis_intervene"):
        state.open_intervene([(int(table["layer"][choice]), int(table["head"][choice]))])
    cols[3].download_button(_("Table (CSV)"), frame.to_csv(index=False, float_format="%.6g"),
                            file_name=export.file_name(model.name, "head-stats", ext="csv"), mime="text/csv",
                            icon=":material/download:", on_click="ignore", key="analysis_stats_csv")
    tabs = st.tabs([stat_label(name) for name in STATISTICS])
    for tab, name in zip(tabs, STATISTICS):
        with tab:
            statistic_map(model, trace, frame, name, max_entropy)


def statistic_map(model: Model, trace: Trace, frame: pd.DataFrame, name: str, max_entropy: float) -> None:
    """One statistic over layers × heads; a click opens that head on the heads page."""
    st.latex(FORMULAS[name])
    st.caption(_(MEANINGS[name]))
    values = frame[name].to_numpy().reshape(trace.n_layers, trace.n_heads)
    bounds = (0.0, max_entropy) if name == "entropy" else (0.0, 1.0)
    fig = layer_head_heatmap(values, _("{statistic} of every head").format(statistic=stat_label(name)),
                             stat_label(name), zmin=bounds[0], zmax=bounds[1])
    event = show_figure(fig, (model.name, name, "by-head"), key=f"analysis_map_{name}", on_select="rerun",
                        selection_mode="points")
    points = [p for p in event.selection.points if p.get("customdata") is not None] if event else []
    if points:
        layer, head = points[0]["customdata"][:2]
        state.open_on_heads_page(int(layer), int(head))


def geometry_ui(trace: Trace) -> GeometryParams:
    cols = st.columns([2, 2, 2])
    with cols[0], st.container(horizontal=True):
        layer, head = widgets.layer_head_selectors(trace, key="analysis_geo")
    labels = unique_labels(trace.tokens)
    query = cols[1].selectbox(_("Query token"), range(trace.n_tokens), index=trace.n_tokens - 1,
                              format_func=lambda i: labels[i], key="analysis_query")
    method = cols[2].radio(_("Projection"), list(PROJECTIONS), horizontal=True, key="analysis_projection",
                           format_func=lambda m: _(PROJECTIONS[m]))
    return GeometryParams(layer, head, query, method)


def geometry(model: Model, trace: Trace) -> None:
    """One head's queries and keys in a shared plane, and the highest-scoring vs the nearest key."""
    p = geometry_ui(trace)
    layer, head, query = p.layer, p.head, p.query
    q, k = trace.q(layer, head), trace.k(layer, head)
    allowed = trace.allowed_rows(layer, slice(query, query + 1))[0].numpy()
    result = score_vs_distance(q, k, query, trace.scale(layer), allowed)
    plane = qk_plane(q, k, p.method, query)
    fig = qk_plane_figure(plane, trace.tokens, query, allowed=allowed, scores=result.scores,
                          top_key=result.top_score_key, nearest_key=result.nearest_key,
                          title=_("Queries and keys of layer {layer}, head {head} (key head {kv})").format(
                              layer=layer, head=head, kv=trace.kv_head(head)))
    show_figure(fig, (model.name, f"L{layer}H{head}", "qk", p.method), key="analysis_qk")
    remember_view(trace, f"attention_L{layer}_H{head}", ("attention", layer, head))
    attention = trace.attention_window(layer, head, queries=slice(query, query + 1))[0].numpy()  # one row
    labels = unique_labels(trace.tokens)
    top, near = result.top_score_key, result.nearest_key
    detail = _("score {score}, attention {attention}, ‖k‖ = {norm}")
    c1, c2 = st.columns(2)
    for col, label, key in ((c1, _("Highest score"), top), (c2, _("Nearest key"), near)):
        col.metric(label, md_escape(labels[key]), help=detail.format(
            score=f"{result.scores[key]:.3f}", attention=f"{attention[key]:.3f}", norm=f"{result.key_norms[key]:.2f}"))
    agree = _("They are the same key here.") if result.agree else _("They differ here: the key norms are not equal.")
    st.caption(_("Highest-scoring key: {top} at position {top_pos} (score {top_score}, attention {top_attention}). "
                 "Nearest key: {near} at position {near_pos} (score {near_score}, attention {near_attention}). "
                 "{agree}").format(
        top=widgets.quoted(trace.tokens[top]), top_pos=top, top_score=f"{result.scores[top]:.3f}",
        top_attention=f"{attention[top]:.3f}", near=widgets.quoted(trace.tokens[near]), near_pos=near,
        near_score=f"{result.scores[near]:.3f}", near_attention=f"{attention[near]:.3f}", agree=agree))
    st.info(_(
        "**What 'closest' means.** A head scores a key by the dot product $q\\cdot k$ (times $1/\\sqrt{{d}}$ = "
        "{scale}), not by distance. Because $\\lVert q-k\\rVert^2 = \\lVert q\\rVert^2 + \\lVert k\\rVert^2 - "
        "2\\,q\\cdot k$, the nearest key maximises $q\\cdot k - \\lVert k\\rVert^2/2$: it is the highest-scoring key "
        "only when all keys have the same norm. The key with the largest score is the one furthest along the query's "
        "direction; with the *Along this query* projection that is exactly the rightmost key. In the PCA view the "
        "axes are shared by queries and keys, but centring and the dropped dimensions mean distances and dot "
        "products in the picture are approximations.").format(scale=f"{trace.scale(layer):.3f}"),
        icon=":material/info:")


def lens_ui(n: int) -> tuple[int, int]:
    """The first and last position shown: all of a short text, a window of LENS_WINDOW on a long one."""
    if n <= LENS_WINDOW:
        return 0, n - 1
    start = st.slider(_("First position shown"), 0, n - LENS_WINDOW, n - LENS_WINDOW, key="analysis_lens_start",
                      help=_("{n} positions at a time keep the table readable.").format(n=LENS_WINDOW))
    return start, start + LENS_WINDOW - 1


def lens(model: Model, trace: Trace) -> None:
    """The logit lens: the top next-token guess read from every layer's residual stream."""
    if not model.is_causal_lm:
        st.info(_("The logit lens reads next-token predictions; **{model}** is an encoder with no language-model "
                  "head. Choose smollm2 in the sidebar.").format(model=md_escape(model.name)), icon=":material/info:")
        return
    start, end = lens_ui(trace.n_tokens)
    positions = list(range(start, end + 1))
    result = logit_lens(model, trace, positions, top_k=3)
    st.latex(r"\text{%s}_\ell(i) = \mathrm{softmax}\big(W_U\,\mathrm{norm}_{\text{%s}}(h_\ell(i))\big)"
             % (_("lens"), _("final")))
    st.caption(_("Each row reads one layer's residual stream as if it were the last: the model's final norm, then "
                 "its unembedding. The top row is the model's own output. Hover a cell for the top 3."))
    fig = lens_figure(result, trace.tokens,
                      title=_("Logit lens: top next-token guess per layer ({model})").format(model=model.name))
    show_figure(fig, (model.name, "logit-lens", f"pos{start}-{end}"), key="analysis_lens")
    own = trace.logits_at(positions).argmax(-1).numpy()  # only the shown rows: n × vocab can be GiBs
    same = bool((own == result.token_ids[-1, :, 0]).all())
    st.caption(_("✓ The top row equals the model's own prediction at every position shown.") if same
               else _("✗ The top row differs from the model's own prediction: please report this."))
    with st.expander(_("As a table")):
        labels = unique_labels(trace.tokens)
        table = pd.DataFrame(
            [[f"{display_label(result.top_tokens[l][c])}  ({result.probs[l, c, 0]:.2f})" for c in range(len(positions))]
             for l in range(len(result.layer_labels))][::-1],
            index=result.layer_labels[::-1], columns=[labels[p] for p in positions])
        st.dataframe(table)


def rollout_ui(trace: Trace) -> RolloutParams:
    cols = st.columns([2, 1])
    last = cols[0].slider(_("Roll out through layer"), 0, trace.n_layers - 1, trace.n_layers - 1,
                          key="analysis_rollout_layer")
    scale = cols[1].radio(_("Colour"), ["log", "linear"], horizontal=True, key="analysis_rollout_scale",
                          format_func=lambda s: _("log") if s == "log" else _("linear"),
                          help=_("Deep models pour most attention into the first token; a log scale shows the rest."))
    return RolloutParams(last, scale)


def rollout(model: Model, trace: Trace) -> None:
    """Attention rollout through the layers, with its formula and assumptions."""
    p = rollout_ui(trace)
    last, log = p.last_layer, p.scale == "log"
    result = cached_rollout(trace, last)
    blocks = result.blocks
    remember_view(trace, f"rollout_to_L{last}", ("rollout", last))
    st.latex(r"\hat A_\ell = \mathrm{rownorm}\big(\tfrac12\,\overline{A}_\ell + \tfrac12 I\big),\quad "
             r"R = \hat A_{%d}\cdots\hat A_0" % last)
    shown = BlockMeans(np.log10(np.maximum(blocks.values, 1e-12)) if log else blocks.values, blocks.row_step,
                       blocks.col_step)
    if blocks.downsampled:  # the log of each block's mean, not the mean of the logs: say which
        value_name = _("log10 of the block's mean rollout") if log else _("block mean of the rollout")
    else:
        value_name = _("log10 rollout") if log else _("rollout")
    fig = token_heatmap(shown, trace.tokens, trace.tokens, zmin=-6.0 if log else 0.0, zmax=0.0 if log else None,
                        value_name=value_name,
                        row_title=_("position (at the top)"), col_title=_("input token"),
                        title=_("Attention rollout, layers 0–{last} (heads averaged)").format(last=last),
                        height=square_height(trace.n_tokens))
    show_figure(fig, (model.name, "rollout", f"L0-{last}", p.scale), key="analysis_rollout")
    st.caption(_("Rows sum to 1 (largest deviation {deviation}). On average {share} of each later position's rollout "
                 "comes from the first token: layers that park attention on an 'attention sink' compound through the "
                 "product, so deep rollouts collapse onto it. The log colour scale and earlier layers show the rest "
                 "of the flow.").format(deviation=f"{result.row_sum_error:.1e}", share=percent(result.first_share, 1)))
    if blocks.downsampled:
        st.caption(_("Long text ({n} tokens): each cell is the exact mean of a block of {rows} × {cols} entries of R. "
                     "Only those block rows are carried through the layers, a block of queries at a time, so R itself "
                     "(n × n, a product of n × n matrices) is never formed.").format(
            n=number(trace.n_tokens), rows=blocks.row_step, cols=blocks.col_step))
    st.info(_("**Assumptions.** {assumptions}").format(assumptions=_(ASSUMPTIONS)), icon=":material/info:")


def export_ui(trace: Trace) -> HeadChoice:
    with st.columns([1, 2])[0], st.container(horizontal=True):
        return HeadChoice(*widgets.layer_head_selectors(trace, key="analysis_export"))


def export_section(model: Model, trace: Trace) -> None:
    """The current head's map, and downloads: its CSV and the whole trace as .npz."""
    p = export_ui(trace)
    layer, head = p.layer, p.head
    remember_view(trace, f"attention_L{layer}_H{head}", ("attention", layer, head))
    fig = token_heatmap(head_blocks(trace, layer, head), trace.tokens, trace.tokens,
                        title=_("Layer {layer}, head {head}").format(layer=layer, head=head),
                        height=square_height(trace.n_tokens))
    show_figure(fig, (model.name, f"L{layer}H{head}", "attention"), key="analysis_export_map")
    st.subheader(_("Downloads"))
    n = trace.n_tokens
    if n <= CSV_MAX_TOKENS:  # the text is made only when clicked
        st.download_button(
            _("This head's map as CSV (layer {layer}, head {head})").format(layer=layer, head=head),
            data=lambda: export.head_map_csv(trace.attention(layer, head).numpy(), trace.tokens),
            file_name=export.file_name(model.name, f"L{layer}H{head}", "attention", ext="csv"), mime="text/csv",
            icon=":material/download:", on_click="ignore", key="analysis_csv",
        )
    else:
        st.caption(_("No CSV of this map: {n} × {n} cells would make a text file of about {size} MB, too large for a "
                     "spreadsheet. The .npz below holds it exactly (float32) as `map__attention_L{layer}_H{head}`; a "
                     "CSV is offered up to {most} tokens.").format(
            n=number(n), size=number(n * n * CSV_BYTES_PER_CELL / 1e6), layer=layer, head=head,
            most=number(CSV_MAX_TOKENS)))
    specs = viewed_specs(trace)
    maps = sum(n * n for spec in specs.values() if spec[0] == "attention")  # rollouts are at most MAX_CELLS²
    qkv = sum((v.n_heads * v.n_queries + 2 * v.n_kv_heads * v.n_keys) * v.head_dim for v in trace.layers)
    size_mb = (qkv + maps) * 4 / 2**20
    st.download_button(
        _("The whole trace as .npz"), data=lambda: export.trace_npz(trace, build_maps(trace, specs)),
        file_name=export.file_name(model.name, f"{trace.n_tokens}tok", "trace", ext="npz"),
        mime="application/octet-stream", icon=":material/download:", on_click="ignore", key="analysis_npz",
        help=_("About {size} MB: tokens, ids, q/k/v/lse of every layer, and the maps listed below.").format(
            size=number(size_mb, 1)),
    )
    st.caption(_("The .npz holds `tokens`, `token_ids`, `text`, `model`, `mask`, `scale` (per layer), `q` (layers × "
                 "heads × tokens × head_dim, after RoPE), `k`, `v`, `lse`, and one `map__<name>` per map you viewed "
                 "here: {maps}. Read it with `numpy.load(path)`.").format(
        maps=join(f"`{name}`" for name in specs)))
    png_ok, why = export.png_export_status()
    if not png_ok:
        st.warning(_("Figures download as HTML only on this server. {why}").format(why=why))


SECTIONS = [(N_("Statistics"), statistics), (N_("Q/K geometry"), geometry), (N_("Logit lens"), lens),
            (N_("Rollout"), rollout), (N_("Export"), export_section)]


def tabs(model: Model, trace: Trace) -> list[Tab]:
    """The page's tabs, each drawing its section of ``trace``."""
    return [(label, lambda draw=draw: draw(model, trace)) for label, draw in SECTIONS]
