"""One attention head's formula, step by step, with the real numbers of one query token.

    x ─W─▶ Q, K, V ─RoPE─▶ s_j = q_i·k_j ─×scale─▶ + M_ij ─softmax─▶ p_ij ─Σ p·v─▶ o_i ─W_o─▶

Everything is recomputed from the attention module's input ``x`` (kept in the trace) and the layer's weights
(:mod:`explorer.capture.projections`), so each intermediate that the fused kernel never materialised can be shown; the
results agree with what the trace recorded (Q/K/V exactly for Llama-family models, the probabilities within
float32 rounding), which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..i18n import _
from ..errors import ExplorerError
from ..capture.model import Model
from ..capture.projections import LayerProjections, layer_projections
from ..capture.gqa import repeat_kv
from .scratch import attention_core
from ..capture.trace import Trace


@dataclass(frozen=True)
class FormulaSteps:
    """Every intermediate of one head's attention for one query token (float32, CPU).

    Shapes: ``n`` tokens, ``D`` = head_dim, ``d`` = d_model. Weight slices use ``nn.Linear``'s (out, in) layout,
    so ``q = x @ w_q.T + b_q``.

    Attributes:
        x: (n, d) the attention module's input (the normed hidden state for pre-norm models).
        w_q, w_k, w_v: (D, d) the rows of W_q for this head and of W_k / W_v for its key/value head.
        q_pre, k_pre: (n, D) Q and K before the rotary embedding (after the QK-norm, where there is one); None for
            models without RoPE.
        q_raw, k_raw: (n, D) x·W_q (+ b_q) and x·W_k (+ b_k) before the QK-norm (Qwen3, Gemma 3); None without one.
            ``norm_offset``/``norm_eps`` give its formula, q_pre = q_raw / √(mean(q_raw²) + eps) · (offset + w)
            (offset 1 for Gemma 3, 0 for Qwen3; None when the norm is of neither form).
        q, k, v: (n, D) as scored: Q of this head, K and V of its key/value head (shared under GQA).
        scores: (n,) q_query · k_j for every key j.  ``scaled``: scores × scale.
        allowed: (n,) which keys the mask lets the query see.  ``masked``: scaled, −∞ where not allowed.
        probs: (n,) softmax of ``masked``: the query's row of the attention map.
        head_out: (D,) Σ_j p_j v_j, the head's output before W_o.
        head_contribution: (d,) this head's part of the attention output, head_out @ W_o[:, head slice].T.
        layer_out: (d,) the whole attention module's output for the query: every head's output through W_o (+ b_o).
    """

    layer: int
    head: int
    query: int
    kv_head: int
    scale: float
    x: torch.Tensor
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    b_q: torch.Tensor | None
    b_k: torch.Tensor | None
    b_v: torch.Tensor | None
    q_pre: torch.Tensor | None
    k_pre: torch.Tensor | None
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scores: torch.Tensor
    scaled: torch.Tensor
    allowed: torch.Tensor
    masked: torch.Tensor
    probs: torch.Tensor
    head_out: torch.Tensor
    head_contribution: torch.Tensor
    layer_out: torch.Tensor
    q_raw: torch.Tensor | None = None
    k_raw: torch.Tensor | None = None
    norm_offset: float | None = None
    norm_eps: float | None = None

    @property
    def uses_qk_norm(self) -> bool:
        return self.q_raw is not None

    @property
    def n_tokens(self) -> int:
        return self.x.shape[0]

    @property
    def head_dim(self) -> int:
        return self.q.shape[1]

    @property
    def d_model(self) -> int:
        return self.x.shape[1]

    @property
    def uses_rope(self) -> bool:
        return self.q_pre is not None

    @property
    def q_query(self) -> torch.Tensor:
        """(D,) the query token's q vector, as scored."""
        return self.q[self.query]

    def products(self, key: int) -> torch.Tensor:
        """(D,) q_query ⊙ k_key: the per-dimension terms whose sum is the raw score of ``key`` (the neuron view)."""
        if not 0 <= key < self.n_tokens:
            raise ExplorerError(
                _("Key {key} is out of range: the text has tokens 0–{last}.").format(key=key, last=self.n_tokens - 1)
            )
        return self.q_query * self.k[key]

    def weighted_values(self) -> torch.Tensor:
        """(n, D) p_j · v_j for every key j; their column sums are ``head_out``."""
        return self.probs[:, None] * self.v


