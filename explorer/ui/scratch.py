"""Streamlit parts of the from-scratch page: one function per tab (textbook vs the model, the tutorial variant, the
kernels), widget readers (``*_ui``) that return small frozen parameter sets, cached parity checks, the tutorial
variant's measurements, and the kernel sweep (run on a button press, kept per session).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from ..from_scratch import kernels, scratch, checks as scratch_checks
from ..capture.devices import cuda_available
from ..escape import md_escape
from ..figures import scratch as fs
from ..figures.heatmap import token_heatmap
from ..from_scratch.checks import PARITY_TOLERANCE
from . import resources, state
from .caching import cached
from .tabs import Tab
from ..capture.model import Model
from ..capture.tokens import Encoded
from ..from_scratch.scratch import Departures
from ..from_scratch.checks import FillOutcome, LayerParity
from ..from_scratch.variant import VariantView, variant_view
from ..capture.trace import Trace
from ..i18n import N_, _, language, number

_SWEEP = "_scratch_sweep"
# The textbook module builds every head's n × n scores and probabilities, and one tab holds a dozen such at once (the
# textbook, the variant, each departure, the mask fills in three dtypes): 36 MiB each for SmolLM2 at 1,024 tokens,
# 2.4 GiB each at 8,192. Longer texts are cut to their first tokens here, and the page says so.
SCRATCH_MAX_TOKENS = 1024


def page_trace() -> Trace:
    """The sidebar's text under its mask, cut to SCRATCH_MAX_TOKENS (and the app's cap), saying why when cut."""
    trace = resources.current_trace(max_tokens=SCRATCH_MAX_TOKENS)
    if resources.cut_by_page(trace, SCRATCH_MAX_TOKENS):
        elsewhere = min(trace.truncated_from, state.settings().max_tokens)  # what the other pages show of it
        st.info(_("The text has {n} tokens; this page works on the first {shown}. The textbook attention builds every "
                  "head's n × n scores and probabilities, about a dozen times over on this page: {gib} GiB each for "
                  "the {m} tokens the other pages show.").format(
            n=number(trace.truncated_from), shown=number(trace.n_tokens), m=number(elsewhere),
            gib=number(trace.n_heads * elsewhere**2 * 4 / 2**30, 1)), icon=":material/content_cut:")
    return trace


def encoded_of(trace: Trace) -> Encoded:
    """The exact token ids a trace ran on (so a second forward sees the same, already-capped, input)."""
    return Encoded(trace.text, list(trace.token_ids), list(trace.tokens), trace.truncated_from)


# ---- parity ----------------------------------------------------------------------------------------------------------
@cached(max_entries=16)
def _parity(model: Model, trace: Trace, layers: tuple[int, ...], lang: str) -> list[LayerParity]:
    # ``lang``: the result holds words (where it compared), so each language gets its own entry
    return scratch_checks.parity(model, encoded_of(trace), mask=resources.rerun_mask(trace), layers=list(layers))


def cached_parity(model: Model, trace: Trace, layers: list[int]) -> list[LayerParity]:
    """:func:`explorer.from_scratch.checks.parity` for a trace's tokens and mask, cached per trace and layer set."""
    with st.spinner(_("Running the model again, keeping each attention module's own output…")):
        return _parity(model, trace, tuple(layers), language())


# ---- the tutorial variant --------------------------------------------------------------------------------------------
@cached(max_entries=16)
def _variant_view(model: Model, trace: Trace, layer: int, head: int, departures: Departures,
                  lang: str) -> VariantView:
    # ``lang``: the view holds words (an engine error, the fill outcomes), so each language gets its own entry
    calibration = resources.trace_for(model, scratch_checks.CALIBRATION_TEXT, resources.rerun_mask(trace))
    return variant_view(model, trace, layer, head, departures, calibration)


