"""Attention rollout (Abnar & Zuidema 2020): how much each input token flows into each position's top representation.

Per layer, heads are averaged and the residual connection is modelled as an identity: Â = ½·A + ½·I, rows
renormalised. Rollout multiplies these through the layers, R = Â_L ⋯ Â_1, so R[i, j] is the share of input token j in
position i's representation at the top. Assumptions: information mixes linearly along attention weights; every head
counts equally; the residual stream carries exactly as much as attention (the ½); value vectors, output projections
and MLPs are ignored. It is a heuristic of information flow, not an attribution with guarantees.

A long text's R is never formed: at 8,192 tokens each product Â·R is 8192³ multiply-adds and each layer's maps 2.4 GiB.
A figure draws only some combinations of R's rows (block means, one row), so :func:`rollout_rows` carries those m rows
down through the layers, W·Â_L ⋯ Â_1 = ((W·Â_L)·Â_{L−1})⋯, reading each layer's head-averaged map a block of queries
at a time (Trace.row_blocks): m·n² per layer (half of it under a causal mask), and no (n, n) matrix but W's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..i18n import N_, _
from ..errors import ExplorerError, check_layer_head
from ..capture.words import by_word
from .downsample import BlockMeans, block_means, block_step

RESIDUAL_WEIGHT = 0.5
ASSUMPTIONS = N_(  # translated where it is shown
    "Rollout assumes information mixes linearly along attention weights, that all heads of a layer count equally "
    "(they are averaged), and that the residual stream carries as much as attention (½·A + ½·I). It ignores value "
    "vectors, output projections, MLPs and norms, so it is a picture of possible information flow, not a proof of "
    "what the model uses."
)


def mixing_matrix(attn: torch.Tensor, residual: float = RESIDUAL_WEIGHT) -> torch.Tensor:
    """One layer's Â = residual·I + (1 − residual)·mean_h A, rows renormalised. attn: (H, n, n) or (n, n)."""
    a = torch.as_tensor(attn).double()
    if a.dim() == 3:
        a = a.mean(0)
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ExplorerError(_("Expected (H, n, n) or (n, n) attention, got {shape}.").format(shape=tuple(attn.shape)))
    mixed = residual * torch.eye(a.shape[0], dtype=a.dtype) + (1 - residual) * a
    return mixed / mixed.sum(-1, keepdim=True)


def rollout(layers: Iterable[torch.Tensor], residual: float = RESIDUAL_WEIGHT) -> torch.Tensor:
    """R = Â_last ⋯ Â_first over ``layers`` (each (H, n, n) or (n, n), first layer first). Rows sum to 1.

    ``layers`` may be a generator, so that only one layer's maps need exist at a time."""
    result = None
    for attn in layers:
        mixed = mixing_matrix(attn, residual)
        result = mixed if result is None else mixed @ result
    if result is None:
        raise ExplorerError(_("Rollout needs at least one layer."))
    return result


def trace_rollout(trace, last_layer: int | None = None, residual: float = RESIDUAL_WEIGHT) -> torch.Tensor:
    """(n, n) rollout of a trace from layer 0 through ``last_layer`` (default: the last). float64.

    The whole matrix costs n³ per layer: for long texts ask :func:`rollout_rows` or :func:`rollout_blocks`."""
    return rollout_rows(trace, torch.eye(trace.n_tokens, dtype=torch.float64), last_layer, residual)


