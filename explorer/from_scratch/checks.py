"""Checking the from-scratch attention against the model, and measuring the tutorial variant's departures on a text.

* :func:`parity` runs the model once on a text, capturing each attention module's own output with a forward hook,
  and compares :class:`explorer.from_scratch.scratch.MultiHeadAttention` (loaded with that layer's weights, fed that layer's
  input from the same trace) with it, layer by layer.
* :func:`variant_effect` (entropy per head is :func:`explorer.analysis.stats.entropy`), :func:`head_diversity`,
  :func:`parameter_counts` and :func:`mask_fill_table` measure what each of the tutorial's departures does.
"""

from __future__ import annotations

import threading
import weakref
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from ..capture.model import Model
from ..capture.tokens import Encoded
from ..capture.projections import layer_projections
from ..capture.gqa import repeat_kv
from .scratch import NEG_INF, TUTORIAL_FILL, AttentionOutput, MultiHeadAttention, TutorialAttention, attention_core
from ..analysis.stats import entropy
from ..capture.trace import Trace
from ..i18n import N_

PARITY_TOLERANCE = 1e-5
# A fixed text (≈ 200 tokens, English and Chinese) to fit the tutorial's shared projection on, so that its effect is
# then measured on the user's text out of sample.
CALIBRATION_TEXT = (
    "Attention lets every token look at every other token and decide what matters. In a causal language model each "
    "position may only look back, which is what makes generation possible one token at a time. The weights of a head "
    "are learned: some heads follow the previous word, some copy what came after an earlier copy of the current word, "
    "and many rest on the first token when nothing else is useful. On Monday the committee met in Geneva to discuss "
    "the budget; after three hours, it agreed to fund the new library, 12 laboratories and 4,500 scholarships. "
    "大规模语言模型通过注意力机制在上下文中寻找相关的信息。每个注意力头都有自己的查询、键和值投影。 "
    "The quick brown fox jumps over the lazy dog, and then the dog, no longer lazy, chases the fox across the field."
)

# ---- the model's own attention output ----------------------------------------------------------------------------
# One forward hook per attention module, registered once per model and active only inside capture_outputs(): a
# ContextVar holds the dict to fill, so concurrent sessions sharing the model never see each other's tensors.
_CAPTURE: ContextVar[dict[int, torch.Tensor] | None] = ContextVar("explorer_scratch_capture", default=None)
_HOOKED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
_HOOK_LOCK = threading.Lock()


def _capture_output(module: torch.nn.Module, args: tuple, output: object) -> None:
    store = _CAPTURE.get()
    if store is None:
        return
    out = output[0] if isinstance(output, tuple) else output
    store[id(module)] = out[0].detach()  # batch item 0: (T, d) after W_o, or (T, H·D) for BERT


def _ensure_hooks(model: Model) -> None:
    with _HOOK_LOCK:
        for module in model.attention_modules:
            if module not in _HOOKED:
                module.register_forward_hook(_capture_output)
                _HOOKED.add(module)


def trace_with_outputs(model: Model, encoded: Encoded, mask: str | None = None) -> tuple[Trace, list[torch.Tensor]]:
    """One traced forward that also keeps each attention module's own output (on the model's device)."""
    _ensure_hooks(model)
    store: dict[int, torch.Tensor] = {}
    token = _CAPTURE.set(store)
    try:
        trace = model.trace_ids(encoded, mask=mask, keep_inputs=True)
    finally:
        _CAPTURE.reset(token)
    return trace, [store[id(m)] for m in model.attention_modules]


# ---- parity -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerParity:
    """Largest absolute differences between the from-scratch module and the model at one layer.

    ``output``: against the attention module's own output, compared at ``compared_at``; ``probs``: against the
    trace's exact maps; ``qkv``: against the trace's recorded (post-RoPE) q, k, v. ``output_scale`` and
    ``qkv_scale`` are max(1, largest |value|) of those references: float32 carries 24 bits, so a value of 180 is
    only known to ±1e-5 and agreement is judged relative to the scale (probabilities are ≤ 1: absolute).
    """

    layer: int
    output: float
    probs: float
    qkv: float
    output_scale: float
    qkv_scale: float
    compared_at: str

    @property
    def worst(self) -> float:
        """The largest scale-relative difference of the three."""
        return max(self.output / self.output_scale, self.probs, self.qkv / self.qkv_scale)

    def passed(self, tolerance: float = PARITY_TOLERANCE) -> bool:
        return self.worst <= tolerance