def cached_variant_view(model: Model, trace: Trace, layer: int, head: int, departures: Departures) -> VariantView:
    with st.spinner(_("Running the textbook and the tutorial variant on this layer…")):
        return _variant_view(model, trace, layer, head, departures, language())


def fills_frame(fills: list[FillOutcome]) -> pd.DataFrame:
    """The mask-fill outcomes as a dtype × fill table of readable cells."""
    def cell(f: FillOutcome) -> str:
        if f.error:
            return _("error: {why}").format(why=_("cannot be represented (overflow)") if "overflow" in f.error
                                            else f.error)
        return _("max |Δp| = {diff}; padding row: {row}").format(diff=f"{f.max_abs_diff:.1e}", row=_(f.padding_row))

    frame = pd.DataFrame([{"dtype": f.dtype, "fill": f.fill, "result": cell(f)} for f in fills])
    table = frame.pivot(index="fill", columns="dtype", values="result").reindex(
        index=list(dict.fromkeys(f.fill for f in fills)), columns=list(dict.fromkeys(f.dtype for f in fills)))
    return table.rename(index=_).rename_axis(index=_("value at masked scores"), columns=_("dtype"))


# ---- the kernel sweep ------------------------------------------------------------------------------------------------
def sweep_key(model: Model, max_n: int, repeats: int, memory: bool) -> tuple:
    return (str(model.device), kernels.Shape.of_model(model), max_n, repeats, memory)


def stored_sweep(key: tuple) -> tuple[list[kernels.KernelTiming], list[kernels.Unavailable]] | None:
    """The sweep this session already ran with these settings, if any (timings are not redone on every rerun)."""
    stored = st.session_state.get(_SWEEP)
    return stored["result"] if stored and stored["key"] == key else None


def run_sweep(model: Model, key: tuple) -> tuple[list[kernels.KernelTiming], list[kernels.Unavailable]]:
    """Run the sweep with a progress bar and keep it in the session."""
    shape, max_n, repeats, memory = key[1:]
    lengths = [n for n in kernels.LENGTHS if n <= max_n]
    bar = st.progress(0.0, text=_("Timing…"))
    result = kernels.sweep(model.device, shape, lengths, repeats=repeats, measure_memory=memory,
                           on_progress=lambda f, what: bar.progress(min(1.0, f),
                                                                    text=_("Timing {what}…").format(what=what)))
    bar.empty()
    st.session_state[_SWEEP] = {"key": key, "result": result}
    return result


