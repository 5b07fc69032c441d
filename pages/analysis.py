"""Head analysis: per-head statistics, Q/K geometry, the logit lens, attention rollout, and export."""

import numpy as np
import pandas as pd
import streamlit as st

from explorer.analysis import export
from explorer.ui import common as ui
from explorer.escape import md_escape
from explorer.ui import analysis as ua
from explorer.figures.analysis import layer_head_heatmap, lens_figure, qk_plane_figure
from explorer.figures.heatmap import token_heatmap
from explorer.analysis.geometry import qk_plane, score_vs_distance
from explorer.analysis.lens import logit_lens
from explorer.analysis.rollout import ASSUMPTIONS
from explorer.analysis.stats import FORMULAS, MEANINGS, STATISTICS
from explorer.capture.tokens import display_label, unique_labels

ui.require_entrypoint()

SECTIONS = ["Statistics", "Q/K geometry", "Logit lens", "Rollout", "Export"]
STAT_LABELS = {"entropy": "Entropy", "previous_token": "Previous token", "first_token": "First token",
               "self": "Self", "induction": "Induction"}
LENS_WINDOW = 24  # positions shown at once: a readable table


def statistics(model, trace) -> None:
    """The table and the layer × head maps of every statistic; clicking a head opens it on the heads page."""
    frame = ua.cached_head_stats(model, trace)
    st.caption(
        f"Entropy, previous token, first token and self are averaged over the {trace.n_tokens} tokens of your text. "
        "Induction is measured on a probe: 50 random tokens (seeded, no special tokens) repeated twice. "
        "**Click a row or a cell to open that head on the Attention heads page.**"
    )
    sort_by = st.selectbox("Sort the table by", STATISTICS, index=STATISTICS.index("induction"),
                           format_func=STAT_LABELS.get, key="analysis_sort")
    table = frame.sort_values(sort_by, ascending=sort_by == "entropy", kind="stable").reset_index(drop=True)
    max_entropy = float(np.log(max(2, trace.n_tokens)))
    config = {"layer": st.column_config.NumberColumn("layer", width="small"),
              "head": st.column_config.NumberColumn("head", width="small"),
              "entropy": st.column_config.ProgressColumn("entropy (nats)", format="%.3f", min_value=0.0,
                                                         max_value=max_entropy)}
    config.update({name: st.column_config.ProgressColumn(STAT_LABELS[name], format="%.3f", min_value=0.0, max_value=1.0)
                   for name in STATISTICS if name != "entropy"})
    picked = st.dataframe(table, hide_index=True, column_config=config, on_select="rerun",
                          selection_mode="single-row", key="analysis_stats_table", height=320)
    if picked.selection.rows:
        row = table.iloc[picked.selection.rows[0]]
        ua.open_on_heads_page(int(row["layer"]), int(row["head"]))
    cols = st.columns([3, 2, 1], vertical_alignment="bottom")
    choice = cols[0].selectbox(
        "Or pick a head", range(len(table)), key="analysis_open_choice",
        format_func=lambda i: f"layer {table['layer'][i]} · head {table['head'][i]} ({STAT_LABELS[sort_by].lower()} "
        f"{table[sort_by][i]:.3f})",
    )
    if cols[1].button("Open on the Attention heads page", icon=":material/open_in_new:", key="analysis_open"):
        ua.open_on_heads_page(int(table["layer"][choice]), int(table["head"][choice]))
    cols[2].download_button("Table (CSV)", frame.to_csv(index=False, float_format="%.6g"),
                            file_name=export.file_name(model.name, "head-stats", ext="csv"), mime="text/csv",
                            icon=":material/download:", on_click="ignore", key="analysis_stats_csv")

    tabs = st.tabs([STAT_LABELS[name] for name in STATISTICS])
    for tab, name in zip(tabs, STATISTICS):
        with tab:
            st.latex(FORMULAS[name])
            st.caption(MEANINGS[name])
            values = frame[name].to_numpy().reshape(trace.n_layers, trace.n_heads)
            bounds = (0.0, max_entropy) if name == "entropy" else (0.0, 1.0)
            fig = layer_head_heatmap(values, f"{STAT_LABELS[name]} of every head", STAT_LABELS[name],
                                     zmin=bounds[0], zmax=bounds[1])
            event = ua.show_figure(fig, (model.name, name, "by-head"), key=f"analysis_map_{name}",
                                   on_select="rerun", selection_mode="points")
            points = [p for p in event.selection.points if p.get("customdata") is not None] if event else []
            if points:
                layer, head = points[0]["customdata"][:2]
                ua.open_on_heads_page(int(layer), int(head))