def run_scratch(module: MultiHeadAttention, trace: Trace, layer: int) -> AttentionOutput:
    """The module on ``layer``'s input from the trace, under the mask the trace ran with (float32)."""
    x = trace.x(layer).to(module.w_o.device)  # (T, d)
    allowed = trace.allowed(layer).to(module.w_o.device)  # (T, T)
    with torch.inference_mode():
        return module(x, allowed=allowed)


def layer_parity(model: Model, trace: Trace, module_output: torch.Tensor, layer: int) -> LayerParity:
    """Compare the textbook module, loaded with ``layer``'s weights, with the model at that layer."""
    _, ours = textbook_output_for(model, trace, layer)
    record = trace.layer(layer)  # q (H, T, D), k and v (H_kv, T, D), float32
    q, k, v = record.q(), record.k(), record.v()
    in_module = layer_projections(model, layer).output_in_module
    mine = ours.out if in_module else ours.concat  # BERT's module stops before W_o: compare the concatenated heads
    diff = lambda a, b: float((a.float() - b.float().to(a.device)).abs().max())  # noqa: E731
    scale = lambda *ts: max(1.0, *(float(t.abs().max()) for t in ts))  # noqa: E731
    return LayerParity(
        layer=layer,
        output=diff(mine, module_output),
        probs=diff(ours.probs, trace.attention(layer)),
        qkv=max(diff(ours.q, q), diff(ours.k, k), diff(ours.v, v)),
        output_scale=scale(module_output),
        qkv_scale=scale(q, k, v),
        # marked, not translated: the UI translates it where shown (a cached parity must not keep one language)
        compared_at=N_("after W_o") if in_module else N_("heads concatenated, before W_o (BERT applies W_o in its next block)"),
    )


def parity(model: Model, encoded: Encoded, mask: str | None = None,
           layers: list[int] | None = None) -> list[LayerParity]:
    """:class:`LayerParity` for ``layers`` (default: all), from one traced forward of ``encoded``."""
    trace, outputs = trace_with_outputs(model, encoded, mask)
    return [layer_parity(model, trace, outputs[i], i) for i in (range(trace.n_layers) if layers is None else layers)]


# ---- measuring the departures ---------------------------------------------------------------------------------------
def head_diversity(probs: torch.Tensor) -> float:
    """How different a layer's heads are: total-variation distance ½Σ_j|p_ij − p'_ij| between two heads' rows,
    averaged over queries and over every pair of heads. 0: all heads attend alike; 1: never to the same keys."""
    H = probs.shape[-3]
    if H < 2:
        return 0.0
    total, pairs = 0.0, 0
    for h in range(H - 1):
        tv = 0.5 * (probs[..., h : h + 1, :, :] - probs[..., h + 1 :, :, :]).abs().sum(-1)  # (…, H−h−1, T)
        total += float(tv.mean(-1).sum())
        pairs += H - 1 - h
    return total / pairs


@dataclass(frozen=True)
class ParameterCounts:
    """Attention parameters of the real layer (as the textbook module holds them) and of the tutorial's version."""

    textbook: int
    tutorial: int
    qkv_textbook: int
    qkv_tutorial: int
    output: int  # W_o (+ b_o), the same in both


def parameter_counts(textbook: MultiHeadAttention, tutorial: TutorialAttention) -> ParameterCounts:
    """Counted from the modules' own parameters (``numel``), not from a formula."""
    output = textbook.w_o.numel() + (textbook.b_o.numel() if textbook.b_o is not None else 0)
    norms = sum(p.numel() for m in (textbook.q_norm, textbook.k_norm) if m is not None for p in m.parameters())
    return ParameterCounts(
        textbook=textbook.n_parameters(),
        tutorial=tutorial.n_parameters(),
        qkv_textbook=textbook.n_parameters() - output - norms,
        qkv_tutorial=tutorial.n_parameters() - output - norms,
        output=output,
    )


MASK_FILLS: dict[str, float] = {
    N_("−∞ (textbook)"): NEG_INF,  # names marked, translated where shown
    N_("−1e20 (tutorial)"): TUTORIAL_FILL,
    "−1e9": -1e9,
    N_("dtype's lowest finite"): float("nan"),  # placeholder: torch.finfo(dtype).min, resolved per dtype
}
MASK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class FillOutcome:
    """One (dtype, fill) cell: the largest |Δp| against −∞ in the same dtype, or the error torch raised."""

    dtype: str
    fill: str
    max_abs_diff: float | None
    error: str | None
    padding_row: str  # what a query that may see no key gets: "NaN" or "uniform"


