"""How much of each layer's attention lands on the sink tokens, by weight and by contribution (norm-based).

The sink is the first token for a decoder (README: later layers of SmolLM2 give it about half their weight) and
[CLS] + [SEP] for a BERT encoder. Its share by weight is the mean over queries and heads of Σ_{j ∈ sink} α_ij; by
contribution, the same of the normalised ``α_ij ||f_j||`` (:mod:`explorer.capture.contributions`). Queries are
every position outside the sink. Both stream a block of queries at a time, never a layer's (H, n, n).
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from ..errors import ExplorerError
from ..i18n import _


def sink_positions(trace, special: Sequence[bool] | None = None) -> list[int]:
    """The first token for a causal trace; for a bidirectional one the positions ``special`` marks (the tokenizer's
    [CLS] and [SEP]), else the first and the last."""
    n = trace.n_tokens
    if trace.mask != "bidirectional":
        return [0]
    if special is not None and any(special):
        return [i for i, s in enumerate(special) if s]
    return sorted({0, n - 1})


def sink_shares(trace, sink: Sequence[int], on_progress: Callable[[float], None] | None = None) -> pd.DataFrame:
    """One row per layer: ``weight`` and ``contribution``, the mean share of the sink over queries outside it and
    all heads."""
    n = trace.n_tokens
    keys = torch.tensor(sorted(set(int(p) for p in sink)))
    if keys.numel() == 0 or keys.min() < 0 or keys.max() >= n:
        raise ExplorerError(_("The sink positions must lie in 0–{last}.").format(last=n - 1))
    queries = torch.ones(n, dtype=torch.bool)
    queries[keys] = False
    if not queries.any():
        raise ExplorerError(_("The text needs a token outside the sink to measure its share."))
    rows = []
    for layer in range(trace.n_layers):
        shares = [_share(blocks, keys, queries) for blocks in (trace.row_blocks(layer), trace.contribution_blocks(layer))]
        rows.append({"layer": layer, "weight": shares[0], "contribution": shares[1]})
        if on_progress is not None:
            on_progress((layer + 1) / trace.n_layers)
    return pd.DataFrame(rows)


def _share(blocks, keys: torch.Tensor, queries: torch.Tensor) -> float:
    total, count = 0.0, 0
    for rows, cols, probs in blocks:  # probs (H, Tq, Sk)
        inside = keys[(keys >= cols.start) & (keys < cols.stop)] - cols.start
        chosen = queries[rows]  # (Tq,)
        if inside.numel() and chosen.any():
            total += float(probs[:, chosen][:, :, inside].sum(dtype=torch.float64))
        count += int(chosen.sum()) * probs.shape[0]
    return total / count
