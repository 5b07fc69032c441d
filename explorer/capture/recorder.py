"""The one attention implementation behind every model: a fused-kernel attention that records what it used.

``transformers`` calls :func:`recording_attention` for every attention layer of any model that dispatches through
its ``AttentionInterface`` (Llama, Qwen, Mistral, GPT-2, BERT, ...). It computes the output with a fused kernel
that also returns the log-sum-exp of each score row, so the ``(n, n)`` probabilities never have to exist during
the forward pass. It keeps Q (after RoPE), K, V, the scale, the mask and that log-sum-exp; any head's exact map is
rebuilt later as ``exp(q kᵀ·scale + mask − lse)`` (see :mod:`explorer.capture.trace`). Which keys a query may see
is :mod:`explorer.capture.masks`' rule; this module dispatches to the kernels.

State is per call: the active :class:`Recorder` lives in a ``ContextVar``, so two threads (two Streamlit sessions)
tracing the same shared model never see each other's tensors.

Without a mask override it computes what ``attn_implementation="sdpa"`` computes, wherever transformers calls it:
batches with padding (each item under its own mask), static and dynamic caches (transformers' own rule for a call
without a mask), and queries that may see no key (output 0, like torch's kernels, never NaN). Only batch item 0 is
recorded; the trace API is one text.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..errors import InstrumentationError
from ..i18n import N_, _
from .gqa import repeat_kv
from .masks import MaskKind, MaskOverride, allowed_matrix, causal_allowed, check_mask, mask_pattern, sliding_allowed

ATTENTION_NAME = "explorer"

# kwargs that change the maths in ways this implementation does not reproduce; better a clear error than a
# silently different map.
_UNSUPPORTED_KWARGS = {  # translated where the error is raised
    "softcap": N_("attention logit soft-capping (Gemma 2)"),
    "s_aux": N_("attention sinks (gpt-oss)"),
    "position_bias": N_("relative position bias (T5-style)"),
}


@dataclass
class AttentionRecord:
    """What one attention layer used in one call. Tensors are batch item 0, detached, on the model's device.

    A batched call computes every item under its own mask but records only item 0 (the trace API is one text).
    Shapes: ``q`` (H, T, D) after RoPE; ``k``/``v`` (H_kv, S, D), including cached positions (S ≥ T);
    ``lse`` (H, T) float32, −inf for a query that may see no key; ``allowed`` (T, S) bool or None (None: every key
    allowed, the causal pattern when ``mask_kind == "causal"``, or the sliding window of ``window`` keys when
    ``mask_kind == "sliding"``). ``mask_is_model_default`` is False when a mask override made this layer's mask
    differ from the one the model itself would have used.
    """

    layer: int
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    lse: torch.Tensor
    scale: float
    mask_kind: MaskKind
    allowed: torch.Tensor | None
    x: torch.Tensor | None = None  # the attention module's input (T, d_model): the normed hidden state
    mask_is_model_default: bool = True
    window: int | None = None  # keys per query (itself included) when mask_kind == "sliding"

    @property
    def n_heads(self) -> int:
        return self.q.shape[0]

    @property
    def n_kv_heads(self) -> int:
        return self.k.shape[0]

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    def allowed_matrix(self) -> torch.Tensor:
        """The (T, S) bool matrix of allowed (query, key) pairs, on the record's device."""
        if self.allowed is not None:
            return self.allowed
        return allowed_matrix(self.mask_kind, self.q.shape[1], self.k.shape[1], self.window, self.q.device)

    def query_probs(self, position: int) -> torch.Tensor:
        """(H, S): query ``position``'s exact attention in every head (0 ≤ position < T)."""
        rows = slice(position, position + 1)
        return attention_probs(
            self.q[:, rows], self.k, self.lse[:, rows], self.scale, self.mask_kind, self.allowed_matrix()[rows]
        )[:, 0]