def mask_fill_table(ours: AttentionOutput, scale: float, allowed: torch.Tensor | None) -> list[FillOutcome]:
    """Softmax of the real scores (q, k of ``ours``) masked with each fill value, in each dtype.

    The scores and the softmax run in that dtype, as they would under ``.half()`` or autocast. A fully masked row
    (as for a padding query) is checked separately: −∞ gives NaN there, any finite fill a uniform row.
    """
    q, k = ours.q, repeat_kv(ours.k, ours.q.shape[-3] // ours.k.shape[-3])  # (H, T, D) each
    T = q.shape[-2]
    if allowed is None:  # an encoder: nothing is masked in its own mask, so mask the last key to have something
        allowed = torch.ones(T, T, dtype=torch.bool, device=q.device)
        allowed[:, -1] = T == 1
    padded = allowed.clone()
    padded[0] = False  # query 0 may see nothing
    out = []
    for dtype_name, dtype in MASK_DTYPES.items():
        qd, kd = q.to(dtype), k.to(dtype)
        reference = _masked_softmax(qd, kd, scale, allowed, NEG_INF)
        for fill_name, fill in MASK_FILLS.items():
            value = torch.finfo(dtype).min if fill != fill else fill  # nan placeholder -> the dtype's lowest
            try:
                probs = _masked_softmax(qd, kd, scale, allowed, value)
                pad_row = _masked_softmax(qd[:, :1], kd, scale, padded[:1], value)
            except RuntimeError as exc:
                out.append(FillOutcome(dtype_name, fill_name, None, str(exc).split("\n")[0], "—"))
                continue
            diff = float((probs.float() - reference.float()).abs().max())
            pad = "NaN" if bool(pad_row.isnan().any()) else N_("uniform")
            out.append(FillOutcome(dtype_name, fill_name, diff, None, pad))
    return out


def _masked_softmax(q: torch.Tensor, k: torch.Tensor, scale: float, allowed: torch.Tensor, fill: float) -> torch.Tensor:
    scores = (q @ k.transpose(-2, -1)) * scale  # (H, T, S) in q's dtype
    return torch.softmax(scores.masked_fill(~allowed, fill), dim=-1)


@dataclass
class VariantEffect:
    """The tutorial variant against the textbook on one layer and text."""

    entropy_textbook: torch.Tensor  # (H,)
    entropy_variant: torch.Tensor  # (H,)
    diversity_textbook: float
    diversity_variant: float
    output_relative_diff: float  # ‖out_variant − out‖ / ‖out‖
    probs_textbook: torch.Tensor  # (H, T, T)
    probs_variant: torch.Tensor


def variant_effect(textbook_out: AttentionOutput, variant_out: AttentionOutput) -> VariantEffect:
    """Entropy per head, head diversity and output difference, textbook vs variant (same input and mask)."""
    diff = (variant_out.out - textbook_out.out).norm() / textbook_out.out.norm().clamp_min(1e-30)
    return VariantEffect(
        entropy_textbook=entropy(textbook_out.probs).float().cpu(),
        entropy_variant=entropy(variant_out.probs).float().cpu(),
        diversity_textbook=head_diversity(textbook_out.probs),
        diversity_variant=head_diversity(variant_out.probs),
        output_relative_diff=float(diff),
        probs_textbook=textbook_out.probs.float().cpu(),
        probs_variant=variant_out.probs.float().cpu(),
    )


def textbook_output_for(model: Model, trace: Trace, layer: int) -> tuple[MultiHeadAttention, AttentionOutput]:
    """The textbook module of ``layer`` and its output on the trace's input."""
    module = MultiHeadAttention.from_model(model, layer)
    return module, run_scratch(module, trace, layer)


def attention_only(ours: AttentionOutput, scale: float, allowed: torch.Tensor | None,
                   fill: float = NEG_INF) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-run just the attention core on ``ours``' q, k, v (for what-ifs that change only scale or fill)."""
    g = ours.q.shape[-3] // ours.k.shape[-3]
    k, v = repeat_kv(ours.k, g), repeat_kv(ours.v, g)  # (H, T, D): one per query head
    return attention_core(ours.q, k, v, scale, allowed, fill)