def geometry(model, trace) -> None:
    """One head's queries and keys in a shared plane, and the highest-scoring vs the nearest key."""
    cols = st.columns([2, 2, 2])
    with cols[0], st.container(horizontal=True):
        layer, head = ui.layer_head_selectors(trace, key="analysis_geo")
    labels = unique_labels(trace.tokens)
    query = cols[1].selectbox("Query token", range(trace.n_tokens), index=trace.n_tokens - 1,
                              format_func=lambda i: labels[i], key="analysis_query")
    method = cols[2].radio("Projection", ["pca", "query"], horizontal=True, key="analysis_projection",
                           format_func={"pca": "PCA (shared axes)", "query": "Along this query"}.get)
    q, k = trace.q(layer, head), trace.k(layer, head)
    allowed = trace.allowed(layer)[query].numpy()
    result = score_vs_distance(q, k, query, trace.scale(layer), allowed)
    plane = qk_plane(q, k, method, query)
    fig = qk_plane_figure(plane, trace.tokens, query, allowed=allowed, scores=result.scores,
                          top_key=result.top_score_key, nearest_key=result.nearest_key,
                          title=f"Queries and keys of layer {layer}, head {head} (key head {trace.kv_head(head)})")
    ua.show_figure(fig, (model.name, f"L{layer}H{head}", "qk", method), key="analysis_qk")
    ua.remember_view(trace, f"attention_L{layer}_H{head}", ("attention", layer, head))
    attention = trace.attention(layer, head)[query].numpy()
    top, near = result.top_score_key, result.nearest_key
    c1, c2 = st.columns(2)
    c1.metric("Highest score", md_escape(labels[top]),
              help=f"score {result.scores[top]:.3f}, attention {attention[top]:.3f}, ‖k‖ = {result.key_norms[top]:.2f}")
    c2.metric("Nearest key", md_escape(labels[near]),
              help=f"score {result.scores[near]:.3f}, attention {attention[near]:.3f}, ‖k‖ = {result.key_norms[near]:.2f}")
    st.caption(
        f"Highest-scoring key: {ui.quoted(trace.tokens[top])} at position {top} (score {result.scores[top]:.3f}, "
        f"attention {attention[top]:.3f}). Nearest key: {ui.quoted(trace.tokens[near])} at position {near} "
        f"(score {result.scores[near]:.3f}, attention {attention[near]:.3f}). "
        + ("They are the same key here." if result.agree else "They differ here: the key norms are not equal.")
    )
    st.info(
        "**What 'closest' means.** A head scores a key by the dot product $q\\cdot k$ (times "
        f"$1/\\sqrt{{d}}$ = {trace.scale(layer):.3f}), not by distance. Because "
        "$\\lVert q-k\\rVert^2 = \\lVert q\\rVert^2 + \\lVert k\\rVert^2 - 2\\,q\\cdot k$, the nearest key maximises "
        "$q\\cdot k - \\lVert k\\rVert^2/2$: it is the highest-scoring key only when all keys have the same norm. "
        "The key with the largest score is the one furthest along the query's direction; with the *Along this query* "
        "projection that is exactly the rightmost key. In the PCA view the axes are shared by queries and keys, but "
        "centring and the dropped dimensions mean distances and dot products in the picture are approximations.",
        icon=":material/info:",
    )


def lens(model, trace) -> None:
    """The logit lens: the top next-token guess read from every layer's residual stream."""
    if not model.is_causal_lm:
        st.info(f"The logit lens reads next-token predictions; **{md_escape(model.name)}** is an encoder with no "
                "language-model head. Choose smollm2 in the sidebar.", icon=":material/info:")
        return
    n = trace.n_tokens
    start, end = 0, n - 1
    if n > LENS_WINDOW:
        start = st.slider("First position shown", 0, n - LENS_WINDOW, n - LENS_WINDOW, key="analysis_lens_start",
                          help=f"{LENS_WINDOW} positions at a time keep the table readable.")
        end = start + LENS_WINDOW - 1
    positions = list(range(start, end + 1))
    result = logit_lens(model, trace, positions, top_k=3)
    st.latex(r"\text{lens}_\ell(i) = \mathrm{softmax}\big(W_U\,\mathrm{norm}_{\text{final}}(h_\ell(i))\big)")
    st.caption("Each row reads one layer's residual stream as if it were the last: the model's final norm, then its "
               "unembedding. The top row is the model's own output. Hover a cell for the top 3.")
    fig = lens_figure(result, trace.tokens, title=f"Logit lens: top next-token guess per layer ({model.name})")
    ua.show_figure(fig, (model.name, "logit-lens", f"pos{start}-{end}"), key="analysis_lens")
    own = trace.logits[positions].argmax(-1).numpy()
    same = bool((own == result.token_ids[-1, :, 0]).all())
    st.caption("✓ The top row equals the model's own prediction at every position shown." if same
               else "✗ The top row differs from the model's own prediction: please report this.")
    with st.expander("As a table"):
        labels = unique_labels(trace.tokens)
        table = pd.DataFrame(
            [[f"{display_label(result.top_tokens[l][c])}  ({result.probs[l, c, 0]:.2f})" for c in range(len(positions))]
             for l in range(len(result.layer_labels))][::-1],
            index=result.layer_labels[::-1], columns=[labels[p] for p in positions])
        st.dataframe(table)


