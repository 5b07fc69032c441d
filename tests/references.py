"""Reference computations and comparisons shared by several test modules (test modules never import one another)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

import explorer

from bounds import EPS32, f32_dot_bound

# The figures sum in float64 and round once to float32, the references likewise (or not at all): the two land at most
# one float32 step apart, a relative EPS32. hide_sink rounds twice (its float32 total, then the quotient).
ONE_ROUNDING = EPS32


def block_rounding(col_step: int) -> float:
    """Relative error of a block mean: float32 sums of ``col_step`` weights ≥ 0 (relative to their sum), then float64
    totals and one float32 rounding of the mean."""
    return f32_dot_bound(col_step, 1.0) + ONE_ROUNDING


def reference_block_mean(matrix: np.ndarray, max_cells: int) -> tuple[np.ndarray, int, int]:
    """Block means of one map written the plain way (pad with NaN, reshape, nanmean): the reference."""
    rows, cols = matrix.shape
    rs, cs = -(-rows // max_cells), -(-cols // max_cells)
    if rs == 1 and cs == 1:
        return matrix, 1, 1
    padded = np.pad(matrix.astype(np.float64), ((0, (-rows) % rs), (0, (-cols) % cs)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // rs, rs, padded.shape[1] // cs, cs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN block is NaN, as intended
        return np.nanmean(blocks, axis=(1, 3)).astype(np.float32), rs, cs


def assert_same_trace(a: explorer.Trace, b: explorer.Trace) -> None:
    """Bit-for-bit equality of everything a trace recorded."""
    assert a.tokens == b.tokens and a.token_ids == b.token_ids and a.mask == b.mask
    for ra, rb in zip(a.records, b.records, strict=True):
        for name in ("q", "k", "v", "lse"):
            assert torch.equal(getattr(ra, name), getattr(rb, name)), (ra.layer, name)
        assert torch.equal(a.x(ra.layer), b.x(rb.layer)), (ra.layer, "x")  # kept, or rebuilt from the hidden state
    for ha, hb in zip(a.hidden_states, b.hidden_states, strict=True):
        assert torch.equal(ha, hb)
    assert torch.equal(a.final_hidden, b.final_hidden)
