"""What the overview figures show of a layer, from one pass over its maps a block of queries at a time: block means
at the figures' resolutions and the text statistics together.

A long text's layer is never held whole (SmolLM2's at 8,192 tokens is 2.4 GiB, Trace.row_blocks ≤ 64 MiB), and a
model's overview (Home's telling head and thumbnails, the heads page's model view) reads each map once for all of it.
For a short text the block means at ``max_cells ≥ n`` are the exact maps themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .downsample import BlockMeanSum, BlockMeans
from .stats import StatisticSums

#: A view transform of rows of maps (e.g. hiding token 0): (block (..., Tq, Sk) of keys first_key…, first_key) → the
#: same shape. Keys outside the block weigh 0 (the mask's span): the transform must give what it would on whole rows.
RowTransform = Callable[[np.ndarray, int], np.ndarray]


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
) -> LayerOverview:
    """Block means at each of ``cells`` and the named text statistics of one layer's ``heads``, in one pass.
    ``on_progress`` hears the fraction of queries done after each block."""
    n_heads = len(range(*heads.indices(trace.n_heads)))
    n_queries = n_keys = trace.n_tokens  # a trace's keys are its queries (no cache); a WordTrace's are its words
    sums = {c: BlockMeanSum((n_heads,), n_queries, n_keys, c) for c in cells}
    stats = StatisticSums(statistics, (n_heads,))
    for queries, keys, probs in trace.row_blocks(layer, heads):  # probs (h, Tq, Sk)
        stats.add(queries, keys, probs)
        if transform is not None and sums:
            probs, keys = _transformed(transform, probs, keys, n_keys)
        for total in sums.values():
            total.add(queries, keys, probs)
        if on_progress is not None:
            on_progress(queries.stop / n_queries)
    return LayerOverview({c: total.result() for c, total in sums.items()}, stats.result())


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
) -> list[LayerOverview]:
    """:func:`layer_overview` of every layer, in order; ``on_progress`` hears the fraction of the model done."""
    layers = []
    for layer in range(trace.n_layers):
        done = (lambda f, layer=layer: on_progress((layer + f) / trace.n_layers)) if on_progress else None
        layers.append(layer_overview(trace, layer, cells=cells, statistics=statistics, transform=transform,
                                     on_progress=done))
    return layers
