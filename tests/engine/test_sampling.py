"""The sampling pipeline: properties of each stage, and agreement with transformers' own logits warpers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from explorer import ExplorerError
from explorer.decoding.sampling import Knobs, draw, nucleus, stages, uniform

from bounds import EPS32, f32_dot_bound

logits_lists = st.lists(
    st.floats(min_value=-30, max_value=30, allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=60
)
temperatures = st.floats(min_value=0.05, max_value=100.0)
top_ks = st.integers(min_value=0, max_value=80)
top_ps = st.floats(min_value=0.0, max_value=1.0)


def _stage(stage_list, name):
    return next(s for s in stage_list if s.name == name)


@settings(max_examples=200, deadline=None)
@given(logits_lists, temperatures, top_ks, top_ps)
def test_every_stage_is_a_distribution(values, t, k, p):
    bound = f32_dot_bound(len(values), 1.0)  # a float32 softmax: its normaliser sums len(values) terms ≤ 1
    for stage in stages(torch.tensor(values), Knobs.of(t, k, p)):
        assert abs(float(stage.probs.double().sum()) - 1.0) <= bound, stage.name
        assert bool((stage.probs >= 0).all())
        assert 0.0 < stage.mass_kept <= 1.0 + bound


@settings(max_examples=200, deadline=None)
@given(logits_lists, temperatures, st.integers(min_value=1, max_value=80))
def test_top_k_leaves_at_most_k_tokens_the_most_probable_ones(values, t, k):
    out = stages(torch.tensor(values), Knobs.of(t, k, 1.0))
    top_k = _stage(out, "top-k")
    assert top_k.n_kept <= k and out[-1].n_kept <= k
    if k < len(values):
        kept = top_k.kept
        assert int(kept.sum()) == k
        z = torch.tensor(values)
        assert float(z[kept].min()) >= float(z[~kept].max())  # nothing cut ranks above anything kept


@settings(max_examples=200, deadline=None)
@given(logits_lists, temperatures, top_ks, top_ps)
def test_top_p_keeps_the_smallest_prefix_reaching_p(values, t, k, p):
    out = stages(torch.tensor(values), Knobs.of(t, k, p))
    before = _stage(out, "top-k").probs.double()
    kept = nucleus(before.float(), p)
    ranked = torch.sort(before, descending=True).values
    m = int(kept.sum())
    assert m >= 1
    # The same float32 values summed in float64 here and in nucleus(): only the order differs, ≲ 60·2⁻⁵³ ≪ 1e-12.
    assert float(ranked[:m].sum()) >= min(p, float(ranked.sum())) - 1e-12  # the prefix reaches p ...
    assert m == 1 or float(ranked[: m - 1].sum()) < p + 1e-12  # ... and one token fewer would not
    assert float(before[kept].min()) >= float(before[~kept].max()) if (~kept).any() else True  # a prefix by rank
    if p < 1.0:
        assert torch.equal(_stage(out, "top-p").kept, kept)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.integers(min_value=2, max_value=5000),
    st.floats(min_value=0.1, max_value=5.0),
    st.integers(min_value=0, max_value=6000),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_final_distribution_equals_transformers_warpers(seed, vocab, t, k, p):
    """The independent reference: transformers' TemperatureLogitsWarper → TopK → TopP, then softmax."""
    z = torch.randn(vocab, generator=torch.Generator().manual_seed(seed)) * 4  # continuous: no ties
    scores = z[None].clone()
    warpers = [TemperatureLogitsWarper(t)] + ([TopKLogitsWarper(k)] if k > 0 else []) + [TopPLogitsWarper(p)]
    for warper in warpers:
        scores = warper(None, scores)
    reference = torch.softmax(scores, dim=-1)[0]
    ours = stages(z, Knobs.of(t, k, p))[-1].probs
    # Either the kept sets agree, or the reference sits on the top-p boundary where float32 rounding decides:
    # transformers sums the sorted probabilities in float32, within f32_dot_bound(vocab, 1) of the exact cumsum.
    if not torch.equal(ours > 0, reference > 0):
        before = _stage(stages(z, Knobs.of(t, k, 1.0)), "top-k").probs.double()
        ranked = torch.sort(before, descending=True).values.cumsum(0)
        assume(float((ranked - p).abs().min()) > f32_dot_bound(vocab, 1.0))
    assert torch.equal(ours > 0, reference > 0)
    # Both are exp(z/T − max) over a normaliser of ≤ vocab terms: each p is off relatively by that sum's rounding,
    # plus ~1 ulp from exp and ½ from the division on each side.
    bound = float(reference.max()) * (f32_dot_bound(vocab, 1.0) + 4 * EPS32)
    assert (ours - reference).abs().max().item() <= bound


