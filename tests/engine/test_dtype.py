"""Loads in bfloat16 (issue 14, part 3): maps exact for the computation that ran, and within bf16's rounding of an
float32 run."""

from __future__ import annotations

import pytest
import torch

import explorer
from explorer.errors import ExplorerError

TEXT = "The quick brown fox jumps over the lazy dog, and the dog does not mind at all."
BF16_EPS = 2.0**-8  # bfloat16 keeps 8 significant bits: a rounding is at most 2^-9 relative, one ulp 2^-8


@pytest.fixture(scope="module")
def pair(smollm2):
    bf16 = explorer.load("smollm2", device="cpu", dtype="bfloat16")
    return smollm2.trace(TEXT), bf16.trace(TEXT), bf16


def test_bf16_weights_and_records(pair):
    fp32, bf16, model = pair
    assert next(model.hf.parameters()).dtype == torch.bfloat16
    r = bf16.records[0]
    assert r.q.dtype == torch.bfloat16 and r.k.dtype == torch.bfloat16
    assert r.lse.dtype == torch.float32  # the kernel's normaliser is kept in float32
    assert bf16.token_ids == fp32.token_ids


def test_bf16_maps_are_softmax_of_its_own_q_k(pair):
    """"Exact for the computation that ran": the map is softmax(q kᵀ·scale) of the recorded bf16 q, k in float32."""
    _, bf16, _ = pair
    n = bf16.n_tokens
    for layer in (0, bf16.n_layers - 1):
        for head in range(bf16.n_heads):
            scores = bf16.q(layer, head) @ bf16.k(layer, head).T * bf16.scale(layer)  # (n, n) float32
            reference = torch.softmax(scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf")), -1)
            # Both in float32 from the same inputs: the lse and the softmax differ by a few ulps of p.
            assert torch.allclose(bf16.attention(layer, head), reference, atol=1e-5)


def test_bf16_maps_deviate_from_fp32_by_the_score_rounding(pair):
    fp32, bf16, _ = pair
    # Layer 0's q and k see bf16 rounding only three times (the input, the weights, the product), each ≤ 2^-9
    # relative: their Frobenius deviation stays below 3·2^-9 < 2·BF16_EPS of their size.
    for name in ("q", "k"):
        a, b = getattr(fp32.records[0], name).float(), getattr(bf16.records[0], name).float()
        assert float((b - a).norm() / a.norm()) <= 2 * BF16_EPS
    # Any layer: log p_ij = s_ij − lse_i moves by at most 2·max_j|Δs_ij|, so |Δp_ij| ≤ p_ij·(exp(2·max_j|Δs_ij|) − 1)
    # (plus float32 slack), with Δs the difference of the two runs' own scores.
    for layer in (0, fp32.n_layers // 2, fp32.n_layers - 1):
        for head in range(fp32.n_heads):
            s32 = fp32.q(layer, head) @ fp32.k(layer, head).T * fp32.scale(layer)
            s16 = bf16.q(layer, head) @ bf16.k(layer, head).T * bf16.scale(layer)
            delta = (s16 - s32).tril().abs().amax(-1, keepdim=True)  # (n, 1): the largest score change per row
            p32, p16 = fp32.attention(layer, head), bf16.attention(layer, head)
            assert bool(((p16 - p32).abs() <= p32 * torch.expm1(2 * delta) + 1e-6).all())


def test_unknown_dtype_is_refused():
    with pytest.raises(ExplorerError, match="dtype"):
        explorer.load("smollm2", device="cpu", dtype="float64")
