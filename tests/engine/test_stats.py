"""Unit tests of the pure analysis functions on hand-made inputs with known answers (no model needed).

Head statistics, attention rollout, Q/K geometry, and the CSV export round trip.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.analysis import export, stats
from explorer.errors import ExplorerError
from explorer.analysis.geometry import pca_plane, qk_plane, query_plane, score_vs_distance
from explorer.analysis.rollout import mixing_matrix, rollout

from bounds import f32_dot_bound

pytestmark = pytest.mark.numeric


# ---- hand-made attention maps ---------------------------------------------------------------------------------------
def previous_token_map(n: int) -> torch.Tensor:
    """Every token attends only to the one before it (token 0, which has none, to itself)."""
    a = torch.zeros(n, n)
    a[0, 0] = 1
    a[torch.arange(1, n), torch.arange(n - 1)] = 1
    return a


def uniform_map(n: int, causal: bool) -> torch.Tensor:
    a = torch.tril(torch.ones(n, n)) if causal else torch.ones(n, n)
    return a / a.sum(-1, keepdim=True)


def sink_map(n: int) -> torch.Tensor:
    a = torch.zeros(n, n)
    a[:, 0] = 1
    return a


def induction_map(start: int, period: int, exact: bool) -> torch.Tensor:
    """A causal map over start + 2·period tokens; in the repeat each token attends to the token after its earlier
    occurrence (exact) or to the earlier occurrence itself (a duplicate-token head, not induction)."""
    n = start + 2 * period
    a = sink_map(n)
    for i in range(start + period, n):
        a[i] = 0
        a[i, i - period + (1 if exact else 0)] = 1
    return a


N = 7
# The hand-made maps are float32: a statistic sums N terms per row and averages N rows, against an exact float64
# answer. The float64 references further down agree to ~1e-15; their 1e-9 / 1e-12 leave room and nothing more.
F32 = f32_dot_bound(N * N, 1.0)


def approx32(expected: float):
    return pytest.approx(expected, rel=F32, abs=0)


def test_exact_previous_token_pattern_scores_one():
    a = previous_token_map(N)
    assert stats.previous_token(a).item() == 1.0
    assert stats.entropy(a).item() == 0.0  # −1·ln 1 and 0·ln 0 are exactly 0
    assert stats.self_attention(a).item() == approx32(1 / N)  # only query 0, onto itself
    assert stats.first_token(a).item() == approx32(1 / (N - 1))  # only query 1 looks at token 0


def test_uniform_bidirectional_attention_has_entropy_log_n():
    a = uniform_map(N, causal=False)
    assert stats.entropy(a).item() == approx32(math.log(N))
    for fn in (stats.previous_token, stats.first_token, stats.self_attention):
        assert fn(a).item() == approx32(1 / N)


def test_uniform_causal_attention_averages_log_of_row_lengths():
    a = uniform_map(N, causal=True)
    assert stats.entropy(a).item() == approx32(np.mean([math.log(i + 1) for i in range(N)]))
    assert stats.previous_token(a).item() == approx32(np.mean([1 / (i + 1) for i in range(1, N)]))
    assert stats.first_token(a).item() == approx32(np.mean([1 / (i + 1) for i in range(1, N)]))
    assert stats.self_attention(a).item() == approx32(np.mean([1 / (i + 1) for i in range(N)]))


def test_first_token_sink_scores_one():
    a = sink_map(N)
    assert stats.first_token(a).item() == 1.0
    assert stats.entropy(a).item() == 0.0  # −1·ln 1 and 0·ln 0 are exactly 0
    assert stats.self_attention(a).item() == approx32(1 / N)


def test_identity_is_pure_self_attention():
    a = torch.eye(N)
    assert stats.self_attention(a).item() == 1.0
    assert stats.previous_token(a).item() == 0.0
    assert stats.first_token(a).item() == 0.0
    assert stats.entropy(a).item() == 0.0  # −1·ln 1 and 0·ln 0 are exactly 0


def test_half_previous_half_self_mixture():
    a = 0.5 * previous_token_map(N) + 0.5 * torch.eye(N)
    assert stats.previous_token(a).item() == approx32(0.5)
    assert stats.self_attention(a).item() == approx32((1 + 0.5 * (N - 1)) / N)
    assert stats.entropy(a).item() == approx32((N - 1) / N * math.log(2))


@pytest.mark.parametrize("start", [0, 1, 2])
def test_induction_pattern_scores_one_and_duplicate_token_pattern_zero(start):
    assert stats.induction(induction_map(start, 5, exact=True), 5, start).item() == 1.0
    assert stats.induction(induction_map(start, 5, exact=False), 5, start).item() == 0.0
    # Measured on the previous-token map, which points at i−1 ≠ i−P+1 for P > 2:
    assert stats.induction(previous_token_map(start + 10), 5, start).item() == 0.0


def test_statistics_reduce_only_the_last_two_dimensions():
    maps = torch.stack([torch.stack([previous_token_map(N), uniform_map(N, False), sink_map(N)])] * 2)  # (2, 3, n, n)
    values = stats.previous_token(maps)
    assert values.shape == (2, 3)
    np.testing.assert_allclose(values[1].numpy(), [1.0, 1 / N, 1 / (N - 1)], rtol=F32, atol=0)
    assert stats.entropy(maps).shape == (2, 3)
    assert stats.induction(maps[..., :6, :6], 3).shape == (2, 3)


def _reference_statistics(a: np.ndarray) -> dict[str, float]:
    """Straightforward loops, written independently of the vectorised code."""
    n = a.shape[0]
    ent = []
    for i in range(n):
        ent.append(-sum(p * math.log(p) for p in a[i] if p > 0))
    return {
        "entropy": sum(ent) / n,
        "previous_token": sum(a[i, i - 1] for i in range(1, n)) / (n - 1),
        "first_token": sum(a[i, 0] for i in range(1, n)) / (n - 1),
        "self": sum(a[i, i] for i in range(n)) / n,
    }


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 10_000), causal=st.booleans())
def test_random_maps_match_loop_reference(n, seed, causal):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, n, generator=g, dtype=torch.float64) * 3
    if causal:
        scores = scores.masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool)), float("-inf"))
    a = torch.softmax(scores, -1)
    ref = _reference_statistics(a.numpy())
    for name, fn in stats.TEXT_STATISTICS.items():
        assert fn(a).item() == pytest.approx(ref[name], rel=1e-9, abs=1e-12)
    assert 0 <= stats.entropy(a).item() <= math.log(n) + 1e-12  # float64


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ExplorerError):
        stats.entropy(torch.ones(3, 4))
    with pytest.raises(ExplorerError):
        stats.induction(torch.eye(5), period=3)
    assert math.isnan(stats.previous_token(torch.ones(1, 1)).item())


def test_stats_frame_has_one_row_per_head_in_order():
    values = {name: np.arange(6, dtype=float).reshape(2, 3) + i for i, name in enumerate(stats.STATISTICS)}
    frame = stats.stats_frame(values)
    assert list(frame.columns) == ["layer", "head", *stats.STATISTICS]
    assert frame.shape == (6, 7)
    row = frame[(frame.layer == 1) & (frame["head"] == 2)].iloc[0]
    assert row["entropy"] == 5.0 and row["induction"] == 5.0 + 4


# ---- rollout --------------------------------------------------------------------------------------------------------
def test_rollout_of_identity_attention_is_identity():
    np.testing.assert_array_equal(rollout([torch.eye(5)] * 4).numpy(), np.eye(5))  # ½·1 + ½·1: exact


def test_rollout_one_layer_is_half_attention_half_identity():
    a = uniform_map(4, causal=True)
    # a's float32 rows sum to 1 within 4 roundings; rollout renormalises them (in float64), this reference does not
    np.testing.assert_allclose(rollout([a]).numpy(), 0.5 * a.numpy() + 0.5 * np.eye(4), rtol=f32_dot_bound(4, 1.0))


def test_rollout_multiplies_later_layers_on_the_left_and_averages_heads():
    g = torch.Generator().manual_seed(0)
    layers = [torch.softmax(torch.randn(3, 5, 5, generator=g), -1) for _ in range(3)]
    mixed = [0.5 * l.mean(0).double().numpy() + 0.5 * np.eye(5) for l in layers]
    mixed = [m / m.sum(-1, keepdims=True) for m in mixed]
    np.testing.assert_allclose(rollout(layers).numpy(), mixed[2] @ mixed[1] @ mixed[0], atol=1e-12)  # float64


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 10), depth=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_rollout_rows_sum_to_one(n, depth, seed):
    g = torch.Generator().manual_seed(seed)
    layers = [torch.softmax(torch.randn(2, n, n, generator=g) * 4, -1) for _ in range(depth)]
    r = rollout(layers)
    np.testing.assert_allclose(r.sum(-1).numpy(), np.ones(n), atol=1e-12)  # float64
    assert (r >= 0).all()


def test_mixing_matrix_renormalises_rows():
    m = mixing_matrix(torch.full((3, 3), 2.0))  # rows sum to 6, not 1: still a stochastic result
    np.testing.assert_allclose(m.sum(-1).numpy(), np.ones(3))


# ---- Q/K geometry ---------------------------------------------------------------------------------------------------
def test_nearest_key_is_not_the_highest_scoring_key_when_norms_differ():
    q = np.array([[1.0, 0.0]])
    k = np.array([[0.9, 0.0], [3.0, 0.0], [0.0, 1.0]])  # 0: next to q, score 0.9; 1: far, score 3
    result = score_vs_distance(q, k, 0, scale=1.0)
    assert result.nearest_key == 0
    assert result.top_score_key == 1
    assert not result.agree
    np.testing.assert_allclose(result.scores, [0.9, 3.0, 0.0])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_with_equal_key_norms_nearest_and_highest_scoring_agree(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(3, 8))
    k = rng.normal(size=(6, 8))
    k = 2.5 * k / np.linalg.norm(k, axis=1, keepdims=True)
    result = score_vs_distance(q, k, 1, scale=0.125)
    assert result.agree


def test_masked_keys_are_never_chosen():
    q = np.array([[1.0, 0.0]])
    k = np.array([[0.1, 0.0], [5.0, 0.0]])
    result = score_vs_distance(q, k, 0, scale=1.0, allowed=np.array([True, False]))
    assert result.top_score_key == 0 and result.nearest_key == 0
    assert result.scores[1] == -np.inf


def test_pca_plane_matches_eigen_decomposition_and_shares_axes():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(10, 6)) * [5, 3, 1, 0.5, 0.2, 0.1]
    k = rng.normal(size=(10, 6)) * [5, 3, 1, 0.5, 0.2, 0.1] + 1.0
    plane = pca_plane(q, k)
    both = np.concatenate([q, k])
    centred = both - both.mean(0)
    eigval, eigvec = np.linalg.eigh(centred.T @ centred)
    top = eigvec[:, ::-1][:, :2]
    expected = centred @ top
    coords = np.concatenate([plane.queries, plane.keys])
    for axis in range(2):  # each axis is defined up to its sign
        # float64 SVD against float64 eigh, on well separated components: ~1e-13 apart
        assert min(np.abs(coords[:, axis] - expected[:, axis]).max(), np.abs(coords[:, axis] + expected[:, axis]).max()) < 1e-9
    assert plane.explained[0] == pytest.approx(eigval[-1] / eigval.sum())
    same = pca_plane(q, q)  # identical queries and keys land on identical points: one shared set of axes
    np.testing.assert_allclose(same.queries, same.keys)


def test_query_plane_x_coordinate_is_the_exact_score():
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=(5, 16)), rng.normal(size=(5, 16)) * rng.uniform(0.2, 3, size=(5, 1))
    plane = query_plane(q, k, 3)
    np.testing.assert_allclose(plane.keys[:, 0] * np.linalg.norm(q[3]), k @ q[3], atol=1e-12)
    assert np.argmax(plane.keys[:, 0]) == score_vs_distance(q, k, 3, 1.0).top_score_key
    with pytest.raises(ExplorerError):
        qk_plane(q, k, "tsne")


# ---- CSV export -----------------------------------------------------------------------------------------------------
def test_head_map_csv_round_trips_exactly_with_safe_labels():
    rng = np.random.default_rng(3)
    matrix = rng.dirichlet(np.ones(4), size=4).astype(np.float32)
    tokens = ["=SUM(A1)", " cat", " cat", "\n"]
    text = export.head_map_csv(matrix, tokens)
    back = export.read_head_map_csv(text)
    np.testing.assert_array_equal(back.to_numpy(dtype=np.float32), matrix)
    assert list(back.columns) == ["0\u2002=SUM(A1)", "1\u2002 cat", "2\u2002 cat", "3\u2002\u21b5"]
    assert all(not line.startswith(("=", "+", "-", "@")) for line in text.splitlines())


def test_file_names_are_safe():
    assert export.file_name("HuggingFaceTB/SmolLM2", "L3H1", "attention", ext="csv") == \
        "HuggingFaceTB-SmolLM2_L3H1_attention.csv"
    assert export.file_name("../../etc", ext="npz") == "etc.npz"