@dataclass
class Recorder:
    """Collects :class:`AttentionRecord` s (batch item 0) during one forward pass; also chooses the mask (a what-if
    override, for one whole uncached text only)."""

    mask_override: MaskOverride = None
    keep_inputs: bool = True
    # Modules whose input the trace rebuilds from the hidden states (Model.input_rebuilders): not kept twice.
    rebuilt_inputs: frozenset[int] = frozenset()
    records: list[AttentionRecord] = field(default_factory=list)
    modules: list[torch.nn.Module] = field(default_factory=list)
    # Hears the number of layers recorded so far, after each: a long text's forward pass takes tens of seconds on a
    # CPU, and a page shows how far it is.
    on_record: Callable[[int], None] | None = None
    _pending_x: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mask_override = check_mask(self.mask_override)  # every trace's mask passes here: no typo runs

    def query_rows(self, position: int) -> torch.Tensor:
        """(n_layers, H, S): query ``position``'s exact attention in every recorded layer (one text, no cache)."""
        return torch.stack([r.query_probs(position) for r in self.records])

    def last_query_rows(self, context_length: int) -> torch.Tensor:
        """(n_layers, H, context_length): the last query's exact attention in every layer of a decoding step,
        rebuilt from the records the way a trace rebuilds its maps. Layers alike in shape, scale and mask go through
        one batched call."""
        records = self.records
        first = records[0]
        alike = all(
            r.k.shape == first.k.shape and r.scale == first.scale and r.mask_kind == first.mask_kind
            and r.allowed is None and r.window == first.window
            for r in records
        )
        if alike:
            q = torch.stack([r.q[:, -1:] for r in records])
            k = torch.stack([r.k for r in records])
            lse = torch.stack([r.lse[:, -1:] for r in records])
            rows = attention_probs(q, k, lse, first.scale, first.mask_kind, None, first.window)[:, :, 0]
        else:
            # Per layer; sliding-window layers may hold fewer keys, so rows are left-padded to the longest.
            width = max(r.k.shape[1] for r in records)
            rows = torch.stack(
                [torch.nn.functional.pad(r.query_probs(r.q.shape[1] - 1), (width - r.k.shape[1], 0)) for r in records]
            )
        missing = context_length - rows.shape[-1]
        if missing > 0:  # a sliding-window cache holds only recent keys: the older positions got no attention
            rows = torch.nn.functional.pad(rows, (missing, 0))
        return rows

    def check_complete(self, n_layers: int) -> None:
        """Raise unless each of the model's ``n_layers`` attention layers was recorded once in this forward pass."""
        if len(self.records) != n_layers:
            raise InstrumentationError(
                _("Expected {expected} attention calls, recorded {recorded}: this model does not route "
                  "all its attention through transformers' attention interface.").format(
                    expected=n_layers, recorded=len(self.records))
            )


_ACTIVE: ContextVar[Recorder | None] = ContextVar("explorer_active_recorder", default=None)


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Make ``recorder`` the active one for attention calls made in this context (thread / task)."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


def capture_input_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook on attention modules: remember the module's input (the x of x·W_q) for the active call."""
    recorder = _ACTIVE.get()
    if recorder is None or not recorder.keep_inputs or id(module) in recorder.rebuilt_inputs:
        return
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    if isinstance(hidden, torch.Tensor):
        recorder._pending_x[id(module)] = hidden[0].detach()


def sliding_window_of(module: torch.nn.Module, kwargs: dict | None = None) -> int | None:
    """The sliding window an attention module runs with (the ``sliding_window`` kwarg transformers passes, else the
    module's attribute), or None for full attention."""
    window = (kwargs or {}).get("sliding_window", getattr(module, "sliding_window", None))
    return int(window) if isinstance(window, int) and not isinstance(window, bool) and window > 0 else None