def rollout(model, trace) -> None:
    """Attention rollout through the layers, with its formula and assumptions."""
    cols = st.columns([2, 1])
    last = cols[0].slider("Roll out through layer", 0, trace.n_layers - 1, trace.n_layers - 1, key="analysis_rollout_layer")
    scale = cols[1].radio("Colour", ["log", "linear"], horizontal=True, key="analysis_rollout_scale",
                          help="Deep models pour most attention into the first token; a log scale shows the rest.")
    matrix = ua.cached_rollout(trace, last)
    ua.remember_view(trace, f"rollout_to_L{last}", ("rollout", last))
    st.latex(r"\hat A_\ell = \mathrm{rownorm}\big(\tfrac12\,\overline{A}_\ell + \tfrac12 I\big),\quad "
             r"R = \hat A_{%d}\cdots\hat A_0" % last)
    shown = np.log10(np.maximum(matrix, 1e-12)) if scale == "log" else matrix
    fig = token_heatmap(shown, trace.tokens, trace.tokens, zmin=-6.0 if scale == "log" else 0.0,
                        zmax=0.0 if scale == "log" else None,
                        value_name="log10 rollout" if scale == "log" else "rollout", row_title="position (at the top)",
                        col_title="input token", title=f"Attention rollout, layers 0–{last} (heads averaged)",
                        height=ua.square_height(trace.n_tokens))
    ua.show_figure(fig, (model.name, "rollout", f"L0-{last}", scale), key="analysis_rollout")
    first = float(matrix[1:, 0].mean()) if trace.n_tokens > 1 else 1.0
    st.caption(f"Rows sum to 1 (largest deviation {np.abs(matrix.sum(-1) - 1).max():.1e}). "
               f"On average {first:.1%} of each later position's rollout comes from the first token: layers that "
               "park attention on an 'attention sink' compound through the product, so deep rollouts collapse onto "
               "it. The log colour scale and earlier layers show the rest of the flow.")
    st.info("**Assumptions.** " + ASSUMPTIONS, icon=":material/info:")


def export_section(model, trace) -> None:
    """The current head's map, and downloads: its CSV and the whole trace as .npz."""
    with st.columns([1, 2])[0], st.container(horizontal=True):
        layer, head = ui.layer_head_selectors(trace, key="analysis_export")
    matrix = trace.attention(layer, head).numpy()
    ua.remember_view(trace, f"attention_L{layer}_H{head}", ("attention", layer, head))
    fig = token_heatmap(matrix, trace.tokens, trace.tokens, title=f"Layer {layer}, head {head}",
                        height=ua.square_height(trace.n_tokens))
    ua.show_figure(fig, (model.name, f"L{layer}H{head}", "attention"), key="analysis_export_map")
    st.subheader("Downloads")
    st.download_button(
        f"This head's map as CSV (layer {layer}, head {head})", export.head_map_csv(matrix, trace.tokens),
        file_name=export.file_name(model.name, f"L{layer}H{head}", "attention", ext="csv"), mime="text/csv",
        icon=":material/download:", on_click="ignore", key="analysis_csv",
    )
    specs = ua.viewed_specs(trace)
    size_mb = sum(r.q.numel() + r.k.numel() + r.v.numel() for r in trace.records) * 4 / 2**20
    st.download_button(
        "The whole trace as .npz", data=lambda: export.trace_npz(trace, ua.build_maps(trace, specs)),
        file_name=export.file_name(model.name, f"{trace.n_tokens}tok", "trace", ext="npz"),
        mime="application/octet-stream", icon=":material/download:", on_click="ignore", key="analysis_npz",
        help=f"About {size_mb:.1f} MB: tokens, ids, q/k/v/lse of every layer, and the maps listed below.",
    )
    st.caption("The .npz holds `tokens`, `token_ids`, `text`, `model`, `mask`, `scale` (per layer), `q` (layers × heads "
               "× tokens × head_dim, after RoPE), `k`, `v`, `lse`, and one `map__<name>` per map you viewed here: "
               + ", ".join(f"`{name}`" for name in specs) + ". Read it with `numpy.load(path)`.")
    png_ok, why = export.png_export_status()
    if not png_ok:
        st.warning(f"Figures download as HTML only on this server. {why}")


with ui.guard():
    st.title("Head analysis")
    model = ui.current_model()
    trace = ui.current_trace()
    tabs = st.tabs(SECTIONS, key="analysis_section", on_change="rerun")
    for tab, draw in zip(tabs, (statistics, geometry, lens, rollout, export_section)):
        if tab.open:
            with tab, ui.guard():
                draw(model, trace)
