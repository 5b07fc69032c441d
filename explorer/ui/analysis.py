"""Streamlit glue for the head-analysis and compare pages: cached analyses, figure downloads, viewed maps, opening
a head on the heads page.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ..analysis import export
from . import common as ui
from ..capture.model import Model
from ..analysis.rollout import trace_rollout
from ..analysis.stats import induction_probe, induction_scores, stats_frame, text_statistics
from ..capture.trace import Trace

HEADS_PAGE = "pages/heads.py"
_VIEWED = "_ae_viewed_maps"


# ---- cached analyses (keyed on small inputs: model, device, text, mask, token cap) --------------------------------
@st.cache_data(show_spinner="Running the induction probe…", max_entries=8)
def _induction(_model: Model, model_key: tuple, mask: str | None) -> np.ndarray:
    """(layers, heads) induction scores: they do not depend on the text, so once per model and mask."""
    probe = induction_probe(_model)
    return induction_scores(_model.trace_ids(probe.encoded, mask=mask, keep_inputs=False), probe)


@st.cache_data(show_spinner="Measuring every head…", max_entries=16)
def _head_stats(_model: Model, _trace: Trace, key: tuple) -> pd.DataFrame:
    values = text_statistics(_trace)
    values["induction"] = _induction(_model, key[:2], key[3])
    return stats_frame(values)


@st.cache_data(show_spinner="Rolling attention out through the layers…", max_entries=16)
def _rollout(_trace: Trace, key: tuple, last_layer: int) -> np.ndarray:
    return trace_rollout(_trace, last_layer).numpy()


def cached_head_stats(model: Model, trace: Trace) -> pd.DataFrame:
    """What :func:`explorer.stats.head_stats` computes, for the sidebar's trace: the text statistics cached per
    model, text and mask, the induction probe once per model and mask."""
    return _head_stats(model, trace, ui.trace_key(trace))


def cached_rollout(trace: Trace, last_layer: int) -> np.ndarray:
    return _rollout(trace, ui.trace_key(trace), last_layer)


# ---- navigation -----------------------------------------------------------------------------------------------------
def open_on_heads_page(layer: int, head: int) -> None:
    """Make (layer, head) the shared selection and go to the heads page."""
    st.session_state["_ae_layer"] = int(layer)
    st.session_state["_ae_head"] = int(head)
    st.switch_page(HEADS_PAGE)


# ---- maps the user viewed (exported with the trace) -------------------------------------------------------------
def remember_view(trace: Trace, name: str, spec: tuple) -> None:
    """Note that a map was shown for this trace. ``spec``: ("attention", layer, head) or ("rollout", last_layer).

    Only the recipe is kept; the maps are rebuilt exactly from the trace when exported.
    """
    key = ui.trace_key(trace)
    viewed = st.session_state.get(_VIEWED)
    if not viewed or viewed["key"] != key:
        viewed = {"key": key, "maps": {}}
        st.session_state[_VIEWED] = viewed
    viewed["maps"][name] = spec


def viewed_specs(trace: Trace) -> dict[str, tuple]:
    viewed = st.session_state.get(_VIEWED)
    return dict(viewed["maps"]) if viewed and viewed["key"] == ui.trace_key(trace) else {}


def build_maps(trace: Trace, specs: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Rebuild the viewed maps from their recipes."""
    maps = {}
    for name, spec in specs.items():
        if spec[0] == "attention":
            maps[name] = trace.attention(spec[1], spec[2]).numpy()
        elif spec[0] == "rollout":
            maps[name] = cached_rollout(trace, spec[1])
    return maps


# ---- downloads ------------------------------------------------------------------------------------------------------
def figure_downloads(fig: go.Figure, stem: tuple, key: str) -> None:
    """PNG and standalone-HTML download buttons for a figure; both files are made only when clicked."""
    png_ok, why = export.png_export_status()
    row = st.container(horizontal=True, gap="small")
    row.download_button(
        "HTML", data=lambda: export.figure_html(fig), file_name=export.file_name(*stem, ext="html"),
        mime="text/html", key=f"{key}_html", icon=":material/download:", on_click="ignore",
        help="A standalone page with the interactive figure (plotly.js included; opens offline).",
    )
    if png_ok:
        row.download_button(
            "PNG", data=lambda: export.figure_png(fig), file_name=export.file_name(*stem, ext="png"),
            mime="image/png", key=f"{key}_png", icon=":material/download:", on_click="ignore",
            help="Rendered by kaleido in a headless Chromium: takes a few seconds.",
        )
    else:
        row.caption(f"HTML only here: {why}")


def square_height(n: int) -> int:
    """A height that keeps token × token cells roughly square on a wide page."""
    return max(380, min(760, 160 + 34 * n))


def show_figure(fig: go.Figure, stem: tuple, key: str, **kwargs):
    """Draw a figure with its download buttons under it; returns what ``st.plotly_chart`` returns."""
    event = st.plotly_chart(fig, key=key, **kwargs)
    figure_downloads(fig, stem, key=f"dl_{key}")
    return event
