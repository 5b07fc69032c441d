"""Numbers of a recorded layer from the recorder's own fused kernel and from O(n d) gathers, never from its maps.

Two identities make most of a layer's overview cheap:

- one cell of each row, ``p_ij = exp(q_i·k_j·scale − lse_i)`` where the mask allows (i, j), else 0, is a dot product
  per query from the recorded q, k and log-sum-exp (:func:`cells`): previous-token, first-token and self shares and
  the induction score name one key per query;
- ``P @ V`` for any V with one row per key (:func:`attention_times`) is what the fused kernel that ran the forward
  pass computes without building P: with V = K it gives the entropy's ``Σ_j p_ij k_j``, with V = the (S, c)
  indicators of key blocks it gives each row's sums over those blocks.

The kernel wants V as wide as q and k: a narrower V is zero-padded, and for a wider one q and k are (zeros add
nothing to a score), so one call serves any V; its cost grows with that width (measured: linear in it on 2 CPU
cores, from 64 to 512). Masks are the record's: a causal layer runs as the kernel's own causal mode (which skips the hidden
half), a sliding-window layer a block of queries at a time over the keys its window reaches, anything else with the
mask as an additive bias.
"""

from __future__ import annotations

import torch

from ..errors import check_heads
from .gqa import kv_for_heads
from .recorder import AttentionRecord, _kernel

# Queries per kernel call on a sliding-window layer. Each call scores its queries against the keys their windows
# reach (chunk + window − 1), under a band-shaped bias: the narrower the chunk, the less of that score block lies
# outside the band (128 queries, a 512-key window: 639 keys a query against the 512 it sees; 512 queries: 1,023).
# Measured on Gemma 3's sliding layer 0, one layer's overview, 2 cores: 128 was the fastest of 128–1,024 at 1k, 2k
# and 8k tokens (8k: 0.25 s against 0.36 s at 512 and 0.46 s at 1,024).
SLIDING_CHUNK = 128


def supports(trace) -> bool:
    """Can this module compute on ``trace``: a token trace whose records hold one query per token (a word-level
    view of a trace, or anything without records of its own, goes the streamed way)?"""
    record = getattr(trace, "record", None)
    return callable(record) and trace.n_layers > 0 and record(0).q.shape[1] == trace.n_tokens