def _as_sliding(
    kind: MaskKind, allowed: torch.Tensor | None, window: int | None, T: int, S: int
) -> tuple[MaskKind, torch.Tensor | None, int | None]:
    """The model's own mask, relabelled ``"sliding"`` when it is exactly the window pattern, so that the record
    keeps one int instead of a (T, S) matrix per layer. ``allowed`` is (B, T, S) or None; anything else is returned
    unchanged (window None)."""
    if window is None:
        return kind, allowed, None
    if kind == "causal":  # no mask given (or a causal one): the window cut nothing iff it reaches key 0
        same = S <= window
    elif kind == "bidirectional":  # a lone decoding query inside a full window sees every key
        same = T == 1 and S <= window
    else:
        same = kind == "custom" and torch.equal(allowed, sliding_allowed(T, S, window, allowed.device).expand_as(allowed))
    return ("sliding", None, window) if same else (kind, allowed, None)


def _classify(allowed: torch.Tensor) -> MaskKind:
    """The kind of a (..., T, S) bool mask: the same plain pattern for every item, else "custom"."""
    T, S = allowed.shape[-2:]
    if bool(allowed.all()):
        return "bidirectional"
    if torch.equal(allowed, causal_allowed(T, S, allowed.device).expand_as(allowed)):
        return "causal"
    return "custom"


def _is_causal(module: torch.nn.Module, kwargs: dict) -> bool:
    # transformers' rule (sdpa_attention_forward): the call's is_causal if given, else the module's, else causal.
    is_causal = kwargs.get("is_causal")
    return bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)


def _model_mask(
    module: torch.nn.Module, B: int, T: int, S: int, attention_mask: torch.Tensor | None, kwargs: dict
) -> tuple[MaskKind, torch.Tensor | None]:
    """The model's own mask: its kind over the whole batch, and (B, T, S) bool when that is "custom"."""
    if attention_mask is None:  # transformers leaves it out for a plain pattern (see recording_attention)
        return ("causal" if _is_causal(module, kwargs) else "bidirectional"), None
    mask = attention_mask[:, 0] if attention_mask.dim() == 4 else attention_mask[:, None]  # (B, T, S) or (B, 1, S)
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    allowed = allowed.expand(B, T, S)
    kind = _classify(allowed)
    return kind, (allowed if kind == "custom" else None)


def _resolve_mask(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
    kwargs: dict, recorder: Recorder | None,
) -> tuple[MaskKind, torch.Tensor | None, bool]:
    """Which (query, key) pairs are allowed: the kind, (B, T, S) bool when "custom", and whether that is the
    model's own mask. The override, if one is active, else the model's own mask."""
    B, T, S = query.shape[0], query.shape[2], key.shape[2]
    kind, allowed = _model_mask(module, B, T, S, attention_mask, kwargs)
    override = recorder.mask_override if recorder is not None else None
    if override is None:
        return kind, allowed, True
    if B != 1 or S != T:  # padding or cached keys: a plain pattern in their place would silently drop or misalign them
        raise InstrumentationError(
            _("A mask override applies to one whole text (Model.trace), not to a padded batch or a step over a cache.")
        )
    own = allowed[0] if allowed is not None else mask_pattern(kind, T, S, query.device)
    # Compared, not named: a "causal" override on a sliding-window model drops the window and is a what-if.
    return override, None, torch.equal(own, mask_pattern(override, T, S, own.device))


