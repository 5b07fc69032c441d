"""The one attention implementation behind every model: a fused-kernel attention that records what it used.

``transformers`` calls :func:`recording_attention` for every attention layer of any model that dispatches through
its ``AttentionInterface`` (Llama, Qwen, Mistral, GPT-2, BERT, ...). It computes the output with a fused kernel
that also returns the log-sum-exp of each score row, so the ``(n, n)`` probabilities never have to exist during
the forward pass. It keeps Q (after RoPE), K, V, the scale, the mask and that log-sum-exp; any head's exact map is
rebuilt later as ``exp(q kᵀ·scale + mask − lse)`` (see :mod:`explorer.trace`).

State is per call: the active :class:`Recorder` lives in a ``ContextVar``, so two threads (two Streamlit sessions)
tracing the same shared model never see each other's tensors. With no recorder active the function is a plain
fused attention, so a model loaded with it behaves exactly like an SDPA model.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..errors import InstrumentationError

ATTENTION_NAME = "explorer"

# "sliding": causal, and only the last ``window`` keys (Gemma 3, Mistral): kept as that one int, never a (T, S) matrix.
MaskKind = Literal["causal", "bidirectional", "sliding", "custom"]
MaskOverride = Literal["causal", "bidirectional"] | None

# kwargs that change the maths in ways this implementation does not reproduce; better a clear error than a
# silently different map.
_UNSUPPORTED_KWARGS = {
    "softcap": "attention logit soft-capping (Gemma 2)",
    "s_aux": "attention sinks (gpt-oss)",
    "position_bias": "relative position bias (T5-style)",
}


@dataclass
class AttentionRecord:
    """What one attention layer used in one call. Tensors are batch item 0, detached, on the model's device.

    Shapes: ``q`` (H, T, D) after RoPE; ``k``/``v`` (H_kv, S, D), including cached positions (S ≥ T);
    ``lse`` (H, T) float32; ``allowed`` (T, S) bool or None (None: every key allowed, the causal pattern when
    ``mask_kind == "causal"``, or the sliding window of ``window`` keys when ``mask_kind == "sliding"``).
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
        T, S = self.q.shape[1], self.k.shape[1]
        if self.allowed is not None:
            return self.allowed
        if self.mask_kind == "causal":
            return causal_allowed(T, S, self.q.device)
        if self.mask_kind == "sliding":
            return sliding_allowed(T, S, self.window, self.q.device)
        return torch.ones(T, S, dtype=torch.bool, device=self.q.device)

    def query_probs(self, position: int) -> torch.Tensor:
        """(H, S): query ``position``'s exact attention in every head (0 ≤ position < T)."""
        rows = slice(position, position + 1)
        return attention_probs(
            self.q[:, rows], self.k, self.lse[:, rows], self.scale, self.mask_kind, self.allowed_matrix()[rows]
        )[:, 0]


