"""What several pages read of one trace, cached, and how they show a figure: a layer's maps and one head's map as
drawn (exact up to MAX_CELLS tokens, else block means), every head's thumbnail and text statistics, the head
statistics table, the maps a user viewed (for the export), and a figure with its download buttons. A trace is
shown by token or by word as the sidebar says (:func:`shown`); every cached map here takes either.

Home, Attention heads, Head analysis, Compare and Intervene share these; no page module imports another's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ..analysis import export
from ..analysis.downsample import BlockMeans
from ..analysis.overview import LayerOverview, layer_overview, model_overview
from ..analysis.stats import TEXT_STATISTICS, induction_probe, induction_scores, stats_frame
from ..capture.model import Model
from ..capture.trace import Trace
from ..capture.word_trace import WordTrace, by_unit
from ..figures import heads as fh
from ..figures.heatmap import MAX_CELLS
from ..i18n import _
from .caching import cached
from .resources import rerun_mask
from .state import current_selection
from .widgets import progress

_VIEWED = "_ae_viewed_maps"


def shown(trace: Trace) -> Trace | WordTrace:
    """``trace`` in the sidebar's unit: itself for tokens, its :class:`WordTrace` (maps by word) for words."""
    return by_unit(trace, current_selection().unit)


# ---- maps as drawn ---------------------------------------------------------------------------------------------
# The engine reads each layer a block of queries at a time: a long text's layer is never held whole (2.4 GiB for
# SmolLM2 at 8,192 tokens), and one pass serves every figure and statistic.
@cached(max_entries=16)
def layer_maps(trace: Trace, layer: int, hide_sink: bool) -> LayerOverview:
    """One layer's maps as the heads page shows them (token 0 hidden and rows renormalised, or not), cached per
    trace and view."""
    with progress(_("Reading layer {layer}'s maps…").format(layer=layer)) as update:
        return layer_overview(trace, layer, cells=(fh.MAX_CELLS, fh.SMALL_CELLS),
                              transform=fh.hide_sink if hide_sink else None, on_progress=update)


def head_map(trace: Trace, layer: int, head: int, hide_sink: bool = False) -> BlockMeans:
    """One head's map as the heads page shows it large: exact up to MAX_CELLS tokens, else block means."""
    return layer_maps(trace, layer, hide_sink).blocks[fh.MAX_CELLS][head]


@cached(max_entries=32)
def head_blocks(trace: Trace, layer: int, head: int) -> BlockMeans:
    """One head's map as token_heatmap draws it (exact up to MAX_CELLS tokens, else block means), read a block of
    queries at a time and cached per trace and head: a long text's (n, n) map is never held."""
    with progress(_("Reading layer {layer}, head {head}'s map…").format(layer=layer, head=head)) as update:
        return layer_overview(trace, layer, cells=(MAX_CELLS,), heads=slice(head, head + 1),
                              on_progress=update).blocks[MAX_CELLS][0]


@dataclass(frozen=True)
class ModelOverview:
    """Every head at a glance: (L, H, c, c) thumbnails with ``step`` tokens a cell side, and the text statistics
    (name → (L, H)) of the maps as the model computed them."""

    thumbs: np.ndarray
    step: int
    statistics: dict[str, np.ndarray]


@cached(max_entries=8)
def overview(trace: Trace, hide_sink: bool = False) -> ModelOverview:
    """Thumbnails of every head and the text statistics, from one pass over the model's maps, cached per trace:
    Home, the heads page's model view and the head analysis share it."""
    with progress(_("Reading every head's map, layer by layer…")) as update:
        layers = model_overview(trace, cells=(fh.THUMB_CELLS,), statistics=tuple(TEXT_STATISTICS),
                                transform=fh.hide_sink if hide_sink else None, on_progress=update)
    thumbs = np.stack([layer.blocks[fh.THUMB_CELLS].values for layer in layers])
    statistics = {name: np.stack([layer.statistics[name] for layer in layers]) for name in TEXT_STATISTICS}
    return ModelOverview(thumbs, layers[0].blocks[fh.THUMB_CELLS].row_step, statistics)


# ---- head statistics -------------------------------------------------------------------------------------------
@cached(max_entries=8)
def _induction(model: Model, mask: str | None) -> np.ndarray:
    """(layers, heads) induction scores: they do not depend on the text, so once per model and mask."""
    probe = induction_probe(model)
    return induction_scores(model.trace_ids(probe.encoded, mask=mask, keep_inputs=False), probe)


@cached(max_entries=16)
def _head_stats(model: Model, trace: Trace) -> pd.DataFrame:
    values = dict(overview(trace).statistics)  # the one pass over every map that Home and the model view share
    values["induction"] = _induction(model, rerun_mask(trace))  # the probe under the mask the trace ran with
    return stats_frame(values)


def cached_head_stats(model: Model, trace: Trace) -> pd.DataFrame:
    """What :func:`explorer.analysis.stats.head_stats` computes, for a trace of ``model``: the text statistics cached
    per trace, the induction probe once per model and mask."""
    with st.spinner(_("Measuring every head (and running the induction probe once per model)…")):
        return _head_stats(model, trace)


# ---- maps the user viewed (exported with the trace) -------------------------------------------------------------
def remember_view(trace: Trace, name: str, spec: tuple) -> None:
    """Note that a map was shown for this trace. ``spec``: ("attention", layer, head) or ("rollout", last_layer).

    Only the recipe is kept; the maps are rebuilt exactly from the trace when exported.
    """
    key = trace.fingerprint
    viewed = st.session_state.get(_VIEWED)
    if not viewed or viewed["key"] != key:
        viewed = {"key": key, "maps": {}}
        st.session_state[_VIEWED] = viewed
    viewed["maps"][name] = spec


def viewed_specs(trace: Trace) -> dict[str, tuple]:
    viewed = st.session_state.get(_VIEWED)
    return dict(viewed["maps"]) if viewed and viewed["key"] == trace.fingerprint else {}


# ---- figures with downloads -------------------------------------------------------------------------------------
def figure_downloads(fig: go.Figure, stem: tuple, key: str) -> None:
    """PNG and standalone-HTML download buttons for a figure; both files are made only when clicked."""
    png_ok, why = export.png_export_status()
    row = st.container(horizontal=True, gap="small")
    row.download_button(
        "HTML", data=lambda: export.figure_html(fig), file_name=export.file_name(*stem, ext="html"),
        mime="text/html", key=f"{key}_html", icon=":material/download:", on_click="ignore",
        help=_("A standalone page with the interactive figure (plotly.js included; opens offline)."),
    )
    if png_ok:
        row.download_button(
            "PNG", data=lambda: export.figure_png(fig), file_name=export.file_name(*stem, ext="png"),
            mime="image/png", key=f"{key}_png", icon=":material/download:", on_click="ignore",
            help=_("Rendered by kaleido in a headless Chromium: takes a few seconds."),
        )
    else:
        row.caption(_("HTML only here: {why}").format(why=why))


def square_height(n: int) -> int:
    """A height that keeps token × token cells roughly square on a wide page."""
    return max(380, min(760, 160 + 34 * n))


def show_figure(fig: go.Figure, stem: tuple, key: str, **kwargs):
    """Draw a figure with its download buttons under it; returns what ``st.plotly_chart`` returns."""
    event = st.plotly_chart(fig, key=key, **kwargs)
    figure_downloads(fig, stem, key=f"dl_{key}")
    return event