def rollout_rows(
    trace,
    weights: torch.Tensor,
    last_layer: int | None = None,
    residual: float = RESIDUAL_WEIGHT,
    on_progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """W·R, (m, n) float64, for weights W (m, n) and the rollout R of layers 0 … ``last_layer`` (default: the last):
    R's rows combined as W says (a row of W = e_i gives R's row i), never R itself. ``on_progress`` hears the
    fraction of layers done."""
    last = trace.n_layers - 1 if last_layer is None else last_layer
    check_layer_head(last, trace.n_layers)
    rows = torch.as_tensor(weights, dtype=torch.float64).cpu()
    if rows.dim() != 2 or rows.shape[1] != trace.n_tokens:
        raise ExplorerError(_("Expected weights of shape (m, {n}), got {shape}.").format(
            n=trace.n_tokens, shape=tuple(rows.shape)))
    for done, layer in enumerate(range(last, -1, -1)):  # R = Â_last ⋯ Â_0: W·Â_last first
        rows = times_mixing(rows, trace, layer, residual)
        if on_progress is not None:
            on_progress((done + 1) / (last + 1))
    return rows


def times_mixing(rows: torch.Tensor, trace, layer: int, residual: float = RESIDUAL_WEIGHT) -> torch.Tensor:
    """rows (m, n) float64 → rows·Â of ``layer`` (Â as :func:`mixing_matrix` makes it), from the layer's maps a
    block of queries at a time: Â[queries, keys] is all a block adds to, since its weights elsewhere are 0."""
    out = torch.zeros_like(rows)
    for queries, keys, probs in trace.row_blocks(layer):  # probs (H, Tq, Sk)
        mixed = (1 - residual) * probs.mean(0, dtype=torch.float64)  # (Tq, Sk)
        own = torch.arange(queries.start, queries.stop)
        mixed[own - queries.start, own - keys.start] += residual  # the identity: a trace's keys are its queries
        mixed /= mixed.sum(-1, keepdim=True)
        out[:, keys] += rows[:, queries] @ mixed  # (m, Tq) @ (Tq, Sk)
    return out


def word_rollout(trace, last_layer: int | None = None, residual: float = RESIDUAL_WEIGHT) -> torch.Tensor:
    """(W, W) float64 rollout by word: the token rollout R aggregated by Clark et al.'s rule
    (:func:`explorer.capture.words.by_word`: to a word the sum over its pieces, from a word the mean). Rows sum to 1.

    Not the rollout of word maps: the residual identity and the mixing act on token positions, and a product of
    aggregated matrices is not the aggregate of the product (a word's pieces route attention differently, and the mean
    over them taken at every layer would mix them before the next layer does). R[i, j] is the share of input token j
    in position i's top representation; a word's row is then the mean of its pieces' rows and its column the sum."""
    return by_word(trace_rollout(trace, last_layer, residual), trace.words())


@dataclass(frozen=True)
class RolloutBlocks:
    """What the rollout figure shows: ``blocks``, R's block means at most ``max_cells`` a side (R itself when the
    text fits); ``first_share``, the mean over positions 1 … n−1 of R[i, 0] (flow from the first token);
    ``row_sum_error``, the largest |Σ_j − 1| over the block rows (each a mean of R's rows, so it sums to 1 too)."""

    blocks: BlockMeans
    first_share: float
    row_sum_error: float


def rollout_blocks(
    trace,
    max_cells: int,
    last_layer: int | None = None,
    residual: float = RESIDUAL_WEIGHT,
    on_progress: Callable[[float], None] | None = None,
) -> RolloutBlocks:
    """R's block means (each cell the mean of a block of R's entries, as :func:`explorer.analysis.downsample.
    block_means` makes them), exact: the rows carried down are the row blocks' averages and the first-token row."""
    n = trace.n_tokens
    step = block_step(n, max_cells)
    block = torch.arange(n) // step
    weights = torch.zeros(int(block[-1]) + 2, n, dtype=torch.float64)  # one row per row block, then the first token's
    weights[block, torch.arange(n)] = 1.0
    weights[:-1] /= weights[:-1].sum(-1, keepdim=True)
    if n > 1:
        weights[-1, 1:] = 1.0 / (n - 1)
    rows = rollout_rows(trace, weights, last_layer, residual, on_progress)  # (row blocks + 1, n)
    columns = block_means(rows[:-1].numpy(), max_cells)  # rows are already blocks: this averages the columns
    first = float(rows[-1, 0]) if n > 1 else 1.0
    return RolloutBlocks(BlockMeans(columns.values, step, columns.col_step), first,
                         float((rows[:-1].sum(-1) - 1).abs().max()))
