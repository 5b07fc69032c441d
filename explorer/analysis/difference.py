"""Two heads' maps compared cell by cell (two texts, two models, the two masks), from one pass over both a block of
queries at a time: what the Compare page draws (each map and A − B, exact up to ``max_cells`` tokens, else block
means) and the numbers it reports, which need every cell (the largest |A − B| and where, the mean |A − B|, the most
changed query). A long text's maps are never held: SmolLM2's at 8,192 tokens are 256 MiB each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..i18n import _
from ..errors import ExplorerError
from ..capture.trace import Trace
from .downsample import BlockMeanSum, BlockMeans

BLOCK_BYTES = 64 << 20  # the two maps' rows of one block together (float32)


@dataclass(frozen=True)
class MapDifference:
    """``a``, ``b``: the two maps as drawn (exact, or block means of the same blocks). ``largest``: max |A − B| over
    the cells, at ``largest_at`` (query, key); ``mean_abs``: the mean |A − B| over the n² cells;
    ``most_changed``: the query whose row moved most (largest Σ_j |A − B|)."""

    a: BlockMeans
    b: BlockMeans
    largest: float
    largest_at: tuple[int, int]
    mean_abs: float
    most_changed: int

    @property
    def difference(self) -> BlockMeans:
        """A − B as drawn: a block's mean of the differences is the difference of its means."""
        return BlockMeans(self.a.values - self.b.values, self.a.row_step, self.a.col_step)


def map_difference(a: Trace, layer_a: int, head_a: int, b: Trace, layer_b: int, head_b: int, max_cells: int,
                   on_progress: Callable[[float], None] | None = None) -> MapDifference:
    """Compare head ``head_a`` of ``a``'s layer ``layer_a`` with ``head_b`` of ``b``'s ``layer_b``, cell by cell.
    Both texts must have the same number of tokens (cells are compared by position). ``on_progress`` hears the
    fraction of queries done."""
    n = a.n_tokens
    if b.n_tokens != n:
        raise ExplorerError(_("The maps have {n_a} and {n_b} tokens: a cell-by-cell difference needs the same number."
                              ).format(n_a=n, n_b=b.n_tokens))
    sums = [BlockMeanSum((), n, n, max_cells) for _side in (a, b)]
    largest, largest_at, total = -1.0, (0, 0), 0.0
    row_change = torch.zeros(n, dtype=torch.float64)
    rows_per_block = max(1, BLOCK_BYTES // (2 * 4 * n))
    for start in range(0, n, rows_per_block):
        queries = slice(start, min(n, start + rows_per_block))
        pa = a.attention_window(layer_a, head_a, queries=queries)  # (Tq, n)
        pb = b.attention_window(layer_b, head_b, queries=queries)
        sums[0].add(queries, slice(0, n), pa)
        sums[1].add(queries, slice(0, n), pb)
        change = (pa - pb).abs()  # (Tq, n)
        at = int(change.argmax())
        if float(change.view(-1)[at]) > largest:  # the first of equal maxima, as numpy's argmax
            largest, largest_at = float(change.view(-1)[at]), (start + at // n, at % n)
        by_row = change.sum(-1, dtype=torch.float64)  # (Tq,)
        row_change[queries] = by_row
        total += float(by_row.sum())
        if on_progress is not None:
            on_progress(queries.stop / n)
    return MapDifference(sums[0].result(), sums[1].result(), largest, largest_at, total / (n * n),
                         int(row_change.argmax()))
