"""The tutorial variant on one layer of a trace, measured against the textbook: what the From scratch page shows.

:func:`variant_view` runs the textbook module (loaded with the layer's weights) and the tutorial's variant with the
chosen departures on the trace's input, and measures each departure on its own: √d_model scaling, the shared d_k × d_k
projection (fitted on a calibration trace, measured on the user's text), and the large negative mask fill.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..analysis.stats import entropy
from ..capture.model import Model
from ..capture.trace import Trace
from ..errors import ExplorerError
from .checks import (
    FillOutcome, ParameterCounts, attention_only, head_diversity, mask_fill_table, parameter_counts,
    textbook_output_for, variant_effect,
)
from .scratch import Departures, tutorial_variant


@dataclass
class VariantView:
    """What the page shows about the variant on one layer (small: one head's maps, per-head numbers)."""

    entropy_textbook: np.ndarray  # (H,)
    entropy_variant: np.ndarray  # (H,) with the switched-on departures
    entropy_embed_scale: np.ndarray  # (H,) with only the √d_model scaling
    diversity_textbook: float
    diversity_variant: float
    diversity_shared: float | None  # with only the shared projection (None where it cannot be built)
    output_relative_diff: float
    map_textbook: np.ndarray  # (T, T) of the selected head
    map_variant: np.ndarray
    counts: ParameterCounts | None
    shared_r2: dict[str, float] | None
    shared_error: str | None
    fills: list[FillOutcome]
    scale_textbook: float
    scale_variant: float


def variant_view(model: Model, trace: Trace, layer: int, head: int, departures: Departures,
                 calibration: Trace) -> VariantView:
    """The variant with ``departures`` against the textbook on ``layer`` of ``trace``, and each departure alone.

    ``calibration``: a trace of :data:`explorer.from_scratch.checks.CALIBRATION_TEXT` by the same model under the same
    mask, on which the shared projection is fitted (so that its effect on the user's text is out of sample).
    """
    textbook, ours = textbook_output_for(model, trace, layer)
    x = trace.x(layer).to(textbook.w_o.device)  # (T, d_model): kept or rebuilt from the hidden state
    allowed = trace.allowed(layer).to(x.device)  # (T, T) bool
    fit_x = calibration.x(layer).to(x.device)  # (T_cal, d_model)
    with torch.inference_mode():
        try:
            variant = tutorial_variant(textbook, departures, fit_x)
        except ExplorerError:  # (2) cannot cut this layer into head slices (H·d_k ≠ d_model: Gemma 3); the variant
            # runs without it, and "Each departure on its own" says why (shared_error below)
            variant = tutorial_variant(textbook, replace(departures, shared_projection=False), fit_x)
        effect = variant_effect(ours, variant(x, allowed))
        embed_scale = attention_only(ours, textbook.d_model**-0.5, allowed)[1]  # (H, T, T)
        counts = r2 = error = diversity_shared = None
        try:
            shared = tutorial_variant(textbook, Departures(shared_projection=True), fit_x)
            counts = parameter_counts(textbook, shared)
            r2 = shared.shared_r2(textbook, x)  # on the user's text: out of sample
            diversity_shared = head_diversity(shared(x, allowed).probs)
        except ExplorerError as exc:  # e.g. H·d_k ≠ d_model: shown as the reason, the rest still works
            error = str(exc)
        nothing_masked = trace.layer(layer).mask_kind == "bidirectional"  # the table then masks a key itself
        fills = mask_fill_table(ours, textbook.scale, None if nothing_masked else allowed)
    return VariantView(
        entropy_textbook=effect.entropy_textbook.numpy(),
        entropy_variant=effect.entropy_variant.numpy(),
        entropy_embed_scale=entropy(embed_scale).float().cpu().numpy(),
        diversity_textbook=effect.diversity_textbook,
        diversity_variant=effect.diversity_variant,
        diversity_shared=diversity_shared,
        output_relative_diff=effect.output_relative_diff,
        map_textbook=effect.probs_textbook[head].numpy(),
        map_variant=effect.probs_variant[head].numpy(),
        counts=counts, shared_r2=r2, shared_error=error, fills=fills,
        scale_textbook=textbook.scale, scale_variant=textbook.d_model**-0.5,
    )