@dataclass
class Recorder:
    """Collects :class:`AttentionRecord` s during one forward pass; also chooses the mask (a what-if override)."""

    mask_override: MaskOverride = None
    keep_inputs: bool = True
    records: list[AttentionRecord] = field(default_factory=list)
    modules: list[torch.nn.Module] = field(default_factory=list)
    _pending_x: dict[int, torch.Tensor] = field(default_factory=dict)

    def check_complete(self, n_layers: int) -> None:
        """Raise unless each of the model's ``n_layers`` attention layers was recorded once in this forward pass."""
        if len(self.records) != n_layers:
            raise InstrumentationError(
                f"Expected {n_layers} attention calls, recorded {len(self.records)}: this model does not route "
                "all its attention through transformers' attention interface."
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
    if recorder is None or not recorder.keep_inputs:
        return
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    if isinstance(hidden, torch.Tensor):
        recorder._pending_x[id(module)] = hidden[0].detach()


def causal_allowed(T: int, S: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, S) bool: query i (absolute position S−T+i) may see keys 0..S−T+i. Bottom-right aligned for caches."""
    rows = torch.arange(T, device=device)[:, None] + (S - T)
    return torch.arange(S, device=device)[None, :] <= rows


def sliding_allowed(T: int, S: int, window: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, S) bool: causal, and query i sees only the last ``window`` keys up to itself (itself included), as in
    transformers' ``sliding_window_overlay`` (key j allowed iff i − window < j ≤ i). Bottom-right aligned, like
    :func:`causal_allowed`, which also holds for a sliding-window cache (it keeps the most recent keys)."""
    rows = torch.arange(T, device=device)[:, None] + (S - T)
    cols = torch.arange(S, device=device)[None, :]
    return (cols <= rows) & (cols > rows - window)


def sliding_window_of(module: torch.nn.Module, kwargs: dict | None = None) -> int | None:
    """The sliding window an attention module runs with (the ``sliding_window`` kwarg transformers passes, else the
    module's attribute), or None for full attention."""
    window = (kwargs or {}).get("sliding_window", getattr(module, "sliding_window", None))
    return int(window) if isinstance(window, int) and not isinstance(window, bool) and window > 0 else None


def _as_sliding(
    kind: MaskKind, allowed: torch.Tensor | None, window: int | None, T: int, S: int
) -> tuple[MaskKind, torch.Tensor | None, int | None]:
    """The model's own mask, relabelled ``"sliding"`` when it is exactly the window pattern, so that the record
    keeps one int instead of a (T, S) matrix per layer. Anything else is returned unchanged (window None)."""
    if window is None:
        return kind, allowed, None
    if kind == "causal":  # no mask given (or a causal one): the window cut nothing iff it reaches key 0
        same = S <= window
    elif kind == "bidirectional":  # a lone decoding query inside a full window sees every key
        same = T == 1 and S <= window
    else:
        same = kind == "custom" and torch.equal(allowed, sliding_allowed(T, S, window, allowed.device))
    return ("sliding", None, window) if same else (kind, allowed, None)


def _classify(allowed: torch.Tensor) -> MaskKind:
    T, S = allowed.shape
    if bool(allowed.all()):
        return "bidirectional"
    if torch.equal(allowed, causal_allowed(T, S, allowed.device)):
        return "causal"
    return "custom"


def _resolve_mask(
    module: torch.nn.Module, T: int, S: int, attention_mask: torch.Tensor | None, kwargs: dict, recorder: Recorder | None
) -> tuple[MaskKind, torch.Tensor | None]:
    """Decide which (query, key) pairs are allowed: the override if one is active, else the model's own mask."""
    override = recorder.mask_override if recorder is not None else None
    if override is not None:
        return override, None
    if attention_mask is None:
        # The same rule as transformers' sdpa_attention_forward: no mask + a causal module means causal.
        is_causal = kwargs.get("is_causal")
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        return ("causal" if is_causal else "bidirectional"), None
    mask = attention_mask[0, 0] if attention_mask.dim() == 4 else attention_mask[0]
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    allowed = allowed.expand(T, S)
    kind = _classify(allowed)
    return kind, (allowed if kind == "custom" else None)


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

    k and v already have one head per query head (GQA expanded).
    """
    T, S = q.shape[2], k.shape[2]
    if kind == "sliding":  # the kernels take no window: within S ≤ window it is plain causal, else a transient bias
        kind, allowed = ("causal", None) if S <= window else ("custom", sliding_allowed(T, S, window, q.device))
    is_causal = kind == "causal" and allowed is None and T == S
    bias = None
    if allowed is None and kind == "causal" and T != S and T > 1:  # a single new query (decoding) sees every key
        allowed = causal_allowed(T, S, q.device)
    if allowed is not None:
        bias = torch.zeros(T, S, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
        bias = bias.expand(q.shape[0], q.shape[1], T, S)
    if q.device.type == "cpu" and q.dtype == torch.float32:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, is_causal, attn_mask=bias, scale=scale
        )
        return out, lse
    if q.device.type == "cuda":
        try:
            if bias is None and q.dtype in (torch.float16, torch.bfloat16):  # flash: no arbitrary masks, no fp32
                out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, is_causal, scale=scale)[:2]
            else:
                out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
                    q, k, v, bias, True, 0.0, is_causal, scale=scale
                )[:2]
            return out, lse[..., :T].float()
        except RuntimeError:
            pass  # unsupported shape/dtype for the fused kernels on this GPU: exact maths below
    return _math_attention(q, k, v, scale, is_causal, bias)


def _math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, is_causal: bool, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    if is_causal:
        T, S = scores.shape[-2:]
        scores = scores.masked_fill(~causal_allowed(T, S, q.device), float("-inf"))
    if bias is not None:
        scores = scores + bias.float()
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.exp(scores - lse[..., None]) @ v.float()
    return out.to(q.dtype), lse


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
                f"This model uses {what}, which Attention Explorer's recording attention does not implement yet."
            )
    recorder = _ACTIVE.get()
    B, H, T, D = query.shape
    S = key.shape[2]
    scale = float(scaling) if scaling is not None else D**-0.5
    kind, allowed = _resolve_mask(module, T, S, attention_mask, kwargs, recorder)
    # Sliding windows (Gemma 3): recorded as a window size, not a (T, S) matrix per layer. Never under an override.
    own_mask = recorder is None or recorder.mask_override is None
    kind, allowed, window = _as_sliding(kind, allowed, sliding_window_of(module, kwargs) if own_mask else None, T, S)
    groups = H // key.shape[1]
    k_full = key.repeat_interleave(groups, dim=1) if groups > 1 else key
    v_full = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    if dropout and module.training:
        raise InstrumentationError("Attention dropout is active: put the model in eval mode before tracing.")
    out, lse = _fused_attention(query, k_full, v_full, scale, kind, allowed, window)

    if recorder is not None:
        recorder.modules.append(module)
        recorder.records.append(
            AttentionRecord(
                layer=len(recorder.records),
                q=query[0].detach(),
                k=key[0].detach(),
                v=value[0].detach(),
                lse=lse[0].detach().float(),
                scale=scale,
                mask_kind=kind,
                allowed=allowed,
                x=recorder._pending_x.pop(id(module), None),
                window=window,
            )
        )
    weights = None
    if kwargs.get("output_attentions"):
        weights = attention_probs(query, key, lse, scale, kind, allowed, window)
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

    q (..., H, T, D), k (..., H_kv, S, D), lse (..., H, T) → (..., H, T, S) float32. Masked cells are exactly 0.
    ``window`` is the record's, needed when ``kind == "sliding"``.
    """
    H, T = q.shape[-3], q.shape[-2]
    S = k.shape[-2]
    groups = H // k.shape[-3]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=-3)
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    if allowed is None and kind == "causal":
        allowed = causal_allowed(T, S, q.device)
    if allowed is None and kind == "sliding":
        allowed = sliding_allowed(T, S, window, q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.exp(scores - lse.float()[..., None])


def _register() -> None:
    AttentionInterface.register(ATTENTION_NAME, recording_attention)
    # The mask function must be registered under the same name, or transformers passes attention_mask=None and
    # padding/causal masks are lost. sdpa_mask gives a bool mask, or None when plain causality is enough.
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


_register()
