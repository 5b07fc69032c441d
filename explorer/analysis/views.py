"""View transforms of attention maps: what a figure shows instead of the map itself, never what the model computed.

:func:`hide_sink` is the one the heads page offers. It lives here, below the figures, so that the overview
(:mod:`explorer.analysis.overview`) can recognise it and compute its block means from row sums through the fused
kernel instead of rebuilding the maps.
"""

from __future__ import annotations

import numpy as np


def hide_sink(attention: np.ndarray, first_key: int = 0) -> np.ndarray:
    """View transform: blank key 0 (NaN) and renormalise each row over keys 1…n−1.

    Works on (..., rows, keys): whole rows, or a block of keys ``first_key``… outside which every weight is 0 (the
    mask's span, Trace.row_blocks), so that a long text's rows need not be widened first. A row with no attention
    left (under a causal mask, query 0 sees only key 0) is NaN.
    """
    out = np.array(attention, dtype=np.float32, copy=True)  # float32 in place: this runs on 30 × (H, n, n) maps
    others = out[..., 1:] if first_key == 0 else out  # the keys other than key 0 in this block
    rest = others.sum(axis=-1, keepdims=True, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        others /= np.where(rest > 0, rest, np.nan).astype(np.float32)
    if first_key == 0:
        out[..., 0] = np.nan
    return out