@settings(max_examples=100, deadline=None)
@given(logits_lists.filter(lambda v: len(v) >= 2))
def test_temperature_to_zero_tends_to_greedy(values):
    z = torch.tensor(values)
    top2 = torch.topk(z, 2).values
    gap = float(top2[0] - top2[1])
    assume(gap > 1e-3)
    greedy = int(torch.argmax(z))
    tops = []
    for t in (2.0, 1.0, 0.5, 0.1, gap / 60):
        probs = stages(z, Knobs.of(t, 0, 1.0))[-1].probs
        assert int(torch.argmax(probs)) == greedy
        tops.append(float(probs[greedy]))
    slack = f32_dot_bound(len(values), 1.0)  # each p carries its float32 normaliser's rounding
    assert all(b >= a - slack for a, b in zip(tops, tops[1:]))  # sharper as T falls
    assert tops[-1] >= 0.999
    exact = stages(z, Knobs.of(0, 50, 0.9))[-1].probs  # T = 0 is greedy outright
    assert float(exact[greedy]) == 1.0 and exact.sum() == 1.0


def test_off_values_change_nothing():
    z = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    plain = stages(z, Knobs.of(0.7, 0, 1.0))[-1].probs
    for k in (0, 1000, 5000):  # 0 or ≥ vocab: top-k off
        assert torch.equal(stages(z, Knobs.of(0.7, k, 1.0))[-1].probs, plain)
    off = stages(z, Knobs.of(0.7, 0, 1.0))
    assert not _stage(off, "top-k").active and not _stage(off, "top-p").active
    only_top = stages(z, Knobs.of(0.7, 0, 0.0))[-1].probs  # top_p = 0 keeps the single top token
    assert only_top.count_nonzero() == 1 and int(torch.argmax(only_top)) == int(torch.argmax(z))
    assert torch.equal(stages(z, Knobs.of(1.0, 0, 1.0))[1].probs, torch.softmax(z, -1))  # T = 1: the same softmax


def test_large_temperatures_flatten_without_overflow():
    z = torch.randn(500, generator=torch.Generator().manual_seed(1)) * 10
    probs = stages(z, Knobs.of(100.0, 0, 1.0))[-1].probs
    assert torch.isfinite(probs).all()
    # p_max / p_min = exp(Δz / T) exactly; each p carries ≲ 1 ulp from exp, ½ from z/T and ½ from the division
    assert float(probs.max() / probs.min()) < math.exp(float(z.max() - z.min()) / 100) * (1 + 8 * EPS32)


@pytest.mark.parametrize(
    "knobs, fragment",
    [
        (dict(temperature=-0.1), "Temperature"),
        (dict(temperature=float("nan")), "Temperature"),
        (dict(temperature=float("inf")), "Temperature"),
        (dict(temperature="hot"), "Temperature"),
        (dict(top_k=-1), "top-k"),
        (dict(top_k=2.5), "top-k"),
        (dict(top_k=float("nan")), "top-k"),
        (dict(top_p=-0.01), "top-p"),
        (dict(top_p=1.5), "top-p"),
        (dict(top_p=float("nan")), "top-p"),
    ],
)
def test_bad_knobs_are_clear_errors(knobs, fragment):
    with pytest.raises(ExplorerError, match=fragment):
        Knobs.of(**knobs)


def test_nan_logits_are_refused():
    with pytest.raises(ExplorerError, match="NaN"):
        stages(torch.tensor([0.0, float("nan")]), Knobs.of())


def test_draw_follows_the_cumulative_distribution():
    probs = torch.tensor([0.2, 0.0, 0.5, 0.3])
    assert [draw(probs, u) for u in (0.0, 0.1, 0.2, 0.69, 0.7, 0.999999)] == [0, 0, 2, 2, 3, 3]
    # Over many draws, frequencies match the probabilities and zero-probability tokens never appear.
    counts = torch.bincount(torch.tensor([draw(probs, uniform(7, i)) for i in range(4000)]), minlength=4)
    assert counts[1] == 0
    # Binomial: a share's standard deviation is ≤ √(¼ / 4000) ≈ 0.008, so 0.03 is ~4σ (and the seeds are fixed)
    assert torch.allclose(counts.double() / 4000, probs.double(), atol=0.03, rtol=0)


def test_uniform_is_reproducible_per_seed_and_step():
    assert uniform(3, 5) == uniform(3, 5)
    assert len({uniform(3, i) for i in range(50)}) == 50
    assert uniform(3, 0) != uniform(4, 0)
    assert all(0.0 <= uniform(s, i) < 1.0 for s in range(5) for i in range(20))
