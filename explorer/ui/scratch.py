"""Streamlit glue for the from-scratch page: cached parity checks, the tutorial variant's measurements, and the
kernel sweep (run on a button press, kept per session).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
import torch

from ..from_scratch import kernels, checks as scratch_checks
from ..analysis import stats
from . import common as ui
from ..errors import ExplorerError
from ..capture.model import Model
from ..capture.tokens import Encoded
from ..from_scratch.scratch import Departures, tutorial_variant
from ..from_scratch.checks import FillOutcome, LayerParity, ParameterCounts
from ..capture.trace import Trace

_SWEEP = "_scratch_sweep"


def encoded_of(trace: Trace) -> Encoded:
    """The exact token ids a trace ran on (so a second forward sees the same, already-capped, input)."""
    return Encoded(trace.text, list(trace.token_ids), list(trace.tokens), trace.truncated_from)


# ---- parity ----------------------------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Running the model again, keeping each attention module's own output…", max_entries=16)
def _parity(_model: Model, _trace: Trace, key: tuple, layers: tuple[int, ...]) -> list[LayerParity]:
    return scratch_checks.parity(_model, encoded_of(_trace), mask=key[3], layers=list(layers))


def cached_parity(model: Model, trace: Trace, layers: list[int]) -> list[LayerParity]:
    """:func:`explorer.scratch_checks.parity` for the sidebar's text and mask, cached per layer set."""
    return _parity(model, trace, ui.trace_key(trace), tuple(layers))


# ---- the tutorial variant --------------------------------------------------------------------------------------------
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


@st.cache_data(show_spinner="Running the textbook and the tutorial variant on this layer…", max_entries=16)
def _variant_view(_model: Model, _trace: Trace, key: tuple, layer: int, head: int,
                  departures: Departures) -> VariantView:
    textbook, ours = scratch_checks.textbook_output_for(_model, _trace, layer)
    record = _trace.record(layer)
    x = _trace.x(layer).to(textbook.w_o.device)  # kept or rebuilt from the hidden state
    allowed = record.allowed_matrix().to(x.device)
    calibration = ui.trace_for(_model, scratch_checks.CALIBRATION_TEXT, key[3])  # the shared fit's text
    fit_x = calibration.x(layer).to(x.device)
    with torch.inference_mode():
        effect = scratch_checks.variant_effect(ours, tutorial_variant(textbook, departures, fit_x)(x, allowed))
        embed_scale = scratch_checks.attention_only(ours, textbook.d_model**-0.5, allowed)[1]
        counts = r2 = error = diversity_shared = None
        try:
            shared = tutorial_variant(textbook, Departures(shared_projection=True), fit_x)
            counts = scratch_checks.parameter_counts(textbook, shared)
            r2 = shared.shared_r2(textbook, x)  # on the user's text: out of sample
            diversity_shared = scratch_checks.head_diversity(shared(x, allowed).probs)
        except ExplorerError as exc:  # e.g. H·d_k ≠ d_model: shown as the reason, the rest still works
            error = str(exc)
        nothing_masked = record.mask_kind == "bidirectional"  # the table then masks a key itself
        fills = scratch_checks.mask_fill_table(ours, textbook.scale, None if nothing_masked else allowed)
    return VariantView(
        entropy_textbook=effect.entropy_textbook.numpy(),
        entropy_variant=effect.entropy_variant.numpy(),
        entropy_embed_scale=stats.entropy(embed_scale).float().cpu().numpy(),
        diversity_textbook=effect.diversity_textbook,
        diversity_variant=effect.diversity_variant,
        diversity_shared=diversity_shared,
        output_relative_diff=effect.output_relative_diff,
        map_textbook=effect.probs_textbook[head].numpy(),
        map_variant=effect.probs_variant[head].numpy(),
        counts=counts, shared_r2=r2, shared_error=error, fills=fills,
        scale_textbook=textbook.scale, scale_variant=textbook.d_model**-0.5,
    )


def cached_variant_view(model: Model, trace: Trace, layer: int, head: int, departures: Departures) -> VariantView:
    return _variant_view(model, trace, ui.trace_key(trace), layer, head, departures)