def _fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    kind: MaskKind,
    allowed: torch.Tensor | None,
    window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output (B, H, T, D) and log-sum-exp (B, H, T) from a fused kernel, or exact maths as a fall-back.

    k and v already have one head per query head (GQA expanded). ``allowed`` is (B, T, S) bool, each item's own
    mask, or None. A query that may see no key (left padding) gets output 0 and lse −inf on every path.
    """
    T, S = q.shape[2], k.shape[2]
    if kind == "sliding":  # the kernels take no window: within S ≤ window it is plain causal, else a transient bias
        kind, allowed = ("causal", None) if S <= window else ("custom", sliding_allowed(T, S, window, q.device)[None])
    is_causal = kind == "causal" and allowed is None and T == S
    if allowed is None and kind == "causal" and T != S and T > 1:  # (one new query, decoding, sees every key)
        allowed = causal_allowed(T, S, q.device)[None]  # (1, T, S): a chunk over a cache, bottom-right aligned
    bias = None
    if allowed is not None:
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
        bias = bias[:, None]  # (B, 1, T, S): the kernels broadcast it over heads
    out, lse = _kernel(q, k, v, scale, is_causal, bias)
    if allowed is not None:
        empty = ~allowed.any(-1)[:, None]  # (B, 1, T): queries with no key to see
        if bool(empty.any()):  # kernels differ here (CPU flash: 0 and lse 0; CUDA efficient: NaN in some versions)
            out = out.masked_fill(empty[..., None], 0.0)
            lse = lse.masked_fill(empty, float("-inf"))
    return out, lse


def _kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, is_causal: bool, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if q.device.type == "cpu" and q.dtype == torch.float32:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, is_causal, attn_mask=bias, scale=scale
        )
    if q.device.type == "cuda":
        fused = _cuda_kernel(q, k, v, scale, is_causal, bias)
        if fused is not None:
            return fused
    return _math_attention(q, k, v, scale, is_causal, bias)


def _cuda_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, is_causal: bool, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Flash or memory-efficient attention when the kernel's own checks (those SDPA dispatches by) accept the
    inputs, else None. Nothing is caught: running out of memory is not a reason to try a hungrier path."""
    from torch.backends.cuda import SDPAParams, can_use_efficient_attention, can_use_flash_attention

    if bias is None and can_use_flash_attention(SDPAParams(q, k, v, None, 0.0, is_causal, False)):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, is_causal, scale=scale)[:2]
        return out, lse.float()
    if bias is not None:
        bias = _aligned_bias(bias).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])  # (B, H, T, S)
    if not can_use_efficient_attention(SDPAParams(q, k, v, bias, 0.0, is_causal, False)):
        return None
    efficient = torch.ops.aten._scaled_dot_product_efficient_attention
    out, lse = efficient(q, k, v, bias, True, 0.0, is_causal, scale=scale)[:2]
    return out, lse[..., : q.shape[2]].float()  # lse comes padded along T


def _aligned_bias(bias: torch.Tensor, alignment: int = 16) -> torch.Tensor:
    """The same bias (..., S) with every stride but the last a multiple of ``alignment`` elements, as the
    memory-efficient kernel needs: a slice of a bias padded to a multiple of ``alignment`` keys (torch's own
    ``pad_bias``, done here before expanding over heads so the padded copy is (B, 1, T, S′), not (B, H, T, S′))."""
    S = bias.shape[-1]
    if bias.stride(-1) == 1 and all(st % alignment == 0 for st in bias.stride()[:-1]):
        return bias
    padded = torch.nn.functional.pad(bias, (0, -S % alignment or alignment))  # (..., S′), S′ a multiple
    return padded[..., :S]


def _math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, is_causal: bool, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact maths, in float32 or wider: output (B, H, T, D) in q's dtype and lse (B, H, T)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    scores = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * scale  # (B, H, T, S)
    if is_causal:
        T, S = scores.shape[-2:]
        scores = scores.masked_fill(~causal_allowed(T, S, q.device), float("-inf"))
    if bias is not None:
        scores = scores + bias.to(dtype)
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, T); −inf where no key is allowed
    out = torch.exp(scores - _finite(lse)[..., None]) @ v.to(dtype)
    return out.to(q.dtype), lse


def _finite(lse: torch.Tensor) -> torch.Tensor:
    # A query with no allowed key has lse = −inf and every score −inf: exp(−inf − (−inf)) would be NaN, and a NaN
    # output spreads to every row in the next layer. Any finite stand-in makes all its probabilities exp(−inf) = 0.
    return lse.masked_fill(torch.isneginf(lse), 0.0)


