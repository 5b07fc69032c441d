"""Figures for the from-scratch page: parity per layer, entropy per head, and the kernel timing/memory sweep."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..from_scratch.kernels import KernelTiming
from ..from_scratch.checks import PARITY_TOLERANCE, LayerParity
from . import palette
from ..i18n import _

FLOOR = 1e-9  # differences of exactly 0 cannot sit on a log axis; they are drawn at this floor


def parity_chart(parities: Sequence[LayerParity], tolerance: float = PARITY_TOLERANCE) -> go.Figure:
    """Per layer, the largest scale-relative difference from the model (log scale) and the tolerance line."""
    layers = [p.layer for p in parities]
    worst = [max(p.worst, FLOOR) for p in parities]
    fig = go.Figure(go.Scatter(  # markers, not bars: on a log axis a bar's length depends on where the axis starts
        x=layers, y=worst, mode="markers+lines", line=dict(color=palette.FIRST, width=1),
        marker=dict(size=9, color=[palette.FIRST if p.passed(tolerance) else palette.FAILED for p in parities]),
        customdata=[[p.output, p.output_scale, p.probs, p.qkv] for p in parities],
        hovertemplate=_("layer %{x}<br>worst relative difference %{y:.2e}<br>output |Δ| %{customdata[0]:.2e} "
                        "(scale %{customdata[1]:.3g})<br>attention |Δ| %{customdata[2]:.2e}<br>q/k/v |Δ| "
                        "%{customdata[3]:.2e}") + "<extra></extra>",
        name=_("from scratch vs model"),
    ))
    fig.add_hline(y=tolerance, line_dash="dash", line_color=palette.FAILED,
                  annotation_text=_("tolerance {tolerance}").format(tolerance=f"{tolerance:.0e}"), annotation_position="top left")
    fig.update_layout(
        title=_("From scratch vs the model's own attention, every layer"),
        xaxis=dict(title=_("layer"), dtick=1 if len(layers) <= 32 else None,
                   range=[min(layers) - 0.5, max(layers) + 0.5] if layers else None),
        yaxis=dict(title=_("max |Δ| ÷ max(1, max |value|)"), type="log", exponentformat="power"),
        height=320, margin=dict(l=10, r=10, t=50, b=10), showlegend=False,
    )
    return fig


def entropy_chart(textbook: Sequence[float], variant: Sequence[float], max_entropy: float,
                  variant_label: str | None = None) -> go.Figure:
    """Mean attention entropy of each head, textbook vs variant, side by side, with ``max_entropy``: what uniform
    attention over every allowed key would give (mean over queries of ln(number of allowed keys))."""
    variant_label = variant_label or _("tutorial variant")
    heads = [_("head {h}").format(h=h) for h in range(len(textbook))]
    fig = go.Figure([
        go.Bar(x=heads, y=list(map(float, textbook)), name=_("textbook (÷ √d_k)"), marker_color=palette.FIRST,
               hovertemplate=_("%{x}: %{y:.3f} nats") + "<extra>" + _("textbook") + "</extra>"),
        go.Bar(x=heads, y=list(map(float, variant)), name=variant_label, marker_color=palette.SECOND,
               hovertemplate=_("%{x}: %{y:.3f} nats") + "<extra>" + _("variant") + "</extra>"),
    ])
    fig.add_hline(y=max_entropy, line_dash="dot", line_color="gray",
                  annotation_text=_("uniform over the allowed keys"), annotation_position="top left")
    top = max([max_entropy, *map(float, textbook), *map(float, variant)])
    fig.update_layout(
        barmode="group", title=_("Attention entropy per head (mean over queries; higher = flatter)"),
        yaxis=dict(title=_("entropy (nats)"), range=[0, top * 1.1]),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
        height=340, margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig


def sweep_chart(rows: Sequence[KernelTiming], value: str = "seconds") -> go.Figure:
    """Log-log lines, one per method: median time (``value="seconds"``) or peak memory (``"peak_bytes"``) vs n.

    Methods that materialise the n×n matrix are dashed; dotted guides show the slopes of n and n².
    """
    methods = list(dict.fromkeys(r.method for r in rows))
    unit_short = "ms" if value == "seconds" else "MiB"
    fig = go.Figure()
    for method in methods:
        mine = sorted((r for r in rows if r.method == method and getattr(r, value) is not None), key=lambda r: r.n)
        if not mine:
            continue
        y = [r.seconds * 1e3 if value == "seconds" else r.peak_bytes / 2**20 for r in mine]
        dtype = f" ({mine[0].dtype})" if mine[0].dtype != "float32" else ""
        fig.add_trace(go.Scatter(
            x=[r.n for r in mine], y=[max(v, FLOOR) for v in y], mode="lines+markers", name=_(method) + dtype,
            line=dict(dash="dash" if mine[0].materialises else "solid"),
            hovertemplate=f"{_(method)}<br>n = %{{x:,}}<br>%{{y:.3g}} {unit_short}<extra></extra>",
        ))
    ns = sorted({r.n for r in rows})
    ys = [t.y for t in fig.data]
    if len(ns) >= 2 and ys:
        anchor = float(np.median([y[0] for y in ys]))
        for power, label in ((1, "∝ n"), (2, "∝ n²")):
            fig.add_trace(go.Scatter(
                x=ns, y=[anchor * (n / ns[0]) ** power for n in ns], mode="lines", name=label,
                line=dict(dash="dot", color="gray", width=1), hoverinfo="skip",
            ))
    unit = _("median time (ms)") if value == "seconds" else _("peak memory above the inputs (MiB)")
    fig.update_layout(
        title=_("Time vs sequence length (log–log)") if value == "seconds" else _("Memory vs sequence length (log–log)"),
        xaxis=dict(title=_("n (tokens)"), type="log", tickvals=ns, ticktext=[f"{n:,}" for n in ns]),
        yaxis=dict(title=unit, type="log", dtick=1),  # a label at each power of ten only
        height=460, margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0, font=dict(size=11)),
    )
    return fig