def formula_steps(
    model: Model, trace: Trace, layer: int, head: int, query: int, projections: LayerProjections | None = None
) -> FormulaSteps:
    """Recompute one head's attention for one query from ``trace.x(layer)`` and the layer's weights.

    ``projections`` may be passed to reuse :func:`explorer.capture.projections.layer_projections` for the same layer.
    Raises ExplorerError for out-of-range indices or architectures whose weights are not understood.
    """
    trace._check(layer, head)
    n = trace.n_tokens
    if not 0 <= query < n:
        raise ExplorerError(
            _("Query {query} is out of range: the text has tokens 0–{last}.").format(query=query, last=n - 1)
        )
    proj = projections or layer_projections(model, layer)
    if proj.layer != layer:
        raise ExplorerError(
            _("The projections are for layer {actual}, not layer {layer}.").format(actual=proj.layer, layer=layer)
        )
    x = trace.x(layer).to(proj.w_q.device)
    with torch.inference_mode():
        parts = proj.project(x)
    kv = trace.kv_head(head)
    D = proj.head_dim
    rows_q, rows_kv = slice(head * D, (head + 1) * D), slice(kv * D, (kv + 1) * D)

    def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().float().cpu()

    q_heads, k_heads, v_heads = cpu(parts["q"]), cpu(parts["k"]), cpu(parts["v"])  # (H, n, D), (H_kv, n, D) ×2
    q, k, v = q_heads[head], k_heads[kv], v_heads[kv]
    scale = float(trace.scale(layer))
    allowed = trace.allowed_rows(layer, slice(query, query + 1))[0]  # one row, not the (n, n) mask
    scores = k @ q[query]
    scaled = scores * scale
    masked = scaled.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(masked, dim=-1) if bool(allowed.any()) else torch.zeros_like(masked)
    head_out = probs @ v

    # The layer output needs every head's output for this query (the heads are concatenated before W_o).
    k_per_q = repeat_kv(k_heads, proj.group_size)  # (H, n, D)
    v_per_q = repeat_kv(v_heads, proj.group_size)  # (H, n, D)
    all_out = attention_core(q_heads[:, query : query + 1], k_per_q, v_per_q, scale, allowed[None])[0][:, 0]  # (H, D)
    w_o = cpu(proj.w_o)
    layer_out = cpu(proj.output(all_out[:, None, :].to(proj.w_o)))[0]
    head_contribution = head_out @ w_o[:, rows_q].T

    rope = proj.rope is not None
    normed = proj.q_norm is not None
    return FormulaSteps(
        layer=layer, head=head, query=query, kv_head=kv, scale=scale, x=cpu(x),
        w_q=cpu(proj.w_q[rows_q]), w_k=cpu(proj.w_k[rows_kv]), w_v=cpu(proj.w_v[rows_kv]),
        b_q=cpu(proj.b_q[rows_q]) if proj.b_q is not None else None,
        b_k=cpu(proj.b_k[rows_kv]) if proj.b_k is not None else None,
        b_v=cpu(proj.b_v[rows_kv]) if proj.b_v is not None else None,
        q_pre=cpu(parts["q_pre"][head]) if rope else None, k_pre=cpu(parts["k_pre"][kv]) if rope else None,
        q=q, k=k, v=v, scores=scores, scaled=scaled, allowed=allowed, masked=masked, probs=probs,
        head_out=head_out, head_contribution=head_contribution, layer_out=layer_out,
        q_raw=cpu(parts["q_raw"][head]) if normed else None, k_raw=cpu(parts["k_raw"][kv]) if normed else None,
        norm_offset=proj.norm_offset, norm_eps=proj.norm_eps,
    )


def token_window(n_tokens: int, focus: int, size: int) -> tuple[int, int]:
    """A window [start, stop) of at most ``size`` tokens that contains ``focus``, mostly before it.

    Three quarters of the window lie before the focus token: under a causal mask those are the keys it can see.
    """
    if n_tokens <= 0 or size <= 0:
        return 0, 0
    size = min(size, n_tokens)
    focus = min(max(focus, 0), n_tokens - 1)
    start = max(0, min(focus - (3 * size) // 4, n_tokens - size))
    return start, start + size