def allowed_pairs(r: AttentionRecord, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Bool (same shape): may query ``queries[i]`` see key ``keys[i]`` under the record's mask? Out-of-range keys
    are not allowed. Index tensors of absolute positions (queries 0…T−1, keys 0…S−1)."""
    T, S = r.q.shape[1], r.k.shape[1]
    inside = (keys >= 0) & (keys < S)
    if r.allowed is not None:
        return inside & r.allowed[queries, keys.clamp(0, S - 1)]
    if r.mask_kind == "bidirectional":
        return inside
    position = queries + (S - T)  # bottom-right aligned, like causal_allowed
    allowed = inside & (keys <= position)
    return allowed & (keys > position - r.window) if r.mask_kind == "sliding" else allowed


def cells(trace, layer: int, queries: torch.Tensor, keys: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
    """(h, m) float32 CPU: the exact probabilities ``trace.attentions(layer)[heads, queries[i], keys[i]]``, one key
    per query (index tensors of positions), 0 where the mask hides that key or it lies outside the text. O(m·d)
    from the recorded q, k and log-sum-exp; no map. (A statistic's diagonal or column is :func:`diagonal` or
    :func:`column`: the same numbers from slices, without gathering a copy of q.)"""
    r = trace.record(layer)
    heads = _heads(r, heads)
    queries, keys = queries.to(r.q.device), keys.to(r.q.device)
    q = r.q[heads].index_select(1, queries)  # (h, m, D)
    k = r.k.index_select(1, keys.clamp(0, r.k.shape[1] - 1))  # (H_kv, m, D)
    return _probabilities(r, heads, q, k, r.lse[heads].index_select(1, queries), allowed_pairs(r, queries, keys))


def diagonal(trace, layer: int, offset: int, heads: slice = slice(None)) -> torch.Tensor:
    """(h, T) float32 CPU: each query i's probability on key i + ``offset`` (−1: the previous token, 0: itself), 0
    where the mask hides it or it lies outside the text; :func:`cells` of that diagonal, from slices of q and k."""
    r = trace.record(layer)
    heads = _heads(r, heads)
    T, S = r.q.shape[1], r.k.shape[1]
    first, stop = max(0, -offset), min(T, S - offset)  # the queries whose key lies in 0…S−1
    out = torch.zeros(heads.stop - heads.start, T)
    if stop > first:
        queries = torch.arange(first, stop, device=r.q.device)
        q, k = r.q[heads, first:stop], r.k[:, first + offset : stop + offset]  # (h, m, D), (H_kv, m, D)
        out[:, first:stop] = _probabilities(r, heads, q, k, r.lse[heads, first:stop],
                                            allowed_pairs(r, queries, queries + offset))
    return out


def column(trace, layer: int, key: int, heads: slice = slice(None)) -> torch.Tensor:
    """(h, T) float32 CPU: every query's probability on the one ``key`` (0: the first token), 0 where the mask
    hides it; :func:`cells` of that column, without copying q."""
    r = trace.record(layer)
    heads = _heads(r, heads)
    queries = torch.arange(r.q.shape[1], device=r.q.device)
    allowed = allowed_pairs(r, queries, torch.full_like(queries, key))  # (T,): none for a key outside the text
    at = min(max(key, 0), r.k.shape[1] - 1)
    k = r.k[:, at : at + 1].expand(-1, r.q.shape[1], -1)  # (H_kv, T, D): a view, the one key for every query
    return _probabilities(r, heads, r.q[heads], k, r.lse[heads], allowed)


def _probabilities(r: AttentionRecord, heads: slice, q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor,
                   allowed: torch.Tensor) -> torch.Tensor:
    """(h, m) float32 CPU: ``exp(q_i·k_i·scale − lse_i)`` where ``allowed``, else 0; q (h, m, D) of query heads
    ``heads``, k (H_kv, m, D) every key head, lse (h, m)."""
    q, k, lse = q.float(), k.float(), lse.float()
    if (heads.start, heads.stop) == (0, r.n_heads):  # every group whole: its query heads against its one key head
        scores = (q.unflatten(0, (r.n_kv_heads, r.group_size)) * k[:, None]).sum(-1).flatten(0, 1)  # (h, m)
    else:
        scores = (q * _key_heads(r, heads, k)).sum(-1)  # (h, m): each query head's key head
    # a query that may see no key has lse −inf; it has no weight anywhere (allowed is False for it too)
    p = torch.exp(scores * r.scale - lse.masked_fill(torch.isneginf(lse), 0.0))
    return torch.where(allowed[None], p, torch.zeros((), dtype=p.dtype, device=p.device)).cpu()


def attention_times(trace, layer: int, values: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
    """``trace.attentions(layer)[heads] @ values``: (h, T, c) float32 CPU through the fused kernel, P never built.

    ``values`` is (S, c), shared by every head (e.g. key-block indicators), or (h, S, c), one per query head. Rows are
    each query's softmax over the keys its mask allows, as in the forward pass (a query that may see no key gets 0).
    """
    r = trace.record(layer)
    heads = _heads(r, heads)
    return _attention_times(r, values, heads).cpu()


def mean_keys(trace, layer: int, heads: slice = slice(None)) -> torch.Tensor:
    """(h, T, D) float32 CPU: ``Σ_j p_ij k_j``, each query's attention-weighted mean of the keys its head scores
    (the attention output with V = K; under GQA the shared key head). q_i · that, times the scale, is the mean
    score ``Σ_j p_ij s_ij`` that the entropy ``lse_i − Σ_j p_ij s_ij`` needs."""
    r = trace.record(layer)
    return _mean_keys_of(r, _heads(r, heads))


def mean_keys_and(trace, layer: int, values: torch.Tensor, heads: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mean_keys` and :func:`attention_times` of ``values`` (S, c) from one kernel call with V = [K | values]
    (one softmax for both: cheaper than two calls when c is small next to the head dimension)."""
    r = trace.record(layer)
    heads = _heads(r, heads)
    D = r.q.shape[-1]
    out = _keys_and_times(r, heads, values.float().to(r.k.device))  # (h, T, D + c)
    return out[..., :D], out[..., D:]


def key_block_sums(trace, layer: int, step: int, heads: slice = slice(None), skip_first_key: bool = False
                   ) -> torch.Tensor:
    """(h, T, ⌈S / step⌉) float32 CPU: each row's attention summed over blocks of ``step`` keys (P @ B, B the
    indicators of the blocks), as wide a grid as asked for the cost of about one kernel call of the head's width.

    On a causal or bidirectional layer the keys are taken a span of ``head_dim`` blocks at a time: the kernel
    softmaxes each query over that span only (its own log-sum-exp ℓ'), so its sums are rescaled by exp(ℓ' − lse),
    the share of the query's whole attention that the span holds. Causal spans start at the span's first key, where
    the kernel's top-left causal mask is the record's. Other masks take one call with V = B. ``skip_first_key``
    leaves key 0 out of every block (the sums are then over keys 1…S−1)."""
    r = trace.record(layer)
    heads = _heads(r, heads)
    T, S, D = r.q.shape[1], r.k.shape[1], r.q.shape[2]
    n_blocks = -(-S // step)
    if r.allowed is not None or r.mask_kind not in ("causal", "bidirectional") or T != S:
        indicators = _indicators(S, step, 0, n_blocks)
        if skip_first_key:
            indicators[0] = 0.0
        return _attention_times(r, indicators, heads).cpu()
    causal = r.mask_kind == "causal"
    q, k, lse = r.q[heads].float(), _key_heads(r, heads), r.lse[heads].float()  # (h, T, D), (h, S, D), (h, T)
    out = torch.zeros(heads.stop - heads.start, T, n_blocks, dtype=torch.float32, device=r.q.device)
    for first_block in range(0, n_blocks, D):
        blocks = slice(first_block, min(n_blocks, first_block + D))
        keys = slice(max(blocks.start * step, int(skip_first_key)), min(S, blocks.stop * step))
        if keys.stop <= keys.start:  # a first block of key 0 alone, left out
            continue
        queries = slice(keys.start if causal else 0, T)  # causal: earlier queries see none of these keys
        values = _indicators(S, step, blocks.start, blocks.stop)[keys]  # (Sk, blocks)
        values = torch.nn.functional.pad(values, (0, D - values.shape[-1])).to(q.device)
        part, span_lse = _kernel(q[None, :, queries], k[None, :, keys], values.expand(1, q.shape[0], *values.shape),
                                 r.scale, causal, None)  # (1, h, Tq, D), (1, h, Tq)
        share = torch.exp(span_lse[0] - lse[:, queries])  # (h, Tq): the span's part of each query's attention
        out[:, queries, blocks] = part[0, ..., : blocks.stop - blocks.start] * share[..., None]
    return out.cpu()


def _indicators(S: int, step: int, first: int, stop: int) -> torch.Tensor:
    """(S, stop − first) float32: key j lies in block j // step (blocks first…stop−1)."""
    keys = torch.arange(S)
    block = keys // step - first
    inside = (block >= 0) & (block < stop - first)
    out = torch.zeros(S, stop - first)
    out[keys[inside], block[inside]] = 1.0
    return out


def entropy_rows(trace, layer: int, heads: slice = slice(None), mean_keys: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """(h, T) float64: each query's entropy −Σ_j p_ij ln p_ij, in nats, as ``lse_i − scale·q_i·Σ_j p_ij k_j``
    (ln p_ij = s_ij − lse_i on the allowed keys, Σ_j p_ij = 1), the inner sum :func:`mean_keys` (pass it as
    ``mean_keys`` when already computed). A query that may see no key has entropy 0, as −Σ 0 ln 0 gives."""
    r = trace.record(layer)
    heads = _heads(r, heads)
    if mean_keys is None:
        mean_keys = _mean_keys_of(r, heads)
    q = r.q[heads].float().cpu()  # (h, T, D)
    lse = r.lse[heads].double().cpu()  # (h, T)
    # Σ_j p_ij s_ij: the products rounded once in float32 (≤ ε|q||m| in all, an ulp of the score's size, less than
    # the kernel's own rounding of Σ p k), summed in float64; converting both to float64 first costs 14× as much
    mean_score = (q * mean_keys.float()).sum(-1, dtype=torch.float64) * r.scale  # (h, T)
    return torch.where(torch.isneginf(lse), 0.0, lse - mean_score)


def _mean_keys_of(r: AttentionRecord, heads: slice) -> torch.Tensor:
    return _keys_and_times(r, heads, None)  # (h, T, D)


def _key_heads(r: AttentionRecord, heads: slice, k: torch.Tensor | None = None) -> torch.Tensor:
    """(h, S, D) float32: the key head each of the query heads ``heads`` scores against (a copy under GQA), of the
    record's keys or of ``k`` (H_kv, ·, D), a part of them."""
    return kv_for_heads(r.k if k is None else k, r.group_size, heads).float()


def _keys_and_times(r: AttentionRecord, heads: slice, values: torch.Tensor | None) -> torch.Tensor:
    """(h, T, D + c) float32 CPU: P @ [K | values] (values (S, c) shared by every head, or None: P @ K alone).

    One tensor serves as the kernel's keys and values: [K | values] scores as K does once q is zero-padded to its
    width (q's zeros meet the value columns), so K is copied once, not twice."""
    k = _key_heads(r, heads)  # (h, S, D)
    D = k.shape[-1]
    c = 0 if values is None else values.shape[-1]
    width = D if c == 0 else _padded_width(D + c)
    kv = torch.cat([k, values.expand(k.shape[0], *values.shape),
                    k.new_zeros(*k.shape[:2], width - D - c)], dim=-1) if c else k  # (h, S, width)
    q = r.q[heads].float()  # (h, T, D)
    if width > D:
        q = torch.nn.functional.pad(q, (0, width - D))  # (h, T, width)
    return _times(r, q, kv, kv)[..., : D + c].cpu()


def _heads(r: AttentionRecord, heads: slice) -> slice:
    return check_heads(heads, r.n_heads)


def _attention_times(r: AttentionRecord, values: torch.Tensor, heads: slice) -> torch.Tensor:
    n_heads = heads.stop - heads.start
    S, D = r.k.shape[1], r.q.shape[2]
    q = r.q[heads].float()  # (h, T, D)
    k = _key_heads(r, heads)  # (h, S, D): one key head per query head
    values = values.float().to(r.q.device)
    if values.dim() == 2:
        values = values.expand(n_heads, S, values.shape[-1])  # (h, S, c)
    c = values.shape[-1]
    if c > D:  # zero-padded q and k score the same (exact zeros add nothing): one call as wide as V
        width = _padded_width(c)
        q = torch.nn.functional.pad(q, (0, width - D))  # (h, T, width)
        k = torch.nn.functional.pad(k, (0, width - D))
    else:
        width = D
    if c < width:  # the kernel wants v as wide as q
        values = torch.nn.functional.pad(values, (0, width - c))
    return _times(r, q, k, values.contiguous())[..., :c]


def _padded_width(columns: int) -> int:
    """The width a zero-padded call takes for ``columns`` value columns: the next multiple of 16."""
    return -(-columns // 16) * 16


def _times(r: AttentionRecord, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(h, T, D) P @ v under the record's mask, v (h, S, D)."""
    T, S = q.shape[1], k.shape[1]
    if r.allowed is None and r.mask_kind == "causal" and T == S:
        return _call(q, k, v, r.scale, is_causal=True, allowed=None)
    if r.allowed is None and r.mask_kind == "bidirectional":
        return _call(q, k, v, r.scale, is_causal=False, allowed=None)
    if r.allowed is None and r.mask_kind == "sliding":
        out = q.new_empty(q.shape[0], T, v.shape[-1])
        for start in range(0, T, SLIDING_CHUNK):
            rows = slice(start, min(T, start + SLIDING_CHUNK))
            first = max(0, rows.start + (S - T) - r.window + 1)  # the first key any of these queries sees
            cols = slice(first, rows.stop + (S - T))
            position = torch.arange(rows.start, rows.stop, device=q.device)[:, None] + (S - T)
            key = torch.arange(cols.start, cols.stop, device=q.device)[None, :]
            allowed = (key <= position) & (key > position - r.window)  # (Tq, Sk)
            out[:, rows] = _call(q[:, rows], k[:, cols], v[:, cols], r.scale, is_causal=False, allowed=allowed)
        return out
    allowed = r.allowed_matrix()  # custom (or causal over a cache): the record's own (T, S) matrix
    return _call(q, k, v, r.scale, is_causal=False, allowed=allowed)


def _call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, *, is_causal: bool,
          allowed: torch.Tensor | None) -> torch.Tensor:
    """The recorder's kernel on one text: q (h, Tq, D), k and v (h, Sk, D), ``allowed`` (Tq, Sk) or None."""
    bias = None
    if allowed is not None:
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
        bias = bias[None, None]  # (1, 1, Tq, Sk): broadcast over heads
    out, _lse = _kernel(q[None], k[None], v[None], scale, is_causal, bias)  # (1, h, Tq, D)
    out = out[0]
    if allowed is not None:
        empty = ~allowed.any(-1)  # (Tq,): queries with no key to see get 0 (kernels differ there)
        if bool(empty.any()):
            out = out.masked_fill(empty[None, :, None], 0.0)
    return out
