"""What the overview figures show of a layer: block means at the figures' resolutions and the text statistics.

Two ways to the same numbers:

- **fused** (the default where it applies): nothing like a map is built. Statistics naming one key per query are
  O(n·d) gathers of ``exp(q_i·k_j·scale − lse_i)``; entropy is ``lse_i − scale·q_i·Σ_j p_ij k_j``, the inner sum the
  fused kernel with V = K (:func:`explorer.analysis.stats.fused_statistics`). Block means over key blocks are
  ``P @ B``, B the (n, c) indicators of the column blocks, through the same kernel with V = B, then summed over
  query blocks; the hide-sink view is P @ B with key 0 in no block, each row divided by its own total.
- **streamed** (the reference the tests compare against, and the way for anything the fused path does not cover:
  exact maps of short texts, wide block grids, other view transforms, other row statistics): each layer's exact
  maps a block of queries at a time (Trace.row_blocks ≤ 64 MiB: SmolLM2's layer at 8,192 tokens is 2.4 GiB).

The kernel's cost grows with V's width (q and k are zero-padded to it). On causal and bidirectional layers a wide
grid is taken a span of keys at a time, each call as narrow as the head; under other masks (sliding windows, custom
masks) past :data:`FUSED_MAX_COLUMNS` block columns the one streamed pass (one score matmul and one exp, then
column sums) is cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from ..capture import fused
from .downsample import BlockMeanSum, BlockMeans, block_step
from .stats import FUSED_STATISTICS, StatisticSums, fused_statistics
from .views import hide_sink

#: A view transform of rows of maps (e.g. hiding token 0): (block (..., Tq, Sk) of keys first_key…, first_key) → the
#: same shape. Keys outside the block weigh 0 (the mask's span): the transform must give what it would on whole rows.
RowTransform = Callable[[np.ndarray, int], np.ndarray]
Method = Literal["auto", "fused", "streamed"]

# Block columns (all of a layer's grids together) the fused path takes under masks other than causal and
# bidirectional. Measured on SmolLM2 (head_dim 64) at 1,024 tokens, 1 thread: a call with V 64 wide 24 ms, 496 wide
# 273 ms, the streamed pass's maps alone 185 ms (before their column sums); the kernel's time grows linearly with
# the width.
FUSED_MAX_COLUMNS = 256


@dataclass(frozen=True)
class LayerOverview:
    """``blocks``: max_cells → block means of the heads' maps (h, ·, ·), after ``transform``. ``statistics``:
    name → (h,), of the maps as the model computed them (never transformed)."""

    blocks: dict[int, BlockMeans]
    statistics: dict[str, np.ndarray]


def layer_overview(
    trace,
    layer: int,
    *,
    cells: Sequence[int] = (),
    statistics: Sequence[str] = (),
    heads: slice = slice(None),
    transform: RowTransform | None = None,
    on_progress: Callable[[float], None] | None = None,
    method: Method = "auto",
) -> LayerOverview:
    """Block means at each of ``cells`` and the named text statistics of one layer's ``heads``.
    ``on_progress`` hears the fraction done. ``method``: ``"streamed"`` reads the exact maps (the reference);
    ``"auto"`` takes the fused path where it covers the request and is the faster way, and streams the rest;
    ``"fused"`` takes it wherever it covers the request (downsampled grids, no view or the hide-sink view, the
    statistics of :data:`~explorer.analysis.stats.FUSED_STATISTICS`), however wide."""
    heads = slice(*heads.indices(trace.n_heads))
    n_heads = len(range(heads.start, heads.stop))
    n = trace.n_tokens
    if method != "streamed" and not fused.supports(trace):  # e.g. a word-level view: only its maps exist
        method = "streamed"
    fused_stats = [s for s in statistics if s in FUSED_STATISTICS] if method != "streamed" else []
    streamed_stats = [s for s in statistics if s not in fused_stats]
    fused_cells = list(cells) if method != "streamed" and _blocks_fuse(trace, cells, transform, method) else []
    streamed_cells = [c for c in cells if c not in fused_cells]
    values: dict[str, np.ndarray] = {}
    blocks: dict[int, BlockMeans] = {}
    if fused_cells:  # with the entropy's V = K in the same kernel call when both are asked
        mean_keys, fused_blocks = _fused_block_means(trace, layer, fused_cells, heads, hide=transform is hide_sink,
                                                     with_keys="entropy" in fused_stats)
        blocks.update(fused_blocks)
    else:
        mean_keys = None
    if fused_stats:
        values.update(fused_statistics(trace, layer, fused_stats, heads, mean_keys=mean_keys))
    if on_progress is not None and (fused_stats or fused_cells):
        on_progress(1.0 if not (streamed_stats or streamed_cells) else 0.1)
    if streamed_stats or streamed_cells:
        sums = {c: BlockMeanSum((n_heads,), n, n, c) for c in streamed_cells}
        stats = StatisticSums(streamed_stats, (n_heads,))
        start = 0.1 if (fused_stats or fused_cells) else 0.0
        for queries, keys, probs in trace.row_blocks(layer, heads):  # probs (h, Tq, Sk)
            stats.add(queries, keys, probs)
            if transform is not None and sums:
                probs, keys = _transformed(transform, probs, keys, n)
            for total in sums.values():
                total.add(queries, keys, probs)
            if on_progress is not None:
                on_progress(start + (1 - start) * queries.stop / n)
        values.update(stats.result())
        blocks.update({c: total.result() for c, total in sums.items()})
    return LayerOverview({c: blocks[c] for c in cells}, {s: values[s] for s in statistics})


def _blocks_fuse(trace, cells: Sequence[int], transform: RowTransform | None, method: Method) -> bool:
    """Does the fused path cover these block grids: downsampled (exact maps are the streamed path's), a view it
    knows, and (``"auto"``) the faster way? It always is on causal and bidirectional traces, whose key spans keep
    every call as narrow as the head (:func:`explorer.capture.fused.key_block_sums`); under other masks a grid is
    one call as wide as its columns, faster up to :data:`FUSED_MAX_COLUMNS`."""
    if not cells or transform not in (None, hide_sink):
        return False
    n = trace.n_tokens
    if any(block_step(n, c) == 1 for c in cells):
        return False
    columns = sum(-(-n // block_step(n, c)) for c in cells)
    return method == "fused" or trace.mask in ("causal", "bidirectional") or columns <= FUSED_MAX_COLUMNS


def _fused_block_means(trace, layer: int, cells: Sequence[int], heads: slice, hide: bool, with_keys: bool = False
                       ) -> tuple[torch.Tensor | None, dict[int, BlockMeans]]:
    """Block means at every grid of ``cells``, and with ``with_keys`` Σ_j p_ij k_j (else None). Grids narrower than
    the head together come from one call with V = [K | every grid's column indicators]; wider ones a grid at a time
    through :func:`explorer.capture.fused.key_block_sums`. ``hide``: the hide-sink view (key 0 blank, each row
    renormalised over the others), as :func:`explorer.analysis.views.hide_sink` gives it cell by cell: key 0 in no block, each row's
    block sums divided by their total."""
    n, n_heads = trace.n_tokens, heads.stop - heads.start
    totals = {c: BlockMeanSum((n_heads,), n, n, c) for c in cells}
    widths = {c: -(-n // total.col_step) for c, total in totals.items()}
    if sum(widths.values()) <= trace.head_dim:
        indicators = torch.cat([total.column_blocks() for total in totals.values()], dim=-1)  # (n, Σ blocks)
        if hide:
            indicators[0] = 0.0  # key 0 in no block: each row's sums are over keys 1…n−1
        if with_keys:
            mean_keys, sums = fused.mean_keys_and(trace, layer, indicators, heads)
        else:
            mean_keys, sums = None, fused.attention_times(trace, layer, indicators, heads)
        parts = dict(zip(totals, sums.split(list(widths.values()), dim=-1)))
    else:
        mean_keys = fused.mean_keys(trace, layer, heads) if with_keys else None
        parts = {c: fused.key_block_sums(trace, layer, total.col_step, heads, skip_first_key=hide)
                 for c, total in totals.items()}
    rows = slice(0, n)
    out = {}
    for c, total in totals.items():
        part = parts[c].double()  # (h, n, blocks of this grid)
        missing = None
        if hide:
            rest = part.sum(-1, keepdim=True)  # (h, n, 1): each row's weight off key 0
            blank = ~(rest > 0)  # nothing left to renormalise (query 0 under a causal mask): the whole row is NaN
            part = torch.where(blank, 0.0, part / rest.clamp(min=torch.finfo(torch.float64).tiny))
            columns = torch.tensor([min(total.col_step, n - j) for j in range(0, n, total.col_step)],
                                   dtype=torch.float64)  # (blocks,) columns per block
            key0 = torch.zeros_like(columns)
            key0[0] = 1.0  # key 0's blank cell in the first block of every other row
            missing = torch.where(blank, columns, key0)  # (h, n, blocks)
        total.add_column_block_sums(rows, part, missing)
        out[c] = total.result()
    return mean_keys, out


def _transformed(transform: RowTransform, probs: torch.Tensor, keys: slice, n_keys: int) -> tuple[torch.Tensor, slice]:
    """``transform`` of a block of rows over its key span; widened to every key when it blanks a whole row (NaN),
    since a blank row is blank outside the span too."""
    shown = transform(probs.numpy(), keys.start)
    if (keys.start, keys.stop) != (0, n_keys) and bool(np.isnan(shown).all(-1).any()):
        whole = probs.new_zeros(*probs.shape[:-1], n_keys)  # (h, Tq, S)
        whole[..., keys] = probs
        return torch.from_numpy(transform(whole.numpy(), 0)), slice(0, n_keys)
    return torch.from_numpy(shown), keys


def model_overview(
    trace,
    *,
    cells: Sequence[int] = (),
    statistics: Sequence[str] = (),
    transform: RowTransform | None = None,
    on_progress: Callable[[float], None] | None = None,
    method: Method = "auto",
) -> list[LayerOverview]:
    """:func:`layer_overview` of every layer, in order; ``on_progress`` hears the fraction of the model done."""
    layers = []
    for layer in range(trace.n_layers):
        done = (lambda f, layer=layer: on_progress((layer + f) / trace.n_layers)) if on_progress else None
        layers.append(layer_overview(trace, layer, cells=cells, statistics=statistics, transform=transform,
                                     on_progress=done, method=method))
    return layers
