"""Exports: a head's map as CSV, a whole trace as .npz, figures as standalone HTML or PNG.

PNG goes through kaleido, which drives a headless Chromium (Debian's ``/usr/bin/chromium`` here; kaleido finds it
on the PATH or through ``BROWSER_PATH``). Without one, only HTML is offered. HTML files embed plotly.js, so they open
offline in any browser.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..i18n import _
from ..errors import ExplorerError
from ..capture.tokens import unique_labels

NPZ_FORMAT = "attention-explorer-trace/1"
MAP_PREFIX = "map__"  # npz keys of the maps the user viewed
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


# ---- file names ---------------------------------------------------------------------------------------------------
def file_name(*parts: object, ext: str) -> str:
    """A safe, readable file name from parts, e.g. ``("smollm2", "L17H3", "attention")`` → smollm2_L17H3_attention.csv."""
    stem = "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)).strip("-.") for p in parts if str(p))
    return f"{stem[:120] or 'export'}.{ext}"


# ---- one head's map as CSV ----------------------------------------------------------------------------------------
def head_map_csv(matrix, row_tokens, col_tokens=None) -> str:
    """A query × key table: first column the query labels ("position token"), header the key labels.

    Labels start with the position, so a token can never be read as a spreadsheet formula; floats are written with
    9 significant digits, enough to read float32 back exactly.
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    col_tokens = row_tokens if col_tokens is None else col_tokens
    if matrix.shape != (len(row_tokens), len(col_tokens)):
        raise ExplorerError(_("The map is {shape} but there are {rows} × {cols} tokens.").format(
            shape=matrix.shape, rows=len(row_tokens), cols=len(col_tokens)))
    frame = pd.DataFrame(matrix, index=unique_labels(row_tokens), columns=unique_labels(col_tokens))
    frame.index.name = "query \\ key"
    return frame.to_csv(float_format="%.9g")


def read_head_map_csv(text: str) -> pd.DataFrame:
    """Read back :func:`head_map_csv` (query labels as the index, key labels as the columns)."""
    return pd.read_csv(io.StringIO(text), index_col=0)


# ---- a whole trace as .npz ----------------------------------------------------------------------------------------
def trace_arrays(trace, maps: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Everything the .npz holds, as plain arrays (no pickled objects).

    Keys: ``tokens`` (n,) str, ``token_ids`` (n,), ``text``, ``model``, ``mask``, ``format``; per layer stacked
    ``q`` (L, H, n, d), ``k`` / ``v`` (L, H_kv, n, d) (post-RoPE q/k), ``lse`` (L, H, n), ``scale`` (L,);
    and one ``map__<name>`` per map in ``maps`` (the maps the user viewed).
    """
    out: dict[str, np.ndarray] = {
        "format": np.array(NPZ_FORMAT),
        "text": np.array(trace.text),
        "model": np.array(trace.model_name),
        "mask": np.array(trace.mask),
        "tokens": np.array(trace.tokens, dtype=str),
        "token_ids": np.array(trace.token_ids, dtype=np.int64),
        "scale": np.array([trace.scale(l) for l in range(trace.n_layers)], dtype=np.float64),
    }
    for name in ("q", "k", "v", "lse"):
        out[name] = np.stack([getattr(layer, name)().numpy() for layer in trace.layers])
    for name, matrix in (maps or {}).items():
        out[MAP_PREFIX + re.sub(r"[^A-Za-z0-9_]+", "_", name)] = np.asarray(matrix)
    return out


def trace_npz(trace, maps: dict[str, np.ndarray] | None = None) -> bytes:
    """The trace as the bytes of a .npz file (see :func:`trace_arrays` for its contents)."""
    buffer = io.BytesIO()
    np.savez(buffer, **trace_arrays(trace, maps))
    return buffer.getvalue()


def read_trace_npz(data: bytes) -> dict[str, np.ndarray]:
    """Load a .npz written by :func:`trace_npz` (never unpickles: the file may come from anywhere)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def npz_maps(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The viewed maps in a loaded .npz, by the names they were saved under."""
    return {k[len(MAP_PREFIX) :]: v for k, v in arrays.items() if k.startswith(MAP_PREFIX)}


# ---- figures ------------------------------------------------------------------------------------------------------
def for_export(fig: go.Figure) -> go.Figure:
    """A copy that stands alone: outside Streamlit there is no theme to grow the margins for tick labels."""
    out = go.Figure(fig)
    out.update_xaxes(automargin=True)
    out.update_yaxes(automargin=True)
    if not out.layout.template or not out.layout.template.data:
        out.update_layout(template="plotly_white")
    return out


def figure_html(fig: go.Figure) -> str:
    """A standalone HTML page of the figure, plotly.js inlined (opens offline)."""
    return for_export(fig).to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def _browser_path() -> str | None:
    explicit = os.environ.get("BROWSER_PATH")
    if explicit and os.path.exists(explicit):
        return explicit
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def png_export_status() -> tuple[bool, str]:
    """Whether figures can be saved as PNG here, and why not when they cannot."""
    if importlib.util.find_spec("kaleido") is None:
        return False, _("PNG export needs the kaleido package, which is not installed; HTML works everywhere.")
    if _browser_path() is None:
        return False, _("PNG export needs a Chromium browser for kaleido (e.g. Debian's chromium); none was found.")
    return True, ""


def figure_png(fig: go.Figure, scale: float = 2.0) -> bytes:
    """The figure as PNG bytes (kaleido + headless Chromium; a few seconds). Raises ExplorerError if unavailable."""
    ok, why = png_export_status()
    if not ok:
        raise ExplorerError(why)
    browser = _browser_path()
    if browser and "BROWSER_PATH" not in os.environ:
        os.environ["BROWSER_PATH"] = browser  # kaleido's launcher reads it; harmless when it finds one itself
    width = fig.layout.width or 1000
    height = fig.layout.height or 600
    try:
        return for_export(fig).to_image(format="png", width=width, height=height, scale=scale)
    except Exception as exc:  # noqa: BLE001 - kaleido/Chromium failures vary; the user gets one clear message
        raise ExplorerError(
            _("PNG export failed ({error}); use the HTML download instead.").format(error=type(exc).__name__)
        ) from exc
