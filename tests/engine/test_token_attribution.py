"""explorer.attribute and explorer.deletion_curve against independent computations on a stock eager transformers
model: a hand-written autograd gradient (gradient × input), rollouts rebuilt from eager ``output_attentions`` and
value-projection hooks, IG's completeness, and deletion as plain forwards of the shortened ids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import explorer
from explorer import ExplorerError
from explorer.analysis.attribution import check_target

from bounds import EPS32, f32_dot_bound, model_bound
from references import value_norm_reference as reference

IOI = "When Mary and John went to the store, John gave a drink to"


def eager_target(eager, embeds: torch.Tensor, answer: int, wrong: int | None) -> torch.Tensor:
    logits = eager(inputs_embeds=embeds).logits[:, -1]  # (B, vocab)
    return logits[:, answer] - (logits[:, wrong] if wrong is not None else 0)


def eager_ids_target(eager, ids, answer: int, wrong: int) -> float:
    with torch.no_grad():
        logits = eager(torch.tensor([list(ids)])).logits[0, -1]
    return float(logits[answer] - logits[wrong])


def hand_rollout(maps_per_layer) -> torch.Tensor:
    """R = Â_L ⋯ Â_0 with Â = ½·mean_h A + ½·I, rows renormalised, written out (float64)."""
    result = None
    for a in maps_per_layer:
        mixed = 0.5 * a.double().mean(0) + 0.5 * torch.eye(a.shape[-1], dtype=torch.float64)
        mixed = mixed / mixed.sum(-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    return result


@pytest.fixture(scope="module")
def ioi(smollm2):
    return check_target(smollm2, IOI, " Mary", " John")


@pytest.mark.numeric
def test_gradient_x_input_equals_a_hand_written_gradient(smollm2, smollm2_eager, ioi):
    got = explorer.attribute(smollm2, IOI, " Mary", " John", method="gradient_x_input")
    x = smollm2_eager.get_input_embeddings()(torch.tensor([list(ioi.ids)])).detach().requires_grad_(True)
    value = eager_target(smollm2_eager, x, ioi.answer, ioi.wrong)[0]
    grad, = torch.autograd.grad(value, x)
    expected = (grad * x).detach()[0].sum(-1).double().numpy()  # (n,)
    # Two float32 runs of the whole model (forward and backward: twice model_bound) of gradients of size
    # max|grad|, times |x| and summed over d_model terms per token.
    size = float((grad.abs() * x.abs()).max().detach())
    tol = 2 * model_bound(smollm2, size) * smollm2.config.hidden_size + f32_dot_bound(smollm2.config.hidden_size, size)
    assert np.abs(got.scores - expected).max() <= tol
    assert abs(got.target - float(value)) <= model_bound(smollm2, abs(float(value)))
    assert got.gap is None and got.baseline_target is None


def test_integrated_gradients_completeness_on_the_worked_example(smollm2):
    got = explorer.attribute(smollm2, IOI, " Mary", " John")
    assert got.method == "integrated_gradients" and got.baseline == "pad"
    assert got.relative_gap <= 0.05  # the bound: Σ scores within 5% of F(x) − F(b)
    assert math.isclose(got.gap, got.scores.sum() - (got.target - got.baseline_target), rel_tol=1e-9, abs_tol=1e-9)
    assert got.target > 5  # SmolLM2 prefers " Mary" by a logit difference of about 6 (FIELD_NOTES)


@pytest.mark.numeric
def test_rollouts_and_last_layer_attention_equal_eager_rebuilt(smollm2, smollm2_eager, ioi):
    attns, norms, _w = reference(smollm2_eager, list(ioi.ids))
    tol_maps = 4 * f32_dot_bound(len(attns) * ioi.ids.__len__(), 1.0)  # products of L row-stochastic matrices
    rollout = explorer.attribute(smollm2, IOI, " Mary", " John", method="attention_rollout")
    expected = hand_rollout(attns)[-1].numpy()
    per_map = max(float(a.abs().max()) for a in attns) * 1e-5  # the maps agree with eager to ≤ probs_bound ≪ 1e-5
    assert np.abs(rollout.scores - expected).max() <= len(attns) * per_map + tol_maps
    contributions = []
    for a, r in zip(attns, norms):
        c = a * r[:, None, :]  # (H, n, n): α_ij ||f_j||
        contributions.append(c / c.sum(-1, keepdim=True))
    got = explorer.attribute(smollm2, IOI, " Mary", " John", method="contribution_rollout")
    assert np.abs(got.scores - hand_rollout(contributions)[-1].numpy()).max() <= len(attns) * per_map * 10 + tol_maps
    # Both end almost wholly on token 0 (README: > 99% of SmolLM2's rollout), but contributions discount the sink.
    assert got.scores[0] < expected[0] and got.scores[1:].sum() > 2 * expected[1:].sum()
    last = explorer.attribute(smollm2, IOI, " Mary", " John", method="last_layer_attention")
    assert np.abs(last.scores - attns[-1][:, -1].double().mean(0).numpy()).max() <= per_map
    assert math.isclose(float(rollout.scores.sum()), 1.0, abs_tol=1e-9)


def test_deletion_curve_equals_forwards_of_the_shortened_ids(smollm2, smollm2_eager, ioi):
    attr = explorer.attribute(smollm2, IOI, " Mary", " John", method="last_layer_attention")
    curve = explorer.deletion_curve(smollm2, IOI, attr, " Mary", " John", steps=3)
    n = len(ioi.ids)
    assert len(curve.order) == 3 and n - 1 not in curve.order  # never the predicting token
    ranked = sorted(range(n - 1), key=lambda p: -attr.scores[p])[:3]
    assert list(curve.order) == ranked
    for k in range(4):
        kept = [t for i, t in enumerate(ioi.ids) if i not in curve.order[:k]]
        expected = eager_ids_target(smollm2_eager, kept, ioi.answer, ioi.wrong)
        assert abs(curve.targets[k] - expected) <= model_bound(smollm2, 2 * max(abs(expected), 1.0)) * 10
    assert math.isclose(curve.aopc, float(np.mean(curve.targets[0] - curve.targets[1:])))
    assert curve.random_targets[0] == curve.targets[0]


def test_gemma3_keeps_its_bos_and_attributes(gemma3, gemma3_eager):
    target = check_target(gemma3, IOI, " Mary", " John")
    assert target.ids[0] == 2  # <bos>
    attr = explorer.attribute(gemma3, IOI, " Mary", " John", method="gradient_x_input")
    x = gemma3_eager.get_input_embeddings()(torch.tensor([list(target.ids)])).detach().requires_grad_(True)
    value = eager_target(gemma3_eager, x, target.answer, target.wrong)[0]
    grad, = torch.autograd.grad(value, x)
    expected = (grad * x).detach()[0].sum(-1).double().numpy()
    size = float((grad.abs() * x.abs()).max().detach())
    d = gemma3.config.hidden_size
    assert np.abs(attr.scores - expected).max() <= 2 * model_bound(gemma3, size) * d + f32_dot_bound(d, size)
    curve = explorer.deletion_curve(gemma3, IOI, attr, " Mary", " John", steps=2)
    assert 0 not in curve.order and len(target.ids) - 1 not in curve.order


def test_bad_input_is_a_clear_message(smollm2, minilm):
    with pytest.raises(ExplorerError, match="encoder"):
        explorer.attribute(minilm, IOI, " Mary")
    with pytest.raises(ExplorerError, match="not one"):
        explorer.attribute(smollm2, IOI, " Maryland Johnson")
    with pytest.raises(ExplorerError, match="empty"):
        explorer.attribute(smollm2, "   ", " Mary")
    with pytest.raises(ExplorerError, match="Unknown attribution method"):
        explorer.attribute(smollm2, IOI, " Mary", method="shap")
    attr = explorer.attribute(smollm2, IOI, " Mary", method="last_layer_attention")
    with pytest.raises(ExplorerError, match="another text"):
        explorer.deletion_curve(smollm2, "The cat sat on the mat", attr, " Mary")


def test_gradients_leave_the_shared_model_untouched(smollm2):
    """Called under the app's inference mode, the gradient methods work, and leave no .grad, no changed
    requires_grad, and no grad mode behind."""
    flags = [p.requires_grad for p in smollm2.hf.parameters()]
    with torch.inference_mode():
        attr = explorer.attribute(smollm2, "The capital of France is", " Paris", method="gradient_x_input")
        assert torch.is_inference_mode_enabled()
    assert np.isfinite(attr.scores).all()
    assert [p.requires_grad for p in smollm2.hf.parameters()] == flags
    assert all(p.grad is None for p in smollm2.hf.parameters())