def sweep_frame(rows: list[kernels.KernelTiming]) -> pd.DataFrame:
    """One row per (n, method): median ms, ratio to SDPA's default dispatch at that n, memory, agreement."""
    base = {r.n: r.seconds for r in rows if r.method == kernels.SDPA_DEFAULT}
    return pd.DataFrame([{
        "n": r.n,
        N_("method"): _(r.method) + ("" if r.dtype == "float32" else f" ({r.dtype})"),
        N_("median ms"): r.seconds * 1e3,
        N_("× SDPA"): r.seconds / base[r.n] if r.n in base else np.nan,
        N_("peak MiB"): r.peak_bytes / 2**20 if r.peak_bytes is not None else np.nan,
        N_("n×n built"): _("yes") if r.materialises else _("no"),
        N_("max |Δ| vs scratch"): r.max_abs_diff if r.max_abs_diff is not None else np.nan,
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
    return frame.pivot(index="n", columns="method", values="cell")[order].rename_axis(columns=_("method"))


PARITY_NUMBERS = (N_("output max |Δ|"), N_("attention max |Δ|"), N_("q/k/v max |Δ|"), N_("relative (worst)"))


def parity_frame(parities: list[LayerParity]) -> pd.DataFrame:
    return pd.DataFrame([{
        N_("layer"): p.layer, N_("output max |Δ|"): p.output, N_("output scale"): p.output_scale,
        N_("attention max |Δ|"): p.probs, N_("q/k/v max |Δ|"): p.qkv, N_("relative (worst)"): p.worst,
        N_("within 1e-5"): "✓" if p.passed() else "✗",
    } for p in parities])


# ---- tab 1: textbook vs the model ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextbookParams:
    all_layers: bool  # also check every other layer (one more forward)


def textbook_ui() -> TextbookParams:
    return TextbookParams(all_layers=st.toggle(
        _("Check every layer"), key="scratch_all_layers",
        help=_("Loads each layer's weights in turn and compares it with the model (one more forward).")))


def describe_module(module: scratch.MultiHeadAttention) -> tuple[str, str]:
    """How the from-scratch module handles positions and key/value heads, in words."""
    if isinstance(module.rope, scratch.Rotary):
        rope = _("RoPE from scratch (rotate-half, the model's frequencies)")
    elif module.rope is not None:
        rope = _("RoPE: the model's own function")
    else:
        rope = _("no RoPE (positions are added to the embeddings before layer 0)")
    if module.group_size > 1:
        heads = _("{n} query heads read {kv} key/value heads (groups of {g})").format(
            n=module.n_heads, kv=module.n_kv_heads, g=module.group_size)
    else:
        heads = _("{n} heads, each with its own keys and values").format(n=module.n_heads)
    return rope, heads


def textbook_section(model: Model, trace: Trace, layer: int) -> None:
    """The textbook formula, the from-scratch module loaded with this layer's weights, and its parity with the model."""
    st.latex(r"\mathrm{head}_h = \mathrm{softmax}\!\left(\frac{(xW_Q^h)(xW_K^h)^\top}{\sqrt{d_k}} + M\right)"
             r"xW_V^h")
    st.latex(r"\mathrm{out} = [\mathrm{head}_1;\dots;\mathrm{head}_H]\,W_O")
    module = scratch.MultiHeadAttention.from_model(model, layer)
    rope, heads = describe_module(module)
    st.caption(_("`explorer/from_scratch/scratch.py` · `MultiHeadAttention` loaded with layer {layer}'s weights: "
                 "d = {d}, d_k = {dk}, {heads}; {rope}. It runs in plain torch on **{device}**, in float32, on this "
                 "layer's input x from the trace, under the mask the trace ran with.").format(
        layer=layer, d=module.d_model, dk=module.head_dim, heads=heads, rope=rope, device=model.device))
    with st.expander(_("The code: `attention_core` and `MultiHeadAttention.forward`")):
        st.code("\n".join(inspect.getsource(f) for f in (scratch.attention_core, scratch.MultiHeadAttention.forward)),
                language="python")
    parity_section(model, trace, layer, module)
    if textbook_ui().all_layers:
        every_layer(model, trace)


def parity_section(model: Model, trace: Trace, layer: int, module: scratch.MultiHeadAttention) -> None:
    (parity,) = cached_parity(model, trace, [layer])
    st.subheader(_("Layer {layer}: the same numbers as the model").format(layer=layer))
    metrics = st.container(horizontal=True)  # wraps on narrow screens
    metrics.metric(_("Output max |Δ|"), f"{parity.output:.1e}", width=170,
                   help=_("Compared {where}.").format(where=_(parity.compared_at)))
    metrics.metric(_("Relative to scale"), f"{parity.output / parity.output_scale:.1e}", width=170,
                   help=_("max |Δ| ÷ max(1, max |value|) = ÷ {scale}. float32 keeps 24 bits: a value of 100 is only "
                          "known to about ±1e-5, so large outputs are compared relative to their size.").format(
                       scale=f"{parity.output_scale:.3g}"))
    metrics.metric(_("Attention max |Δ|"), f"{parity.probs:.1e}", width=170, help=_("Against the trace's exact maps."))
    metrics.metric(_("Within {tolerance}").format(tolerance=f"{PARITY_TOLERANCE:.0e}"),
                   _("yes ✓") if parity.passed() else _("no ✗"), width=170)
    module_name = type(model.attention_modules[layer]).__name__
    qkv = _("q/k/v after RoPE") if module.rope is not None else "q/k/v"
    st.caption(_("Reference: the output of the model's own attention module (`{module}`), captured with a forward hook "
                 "during a second run of your text; compared {where}. {qkv} differ from the trace's recorded ones by "
                 "at most {diff}.").format(module=module_name, where=_(parity.compared_at), qkv=qkv,
                                           diff=f"{parity.qkv:.1e}"))


def every_layer(model: Model, trace: Trace) -> None:
    parities = cached_parity(model, trace, list(range(trace.n_layers)))
    passed = sum(p.passed() for p in parities)
    st.plotly_chart(fs.parity_chart(parities), key="scratch_parity_chart")
    st.caption(_("**{passed} of {n}** layers agree within {tolerance}; the worst is {worst}.").format(
        passed=passed, n=len(parities), tolerance=f"{PARITY_TOLERANCE:.0e}", worst=f"{max(p.worst for p in parities):.1e}"))
    st.dataframe(parity_frame(parities), hide_index=True, height=240, column_config=translated_columns(
        parity_frame(parities), {c: "%.1e" for c in PARITY_NUMBERS}))


def translated_columns(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> dict:
    """Column configs that show each column's (English, ``N_``-marked) name in the reader's language."""
    formats = formats or {}
    return {c: st.column_config.NumberColumn(_(c), format=formats[c]) if c in formats else st.column_config.Column(_(c))
            for c in frame.columns}


# ---- tab 2: the tutorial variant -------------------------------------------------------------------------------------
TUTORIAL_CODE = '''\
# (2) one small d_k × d_k matrix per projection, shared by every head
self.values  = nn.Linear(self.head_dim, self.head_dim, bias=False)
self.keys    = nn.Linear(self.head_dim, self.head_dim, bias=False)
self.queries = nn.Linear(self.head_dim, self.head_dim, bias=False)
...
energy = torch.einsum("nqhd,nkhd->nhqk", [queries, keys])
# (3) a large negative number instead of −∞
energy = energy.masked_fill(mask == 0, float("-1e20"))
# (1) √(embedding size) instead of √d_k
attention = torch.softmax(energy / (self.embed_size ** (1 / 2)), dim=3)'''


def departures_ui() -> Departures:
    """The tutorial's three departures from the textbook, each switched on or off."""
    st.markdown(_("A much-copied *transformer from scratch* tutorial writes self-attention like this (excerpt). "
                  "Three lines depart from the textbook; switch each on or off:"))
    st.code(TUTORIAL_CODE, language="python")
    row = st.container(horizontal=True)
    return Departures(
        embed_scale=row.toggle(_("(1) ÷ √(embedding size)"), value=True, key="scratch_dep_scale"),
        shared_projection=row.toggle(_("(2) one shared d_k × d_k projection"), value=True, key="scratch_dep_shared"),
        large_negative_fill=row.toggle(_("(3) mask fill −1e20"), value=True, key="scratch_dep_fill"),
    )


def variant_section(model: Model, trace: Trace, layer: int, head: int) -> None:
    """The variant against the textbook on this layer, then each departure on its own."""
    departures = departures_ui()
    view = cached_variant_view(model, trace, layer, head, departures)
    variant_summary(trace, layer, head, departures, view)
    st.subheader(_("Each departure on its own"))
    embed_scale_part(model, trace, view)
    shared_projection_part(view)
    fill_part(view)


def variant_summary(trace: Trace, layer: int, head: int, departures: Departures, view: VariantView) -> None:
    st.subheader(_("Layer {layer} on your text, textbook vs this variant").format(layer=layer))
    versus = _("{delta} vs textbook")
    metrics = st.container(horizontal=True)
    metrics.metric(_("Output differs by"), f"{view.output_relative_diff:.1%}", width=200,
                   help=_("The relative difference ‖out_variant − out‖ ÷ ‖out‖."))
    metrics.metric(_("Mean entropy (nats)"), f"{view.entropy_variant.mean():.3f}", width=200,
                   delta=versus.format(delta=f"{view.entropy_variant.mean() - view.entropy_textbook.mean():+.3f}"),
                   delta_color="off")
    metrics.metric(_("Head diversity"), f"{view.diversity_variant:.3f}", width=200,
                   delta=versus.format(delta=f"{view.diversity_variant - view.diversity_textbook:+.3f}"),
                   delta_color="off",
                   help=_("Total-variation distance between two heads' attention rows, averaged over queries and "
                          "pairs of heads: 0 = all heads attend alike, 1 = never to the same keys."))
    if departures.shared_projection and view.shared_error is None:
        st.caption(_("With (2) on, the variant cannot hold the real weights. It gets the shared projection that best "
                     "fits this layer (least squares) on a fixed calibration paragraph, and is measured here on your "
                     "text: the closest the tutorial's layer can come."))
    uniform = float(trace.allowed(layer).sum(-1).double().log().mean())  # entropy of uniform attention
    st.plotly_chart(fs.entropy_chart(view.entropy_textbook, view.entropy_variant, uniform),
                    key="scratch_entropy_chart")
    maps = st.container(horizontal=True)  # side by side where they fit, stacked where not
    for matrix, name, title in ((view.map_textbook, "textbook", _("Head {head}, textbook")),
                                (view.map_variant, "variant", _("Head {head}, variant"))):
        maps.plotly_chart(token_heatmap(matrix, trace.tokens, trace.tokens, zmin=0.0, zmax=1.0, showscale=False,
                                       title=title.format(head=head), height=420), key=f"scratch_map_{name}",
                          width=480)


def embed_scale_part(model: Model, trace: Trace, view: VariantView) -> None:
    rises = view.entropy_embed_scale - view.entropy_textbook
    st.markdown(_("**(1) ÷ √(embedding size).** The scores are multiplied by 1/√{d_model} = {variant} instead of "
                  "1/√{d_k} = {textbook}: {ratio}× smaller, so every softmax is flatter (a higher temperature; a row's "
                  "entropy can only rise as its scores shrink). On your text the mean entropy rises in **{risen} of "
                  "{n}** heads, by {mean} nats on average:").format(
        d_model=model.config.hidden_size, variant=f"{view.scale_variant:.4f}", d_k=trace.head_dim,
        textbook=f"{view.scale_textbook:.4f}", ratio=f"{view.scale_textbook / view.scale_variant:.2f}",
        risen=int((rises > 0).sum()), n=len(rises), mean=f"{rises.mean():.3f}"))
    frame = pd.DataFrame({N_("head"): list(range(len(rises))), N_("textbook (nats)"): view.entropy_textbook,
                          N_("÷ √(embedding size)"): view.entropy_embed_scale, N_("rise"): rises})
    st.dataframe(frame, hide_index=True, height=38 + 35 * len(rises), width=560, column_config=translated_columns(
        frame, {c: "%.3f" for c in ("textbook (nats)", "÷ √(embedding size)", "rise")}))


def shared_projection_part(view: VariantView) -> None:
    st.markdown(_("**(2) One shared d_k × d_k projection.** The tutorial cuts x into H slices of d_k features and maps "
                  "every slice with the *same* matrix, so head h only ever reads features h·d_k … h·d_k + d_k − 1, "
                  "all heads apply one function, and none can pick what to look at from the whole embedding."))
    if view.counts is None:
        st.info(_("Not applicable to this model: {why}").format(why=md_escape(view.shared_error)))
        return
    c = view.counts
    frame = pd.DataFrame({N_("parameters"): ["W_Q, W_K, W_V", _("W_O (kept full)"), _("total")],
                          N_("textbook (this layer)"): [c.qkv_textbook, c.output, c.textbook],
                          N_("tutorial"): [c.qkv_tutorial, c.output, c.tutorial]})
    st.dataframe(frame, hide_index=True, width=560, column_config=translated_columns(frame))
    st.caption(_("The shared version keeps {kept} of the Q/K/V parameters. The best shared fit explains R² = {q} (Q), "
                 "{k} (K), {v} (V) of the real heads' projections of your text (fitted on another text); 1 would mean "
                 "every head's matrix was the same one applied to its slice. With it, head diversity is {shared} "
                 "(textbook {textbook}).").format(
        kept=f"{c.qkv_tutorial / c.qkv_textbook:.1%}", q=f"{view.shared_r2['q']:.2f}", k=f"{view.shared_r2['k']:.2f}",
        v=f"{view.shared_r2['v']:.2f}", shared=f"{view.diversity_shared:.3f}",
        textbook=f"{view.diversity_textbook:.3f}"))


def fill_part(view: VariantView) -> None:
    st.markdown(_("**(3) Masked scores set to −1e20 instead of −∞.** After a float32 softmax both give exactly 0: "
                  "e^(−1e20 − max) underflows. In float16 (what `.half()` or autocast runs) −1e20 and −1e9 cannot be "
                  "represented and `masked_fill` raises; the safe finite choice is the dtype's lowest value. Where "
                  "they do differ is a query that may see *no* key (a padding row): −∞ gives NaN, a finite fill a "
                  "uniform row."))
    st.dataframe(fills_frame(view.fills))
    st.caption(_("Each cell: the largest |Δ| of the attention probabilities of this layer on your text against −∞ in "
                 "the same dtype, and what a fully masked row becomes."))


# ---- tab 3: kernels and devices --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepParams:
    key: tuple  # what the sweep is kept under (see :func:`sweep_key`)
    run: bool  # the button was pressed


def sweep_ui(model: Model, shape: kernels.Shape) -> SweepParams:
    on_cpu = model.device.type == "cpu"
    row = st.container(horizontal=True, vertical_alignment="bottom")
    max_n = row.select_slider(_("Longest n"), kernels.LENGTHS, value=1024 if on_cpu else 4096, key="scratch_max_n",
                              width=300,
                              help=_("On the CPU, n = 4,096 takes a while: the from-scratch path builds {h} × 4096² "
                                     "floats ≈ {gib} GiB twice.").format(
                                  h=shape.n_heads, gib=f"{shape.n_heads * 4096**2 * 4 / 2**30:.1f}"))
    repeats = row.number_input(_("Repeats (median)"), 1, 20, 3, key="scratch_repeats", width=160)
    memory = row.checkbox(_("Measure memory"), value=True, key="scratch_memory",
                          help=_("CUDA: the allocator's peak. CPU: torch's profiler, from every allocation and free."))
    key = sweep_key(model, int(max_n), int(repeats), bool(memory))
    run = row.button(_("Time the kernels"), type="primary", key="scratch_run_sweep", icon=":material/timer:")
    return SweepParams(key, bool(run))


def kernels_section(model: Model) -> None:
    """The online softmax, the kernel sweep (time and memory against n) and the CPU↔CUDA agreement."""
    st.markdown(_(
        "The textbook computes the whole score matrix QKᵀ: **H × n × n** numbers, then a softmax over each row, then "
        "multiplies by V. Fused kernels (FlashAttention, memory-efficient attention, and PyTorch's CPU flash kernel) "
        "never build it. They load a tile of keys at a time and keep, for each query, only a running maximum m, a "
        "running sum ℓ of exponentials and a running output o, rescaling them when a new tile raises the maximum "
        "(the *online softmax*):"))
    st.latex(r"m' = \max(m, \max_j s_{ij}),\qquad \ell' = \ell\,e^{m-m'} + \sum_j e^{s_{ij}-m'}")
    st.latex(r"o' = o\,e^{m-m'} + \sum_j e^{s_{ij}-m'} v_j,\qquad \mathrm{out}_i = o_i/\ell_i")
    st.markdown(_("The result is exactly softmax(QKᵀ/√d_k + M)V, with O(n·d_k) memory instead of O(n²), and far fewer "
                  "trips to memory. At the end, m + ln ℓ is each row's log-sum-exp: the engine's recorder keeps it, "
                  "so any head's map can be rebuilt later without ever being stored."))
    shape = kernels.Shape.of_model(model)
    params = sweep_ui(model, shape)
    mask = _("causal mask") if shape.causal else _("no mask")
    st.caption(_("Shape: {h} heads × d_k = {dk}, {mask}, float32, seeded random inputs, on **{device}**. "
                 "`benchmarks/bench_kernels.py` prints the same comparison as ratios.").format(
        h=shape.n_heads, dk=shape.head_dim, mask=mask, device=model.device))
    result = run_sweep(model, params.key) if params.run else stored_sweep(params.key)
    if result is None:
        st.info(_("Press **Time the kernels** to run the sweep (kept for this session)."))
    else:
        sweep_results(*result)
    devices_part(shape)


def sweep_results(rows: list[kernels.KernelTiming], missing: list[kernels.Unavailable]) -> None:
    has_memory = any(r.peak_bytes is not None for r in rows)
    st.markdown(_("**Median time, ms** (× SDPA's default dispatch)"))
    st.dataframe(sweep_pivot(rows, "time"), height="auto")
    if has_memory:
        st.markdown(_("**Peak memory, MiB** above the inputs"))
        st.dataframe(sweep_pivot(rows, "memory"), height="auto")
    with st.expander(_("Every number (and the agreement with the from-scratch output)")):
        frame = sweep_frame(rows)
        st.dataframe(frame, hide_index=True, column_config=translated_columns(frame, {
            "median ms": "%.3f", "× SDPA": "%.2f×", "peak MiB": "%.2f", "max |Δ| vs scratch": "%.1e"}))
    charts = st.container(horizontal=True)  # side by side where they fit, stacked where not
    charts.plotly_chart(fs.sweep_chart(rows, "seconds"), key="scratch_time_chart", width=480)
    if has_memory:
        charts.plotly_chart(fs.sweep_chart(rows, "peak_bytes"), key="scratch_memory_chart", width=480)
    st.caption(_("Dashed lines build the n×n matrix (from scratch, SDPA's math back end); their memory grows as n². "
                 "Peak memory counts everything a call allocates beyond its inputs, output included."))
    for gone in missing:
        st.caption(_("Not available here: **{method}** ({reason})").format(method=_(gone.method), reason=gone.reason))


def devices_part(shape: kernels.Shape) -> None:
    st.subheader(_("CPU and CUDA"))
    if not cuda_available():
        st.info(_("No GPU is visible to this server, so the CPU↔CUDA agreement is not measured here (its test skips "
                  "with that reason). On a GPU machine this section compares every method's float32 output on both "
                  "devices from identical inputs."))
    elif st.button(_("Compare CPU and CUDA outputs"), key="scratch_devices"):
        agreement = kernels.device_agreement(256, shape)
        st.dataframe({_("method"): list(agreement), _("max |Δ| CPU vs CUDA (float32)"): list(agreement.values())},
                     hide_index=True)


# ---- the page's tabs -------------------------------------------------------------------------------------------------
TABS = [N_("Textbook vs the model"), N_("The tutorial variant"), N_("Kernels and devices")]


def tabs(model: Model, trace: Trace, layer: int, head: int) -> list[Tab]:
    """The page's tabs on ``trace`` (see :func:`page_trace`) and the chosen layer and head."""
    draws = (lambda: textbook_section(model, trace, layer), lambda: variant_section(model, trace, layer, head),
             lambda: kernels_section(model))
    return list(zip(TABS, draws))