def fills_frame(fills: list[FillOutcome]) -> pd.DataFrame:
    """The mask-fill outcomes as a dtype × fill table of readable cells."""
    def cell(f: FillOutcome) -> str:
        if f.error:
            return "error: " + ("cannot be represented (overflow)" if "overflow" in f.error else f.error)
        return f"max |Δp| = {f.max_abs_diff:.1e}; padding row: {f.padding_row}"

    frame = pd.DataFrame([{"dtype": f.dtype, "fill": f.fill, "result": cell(f)} for f in fills])
    return frame.pivot(index="fill", columns="dtype", values="result").reindex(
        index=list(dict.fromkeys(f.fill for f in fills)), columns=list(dict.fromkeys(f.dtype for f in fills)))


# ---- the kernel sweep ------------------------------------------------------------------------------------------------
def sweep_key(model: Model, max_n: int, repeats: int, memory: bool) -> tuple:
    return (str(model.device), kernels.Shape.of_model(model), max_n, repeats, memory)


def stored_sweep(key: tuple) -> tuple[list[kernels.KernelTiming], list[kernels.Unavailable]] | None:
    """The sweep this session already ran with these settings, if any (timings are not redone on every rerun)."""
    stored = st.session_state.get(_SWEEP)
    return stored["result"] if stored and stored["key"] == key else None


def run_sweep(model: Model, key: tuple) -> tuple[list[kernels.KernelTiming], list[kernels.Unavailable]]:
    """Run the sweep with a progress bar and keep it in the session."""
    _, shape, max_n, repeats, memory = key
    lengths = [n for n in kernels.LENGTHS if n <= max_n]
    bar = st.progress(0.0, text="Timing…")
    result = kernels.sweep(model.device, shape, lengths, repeats=repeats, measure_memory=memory,
                           on_progress=lambda f, what: bar.progress(min(1.0, f), text=f"Timing {what}…"))
    bar.empty()
    st.session_state[_SWEEP] = {"key": key, "result": result}
    return result


def sweep_frame(rows: list[kernels.KernelTiming]) -> pd.DataFrame:
    """One row per (n, method): median ms, ratio to SDPA's default dispatch at that n, memory, agreement."""
    base = {r.n: r.seconds for r in rows if r.method == kernels.SDPA_DEFAULT}
    return pd.DataFrame([{
        "n": r.n,
        "method": r.method + ("" if r.dtype == "float32" else f" ({r.dtype})"),
        "median ms": r.seconds * 1e3,
        "× SDPA": r.seconds / base[r.n] if r.n in base else np.nan,
        "peak MiB": r.peak_bytes / 2**20 if r.peak_bytes is not None else np.nan,
        "n×n built": "yes" if r.materialises else "no",
        "max |Δ| vs scratch": r.max_abs_diff if r.max_abs_diff is not None else np.nan,
    } for r in rows])


def sweep_pivot(rows: list[kernels.KernelTiming], what: str = "time") -> pd.DataFrame:
    """n × method: "1.23 (0.5×)" median ms with the ratio to SDPA's default dispatch, or peak MiB."""
    frame = sweep_frame(rows)
    if what == "time":
        frame["cell"] = [f"{ms:.3g} ({ratio:.2f}×)" if ratio == ratio else f"{ms:.3g}"
                         for ms, ratio in zip(frame["median ms"], frame["× SDPA"])]
    else:
        frame["cell"] = [f"{mib:.3g}" if mib == mib else "—" for mib in frame["peak MiB"]]
    order = list(dict.fromkeys(frame["method"]))
    return frame.pivot(index="n", columns="method", values="cell")[order]


def parity_frame(parities: list[LayerParity]) -> pd.DataFrame:
    return pd.DataFrame([{
        "layer": p.layer, "output max |Δ|": p.output, "output scale": p.output_scale,
        "attention max |Δ|": p.probs, "q/k/v max |Δ|": p.qkv, "relative (worst)": p.worst,
        "within 1e-5": "✓" if p.passed() else "✗",
    } for p in parities])