def recording_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``transformers`` attention-interface function. query (B, H, T, D); key/value (B, H_kv, S, D)."""
    for name, what in _UNSUPPORTED_KWARGS.items():
        if kwargs.get(name) is not None:
            raise InstrumentationError(
                _("This model uses {feature}, which Attention Explorer's recording attention does not implement yet.")
                .format(feature=_(what))
            )
    recorder = _ACTIVE.get()
    B, H, T, D = query.shape
    scale = float(scaling) if scaling is not None else D**-0.5
    if attention_mask is None and T > 1 and key.shape[2] > T and _is_causal(module, kwargs):
        # transformers' rule: no mask over T > 1 queries is torch's is_causal, aligned top-left. It arises in a static
        # cache's prefill, whose keys past T are empty slots; drop them as transformers does (not bottom-right).
        key, value = key[:, :, :T], value[:, :, :T]  # (B, H_kv, T, D)
    kind, allowed, own_mask = _resolve_mask(module, query, key, attention_mask, kwargs, recorder)
    S = key.shape[2]
    # Sliding windows (Gemma 3): recorded as a window size, not a (T, S) matrix per layer. Never under an override.
    no_override = recorder is None or recorder.mask_override is None
    kind, allowed, window = _as_sliding(kind, allowed, sliding_window_of(module, kwargs) if no_override else None, T, S)
    groups = H // key.shape[1]
    k_full, v_full = repeat_kv(key, groups), repeat_kv(value, groups)  # (B, H, S, D) each
    if dropout and module.training:
        raise InstrumentationError(_("Attention dropout is active: put the model in eval mode before tracing."))
    out, lse = _fused_attention(query, k_full, v_full, scale, kind, allowed, window)

    if recorder is not None:  # batch item 0 only
        first_kind = kind if allowed is None else _classify(allowed[0])
        recorder.modules.append(module)
        recorder.records.append(
            AttentionRecord(
                layer=len(recorder.records),
                q=query[0].detach(),
                k=key[0].detach(),
                v=value[0].detach(),
                lse=lse[0].detach().float(),
                scale=scale,
                mask_kind=first_kind,
                allowed=allowed[0] if first_kind == "custom" else None,
                x=recorder._pending_x.pop(id(module), None),
                mask_is_model_default=own_mask,
                window=window,
            )
        )
        if recorder.on_record is not None:
            recorder.on_record(len(recorder.records))
    weights = None
    if kwargs.get("output_attentions"):
        weights = attention_probs(query, key, lse, scale, kind, None if allowed is None else allowed[:, None], window)
    return out.transpose(1, 2).contiguous(), weights


def attention_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    kind: MaskKind,
    allowed: torch.Tensor | None,
    window: int | None = None,
) -> torch.Tensor:
    """Rebuild exact probabilities ``exp(q kᵀ·scale + mask − lse)``.

    q (..., H, T, D), k (..., H_kv, S, D), lse (..., H, T), allowed broadcastable to (..., H, T, S) →
    (..., H, T, S) float32. Masked cells are exactly 0, and so is a whole row with no allowed key.
    ``window`` is the record's, needed when ``kind == "sliding"``.
    """
    H, T = q.shape[-3], q.shape[-2]
    S = k.shape[-2]
    groups = H // k.shape[-3]
    k = repeat_kv(k, groups)  # (..., H, S, D)
    scores = q.float() @ k.float().transpose(-1, -2)  # (..., H, T, S), a fresh tensor: the steps below work in place
    scores.mul_(scale)  # (in place: a 30-layer pass over a long text rewrites GiBs, and each copy costs a pass)
    if allowed is None and kind != "bidirectional":
        allowed = allowed_matrix(kind, T, S, window, q.device)  # (T, S); "custom" without a matrix is an error
    if allowed is not None:
        scores.masked_fill_(~allowed.expand_as(scores), float("-inf"))
    return scores.sub_(_finite(lse.float())[..., None]).exp_()


def _register() -> None:
    AttentionInterface.register(ATTENTION_NAME, recording_attention)
    # The mask function must be registered under the same name, or transformers passes attention_mask=None and
    # padding/causal masks are lost. sdpa_mask gives a bool mask, or None when plain causality is enough.
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


_register()
