"""Float32 rounding bounds: where the tests' numeric tolerances come from.

A float32 sum of n terms rounds once per addition, each time by at most half an ulp of the running sum. Those
roundings add up like a random walk, so the sum lands within about ``eps·√n·magnitude`` of the exact value, where
``eps`` = 2⁻²³ ≈ 1.19e-7 is one ulp at 1.0 and ``magnitude`` is the size of the running sums (for attention scores,
the largest |score|). BLAS blocking, SIMD width and thread count change the order of the additions from machine to
machine, so two evaluations of the same quantity each sit within that of the exact value and differ by up to twice
it: hence ``ulps=2``. (The worst case, n·eps/2·Σ|terms|, is never approached by real data and would let real bugs
through.) A tolerance set this way holds on any machine; one copied from a single run does not. Checked: with
PyTorch's AVX-512, AVX2 and plain kernels (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS) on one and two threads, the
numeric tests all still passed with every f32_dot_bound cut to a fifth.

Through a whole model the roundings of every layer add up: L layers whose longest sum has w terms (the MLP's down
projection) round like one sum of L·w terms, because the norm in every block keeps a difference from growing as it
is carried forward (:func:`model_bound`).
"""

from __future__ import annotations

import math

import torch

EPS32 = float(torch.finfo(torch.float32).eps)  # 2⁻²³: the spacing of float32 numbers at 1.0


def f32_dot_bound(n_terms: int, magnitude: float, ulps: float = 2.0) -> float:
    """How far two float32 evaluations of a sum of ``n_terms`` terms of size ``magnitude`` may differ."""
    return ulps * EPS32 * math.sqrt(n_terms) * magnitude


def model_bound(model, size: float) -> float:
    """How far two float32 runs of a whole ``model`` may differ in an output of size ``size`` (a hidden state, the
    logits): n_layers + 1 layers (the embeddings and the head count as one) of sums up to intermediate_size terms."""
    config = model.config
    width = getattr(config, "intermediate_size", None) or 4 * config.hidden_size  # GPT-2 leaves it implicit: 4·d
    return f32_dot_bound((config.num_hidden_layers + 1) * width, size)


def probs_bound(head_dim: int, n_keys: int, score_size: float) -> float:
    """How far two float32 evaluations of attention probabilities may differ (absolutely), for scores q·k·scale of
    size ``score_size`` summed over ``head_dim`` terms and rows of ``n_keys`` keys.

    p = exp(s − lse) moves by p·|Δs − Δlse| plus its own few roundings. lse carries the p-weighted mean of the
    scores' errors, plus the rounding of its normaliser (a sum of n terms ≤ 1, relative) and of numbers of size
    1 + |lse| ≤ 1 + |s| + ln n (lse itself, s − lse, exp). p ≤ 1 turns all of it into an absolute bound; and since
    every term is p times something, p's error is also relative to p.
    """
    lse_size = score_size + math.log(max(n_keys, 1))
    return 2 * f32_dot_bound(head_dim, score_size) + f32_dot_bound(n_keys, 1.0) + 2 * EPS32 * (1 + lse_size)


def score_magnitude(trace, layer: int) -> float:
    """The largest |q·k·scale| over the (query, key) pairs that ``layer``'s mask allowed: the size of its scores."""
    allowed = trace.allowed(layer)  # (n, n)
    q = torch.stack([trace.q(layer, h) for h in range(trace.n_heads)])  # (H, n, D)
    k = torch.stack([trace.k(layer, h) for h in range(trace.n_heads)])  # (H, n, D), GQA heads repeated
    scores = (q @ k.transpose(-1, -2)) * trace.scale(layer)  # (H, n, n)
    return float(scores.masked_fill(~allowed, 0).abs().max())


def attention_bound(trace, layer: int) -> float:
    """:func:`probs_bound` for one layer of a trace.

    A reference that ran the whole model again (eager attention) also sees this layer's inputs differ by the
    rounding of the layers below; the norm in front of every attention keeps that at a few ulps of the inputs,
    inside the same bound.
    """
    return probs_bound(trace.head_dim, trace.n_tokens, score_magnitude(trace, layer))


def entropy_bound(p_bound: float, n_keys: int) -> float:
    """How far two evaluations of a row's entropy −Σ p ln p may differ when each p is off by ≤ p·``p_bound``.

    Δ(−p ln p) = −(ln p + 1)·Δp, and Σ p·|ln p + 1| ≤ H + 1 ≤ ln n + 1; the float32 sum of n terms ≤ ln n rounds too.
    """
    return (math.log(n_keys) + 1) * p_bound + f32_dot_bound(n_keys, math.log(n_keys))


def attention_output_bound(p_bound: float, n_keys: int, n_summed: int, size: float) -> float:
    """How far two evaluations of an attention output of size ``size`` may differ.

    The heads Σ_j p_j·v_j carry p's relative error (``p_bound``) and n_keys roundings of their sum; the projections
    on the way (V over d_model terms, W_o over H·D) add sums of ``n_summed`` terms in all.
    """
    return (p_bound + f32_dot_bound(n_keys, 1.0)) * size + f32_dot_bound(n_summed, size)
