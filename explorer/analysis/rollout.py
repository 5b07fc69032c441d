"""Attention rollout (Abnar & Zuidema 2020): how much each input token flows into each position's top representation.

Per layer, heads are averaged and the residual connection is modelled as an identity: Â = ½·A + ½·I, rows
renormalised. Rollout multiplies these through the layers, R = Â_L ⋯ Â_1, so R[i, j] is the share of input token j in
position i's representation at the top. Assumptions: information mixes linearly along attention weights; every head
counts equally; the residual stream carries exactly as much as attention (the ½); value vectors, output projections
and MLPs are ignored. It is a heuristic of information flow, not an attribution with guarantees.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..i18n import N_, _
from ..errors import ExplorerError, check_layer_head

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
    """(n, n) rollout of a trace from layer 0 through ``last_layer`` (default: the last). float64."""
    last = trace.n_layers - 1 if last_layer is None else last_layer
    check_layer_head(last, trace.n_layers)
    return rollout((trace.attentions(layer) for layer in range(last + 1)), residual)
