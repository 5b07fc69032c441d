"""Norm-based attention (Kobayashi et al. 2020, "Attention is Not Only a Weight"): what each key moves, not how much
it is looked at.

Head h's output at query i is ``W_o^h Σ_j α_ij v_j = Σ_j α_ij f_j`` with ``f_j = W_o^h v_j`` (the key's value through
the head's slice of the output projection: columns [h·D, (h+1)·D) of W_o; under GQA/MQA ``v_j`` is the value head the
query head shares). So key j's share in what the head writes is ``α_ij ||f_j||``, not ``α_ij``: a sink key with a
large weight but a tiny value moves almost nothing. Rows are renormalised to sum to 1 over the keys the mask allows,
so contributions read like the weights. The value bias (BERT, GPT-2, Qwen2) is part of v as recorded; the output
bias b_o is added once per position, not per key, and belongs to no key, so it is left out.

Only weights and the trace's recorded v are used; a long text's contributions stream a block of queries at a time
through :meth:`explorer.capture.trace.Trace.row_blocks`, so a whole layer's (H, n, n) never exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch

from .projections import layer_projections

if TYPE_CHECKING:  # the trace imports this module; only annotations need the classes
    from .model import Model
    from .trace import Trace

# Rows of f = W_o^h v computed at once ((heads, rows, d_model) float32): bounds the memory of a long text's norms.
NORM_ROWS = 1024


def output_weight(model: Model, layer: int) -> torch.Tensor:
    """(d_model, H·D): the layer's output projection W_o in ``nn.Linear`` layout (head h's columns at [h·D, (h+1)·D))."""
    return layer_projections(model, layer).w_o


def value_norms(v: torch.Tensor, w_o: torch.Tensor, heads: range, group_size: int) -> torch.Tensor:
    """(len(heads), n) float32: ``||W_o^h v_j||`` for each query head h in ``heads`` and key j.

    v: (H_kv, n, D) the layer's recorded values; w_o: (d_model, H·D). Query head h reads value head h // group_size.
    Computed directly (not through the Gram matrix W_oᵀW_o, which would cancel digits for small norms), all heads in
    one batched product a block of rows at a time."""
    D = v.shape[-1]
    heads = list(heads)
    out = torch.empty(len(heads), v.shape[1], dtype=torch.float32)
    with torch.inference_mode():
        w = w_o.float().reshape(w_o.shape[0], -1, D)[:, heads].permute(1, 2, 0)  # (h, D, d_model): W_o^hᵀ
        vh = v[[h // group_size for h in heads]]  # (h, n, D): each query head's value head
        for start in range(0, vh.shape[1], NORM_ROWS):
            f = torch.bmm(vh[:, start : start + NORM_ROWS].to(w), w)  # (h, rows, d_model): f_j = W_o^h v_j
            out[:, start : start + NORM_ROWS] = torch.linalg.vector_norm(f, dim=-1).float().cpu()
    return out


def contribution_blocks(
    trace: Trace, layer: int, w_o: torch.Tensor, heads: slice = slice(None), max_bytes: int | None = None
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Like :meth:`explorer.capture.trace.Trace.row_blocks`, but ``α_ij ||f_j||`` with rows normalised to 1: yields ``(queries, keys,
    contributions)``, contributions (h, Tq, Sk) float32 CPU. Keys outside the mask have α = 0 and stay 0; a row
    whose every allowed key has ||f|| = 0 (a head writing nothing) is left all 0 rather than 0/0."""
    first, stop, _step = heads.indices(trace.n_heads)
    r = trace.record(layer)
    norms = value_norms(r.v, w_o, range(first, stop), r.group_size)  # (h, n)
    tiny = torch.finfo(torch.float32).tiny
    for queries, keys, probs in trace.row_blocks(layer, heads=heads, max_bytes=max_bytes):  # probs (h, Tq, Sk)
        # In place: each block is a fresh tensor of row_blocks', and a whole layer's pass should cost about as much
        # as the maps (benchmarks/bench_explain.py). A row of zeros stays 0 (0 / tiny), never 0/0.
        weighted = probs.mul_(norms[:, None, keys])  # (h, Tq, Sk)
        total = weighted.sum(-1, keepdim=True).clamp_min_(tiny)  # (h, Tq, 1)
        yield queries, keys, weighted.div_(total)


def contributions(trace: Trace, layer: int, head: int, w_o: torch.Tensor) -> torch.Tensor:
    """(n, n) float32: one head's normalised ``α_ij ||f_j||``, assembled from :func:`contribution_blocks`."""
    n = trace.n_tokens
    out = torch.zeros(n, n, dtype=torch.float32)
    for queries, keys, block in contribution_blocks(trace, layer, w_o, heads=slice(head, head + 1)):
        out[queries, keys] = block[0]
    return out
