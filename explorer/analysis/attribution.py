"""Which input tokens drove this prediction? Token attributions for a causal LM's next-token logit, five ways.

The target is ``F = logit(answer)`` at the last position, or ``logit(answer) − logit(wrong)`` (a logit difference:
what separates two candidates, free of what raises every logit alike). Methods:

- ``integrated_gradients`` (Sundararajan et al. 2017): ``(x − b) ⊙ ∫₀¹ ∂F/∂x(b + t(x − b)) dt`` on the input
  embeddings, summed over each embedding; Captum does the integral. Completeness says the scores sum to
  ``F(x) − F(b)``; the gap ``Σ scores − (F(x) − F(b))`` is the integration error, and is reported.
- ``gradient_x_input``: ``x ⊙ ∂F/∂x`` at the input (Captum's InputXGradient): IG's first-order cousin, no path.
- ``attention_rollout``: the last row of :mod:`explorer.analysis.rollout` (weights only, no gradients).
- ``contribution_rollout``: the same rollout of the norm-based contributions ``α_ij ||f_j||``
  (:mod:`explorer.capture.contributions`), each layer mixed with the residual as rollout does.
- ``last_layer_attention``: the last layer's weights from the last position, averaged over heads.

Baselines and the integration rule. IG's usual baseline is all-zero embeddings (``baseline="zero"``). On an RMSNorm
model that path is not integrable in practice: near 0 every norm's input is below its eps, so each norm multiplies by
1/√eps (≈ 316 for SmolLM2) instead of normalising, the residual stream grows by orders of magnitude per layer, and F
swings back and forth over dozens of decades of the path's first thousandth (SmolLM2 on the worked example:
F(t·x) = −1.55 at t = 1e-36, between −7 and +1 for every t up to 0.3, while F(0) = 0 exactly). No affordable rule
closes that gap, and the tab says so. The default, ``baseline="pad"``, puts the pad token's embedding (else the
end-of-text token's) at every position but the special tokens in front: the path then stays at the scale of real
embeddings, where the norms normalise. Along it F still changes abruptly where a head switches the key it attends
to, so the path is cut into pieces where F changes: a uniform grid of GRID pieces, F at their ends from forwards
only, pieces over which F moves by more than PIECE_SHARE of F(x) − F(b) halved (up to MAX_PIECES), and each piece
integrated by Captum's Gauss–Legendre rule with ``steps`` nodes. IG is additive over pieces of one straight path, so
the sum is IG of the whole path, with the nodes where the integrand lives.

Gradients are switched on only inside :func:`attribute` (``inference_mode(False)``, ``enable_grad``) and taken
with respect to the input embeddings only: ``autograd.grad`` writes no ``.grad`` and no module state is changed,
so sessions sharing one model are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..capture.model import Model
from ..errors import ExplorerError
from ..i18n import N_, _
from .rollout import RESIDUAL_WEIGHT, rollout_rows

METHODS = {
    "integrated_gradients": N_("Integrated gradients"),
    "gradient_x_input": N_("Gradient × input"),
    "attention_rollout": N_("Attention rollout"),
    "contribution_rollout": N_("Contribution rollout"),
    "last_layer_attention": N_("Last-layer attention"),
}
PATH_METHODS = ("integrated_gradients",)
DEFAULT_STEPS = 8  # Gauss–Legendre nodes in each piece of the path (4 left a 10% gap on the worked example)
GRID = 16  # the path's first, uniform pieces; F is evaluated at their ends (forwards only)
PIECE_SHARE = 0.05  # a piece over which F changes by more than this share of F(x) − F(b) is halved
MAX_PIECES = 48
MIN_WIDTH = 2.0**-14  # pieces are not halved below this width
BASELINES = ("pad", "zero")
DEFAULT_BASELINE = "pad"
INTERNAL_BATCH = 16  # embeddings per forward in Captum's batches: bounds memory on long prompts


@dataclass(frozen=True)
class Attribution:
    """One method's scores for one prediction.

    ``scores`` (n,) float64, one per input position; ``target`` F at the input; for path methods
    ``baseline_target`` F at the baseline and ``gap`` = Σ scores − (target − baseline_target), else None.
    ``passes``: forward+backward passes of the whole model the method used (IG's cost)."""

    method: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    scores: np.ndarray
    target: float
    answer: str
    wrong: str | None
    baseline_target: float | None = None
    gap: float | None = None
    passes: int = 0
    forwards: int = 0
    baseline: str | None = None

    @property
    def relative_gap(self) -> float | None:
        """|gap| / |target − baseline_target|: the completeness error as a share of what is to be explained."""
        if self.gap is None or self.baseline_target is None:
            return None
        change = self.target - self.baseline_target
        return abs(self.gap) / abs(change) if change != 0 else float("inf") if self.gap else 0.0


@dataclass(frozen=True)
class Target:
    """The checked request: ids, the answer's (and wrong answer's) token id."""

    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    answer: int
    wrong: int | None


def check_target(model: Model, text: str | Sequence[int], answer: str, wrong: str | None = None,
                 max_tokens: int | None = None) -> Target:
    """Refuse what token attribution cannot do, with a clear message: encoders, empty text, multi-token answers."""
    if not model.is_causal_lm:
        raise ExplorerError(
            _("Token attribution explains a next-token prediction, and '{model}' is not a causal language model "
              "(it is an encoder). Choose SmolLM2 or Gemma 3.").format(model=model.name)
        )
    encoded = model.encode_input(text, max_tokens=max_tokens)
    if len(encoded.token_ids) < 2:
        raise ExplorerError(_("Token attribution needs a text of at least two tokens."))
    answer_id = model.single_token_id(answer, _("The answer"))
    wrong_id = None if wrong in (None, "") else model.single_token_id(wrong, _("The wrong answer"))
    if wrong_id is not None and wrong_id == answer_id:
        raise ExplorerError(_("The answer and the wrong answer are the same token."))
    return Target(tuple(encoded.token_ids), tuple(encoded.tokens), answer_id, wrong_id)


def special_prefix(model: Model, token_ids: Sequence[int]) -> int:
    """How many special tokens the tokenizer put in front of ``token_ids`` (Gemma's ``<bos>``: 1; SmolLM2: 0)."""
    lead = 0
    bos = model.token_ids("a", special=True)[: -len(model.token_ids("a", special=False)) or None]
    while lead < len(bos) and lead < len(token_ids) and token_ids[lead] == bos[lead]:
        lead += 1
    return lead


def target_of(model: Model, embeds: torch.Tensor, target: Target) -> torch.Tensor:
    """(B,) F for a batch of input embeddings (B, n, d_model): only the last position is unembedded."""
    hidden = model.base(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, -1]  # (B, d_model)
    logits = model.unembed(hidden, grad=torch.is_grad_enabled())  # (B, vocab)
    value = logits[:, target.answer]
    return value - logits[:, target.wrong] if target.wrong is not None else value


def targets_of_ids(model: Model, ids: Sequence[Sequence[int]], target: Target) -> list[float]:
    """F for each token-id sequence (of any lengths), one plain forward each, no gradients."""
    out = []
    embed = model.hf.get_input_embeddings()
    with torch.inference_mode():
        for row in ids:
            x = embed(torch.tensor([list(row)], device=model.device))  # (1, m, d)
            out.append(float(target_of(model, x, target)[0]))
    return out


def attribute(model: Model, text: str | Sequence[int], answer: str, wrong: str | None = None,
              method: str = "integrated_gradients", steps: int = DEFAULT_STEPS, baseline: str = DEFAULT_BASELINE,
              max_tokens: int | None = None) -> Attribution:
    """Scores per input token for F = logit(answer) (− logit(wrong)) at the last position of ``text``.

    ``steps``: Gauss–Legendre nodes of IG, shared out over the path's pieces; ``baseline``: ``"pad"`` (default) or
    ``"zero"`` (see the module docstring). Raises ExplorerError for encoders,
    an empty text, or an answer that is not one token."""
    if method not in METHODS:
        raise ExplorerError(_("Unknown attribution method {method!r}. Use one of: {methods}.").format(
            method=method, methods=", ".join(METHODS)))
    if baseline not in BASELINES:
        raise ExplorerError(_("Unknown baseline {baseline!r}. Use 'pad' or 'zero'.").format(baseline=baseline))
    target = check_target(model, text, answer, wrong, max_tokens)
    common = dict(method=method, tokens=target.tokens, token_ids=target.ids, answer=answer, wrong=wrong or None)
    if method in ("integrated_gradients", "gradient_x_input"):
        extra = dict(baseline=baseline) if method in PATH_METHODS else {}
        return Attribution(**common, **extra, **_gradient_method(model, target, method, steps, baseline))
    scores = _attention_method(model, target, method)
    return Attribution(**common, scores=scores, target=targets_of_ids(model, [target.ids], target)[0])


def _gradient_method(model: Model, target: Target, method: str, steps: int, baseline: str) -> dict:
    from captum.attr import InputXGradient, IntegratedGradients

    if int(steps) < 2:
        raise ExplorerError(_("Integrated gradients needs at least 2 steps."))
    embed = model.hf.get_input_embeddings()

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        return target_of(model, embeds, target)  # (B,)

    # Gradients here only, with respect to the embeddings only (see the module docstring); the ids are made here,
    # not under a caller's inference mode, so they can be saved for backward.
    with torch.inference_mode(False), torch.enable_grad():
        ids = torch.tensor([list(target.ids)], device=model.device)
        x = embed(ids).detach()  # (1, n, d_model): Gemma's embedding scales by √d inside the module, as in a forward
        if method == "gradient_x_input":
            per_dim = InputXGradient(forward).attribute(x.clone().requires_grad_(True))  # (1, n, d)
            with torch.no_grad():
                value = float(forward(x)[0])
            return dict(scores=per_dim[0].detach().sum(-1).double().cpu().numpy(), target=value, passes=1)
        b = baseline_embeddings(model, target, x, baseline)  # (1, n, d)
        with torch.no_grad():  # where along the path F changes: that is where the nodes go
            pieces, values = refine_path(lambda ts: [float(v) for v in forward(torch.cat([b + t * (x - b) for t in ts]))])
        total = torch.zeros_like(x, dtype=torch.float64)
        ig = IntegratedGradients(forward)
        for lo, hi in pieces:  # IG of each piece of the one straight path b → x, summed
            part = ig.attribute(b + hi * (x - b), baselines=b + lo * (x - b), n_steps=int(steps),
                                method="gausslegendre", internal_batch_size=INTERNAL_BATCH)  # (1, n, d)
            total += part.detach().double()
    scores = total[0].sum(-1).cpu().numpy()  # (n,)
    value, base = values[1.0], values[0.0]
    return dict(scores=scores, target=value, baseline_target=base, gap=float(scores.sum()) - (value - base),
                passes=int(steps) * len(pieces), forwards=len(values))


def refine_path(evaluate, grid: int = GRID, share: float = PIECE_SHARE, max_pieces: int = MAX_PIECES
                ) -> tuple[list[tuple[float, float]], dict[float, float]]:
    """Cut [0, 1] into pieces over which F changes by at most ``share`` of |F(1) − F(0)|: a uniform ``grid`` first,
    then pieces still changing more are halved (F at the new ends from ``evaluate(ts)``, a batch of forwards) until
    none is, or ``max_pieces`` are reached. Returns the pieces in order and F at every end evaluated."""
    ts = [k / grid for k in range(grid + 1)]
    values = dict(zip(ts, _batched(evaluate, ts)))
    pieces = list(zip(ts[:-1], ts[1:]))
    limit = share * abs(values[1.0] - values[0.0])
    while len(pieces) < max_pieces:
        wide = [p for p in pieces if abs(values[p[1]] - values[p[0]]) > limit and p[1] - p[0] > MIN_WIDTH]
        wide = sorted(wide, key=lambda p: -abs(values[p[1]] - values[p[0]]))[: max_pieces - len(pieces)]
        if not wide:
            break
        mids = [(lo + hi) / 2 for lo, hi in wide]
        values.update(zip(mids, _batched(evaluate, mids)))
        split = set(wide)
        pieces = sorted([q for p in pieces for q in (((p[0], (p[0] + p[1]) / 2), ((p[0] + p[1]) / 2, p[1]))
                                                     if p in split else (p,))])
    return pieces, values


def _batched(evaluate, ts: list[float]) -> list[float]:
    return [v for start in range(0, len(ts), INTERNAL_BATCH) for v in evaluate(ts[start : start + INTERNAL_BATCH])]


def baseline_embeddings(model: Model, target: Target, x: torch.Tensor, baseline: str) -> torch.Tensor:
    """IG's baseline b (1, n, d_model): ``"zero"``, all-zero embeddings; ``"pad"``, the pad token's embedding (else
    the end-of-text token's) at every position but the special tokens in front, which are kept."""
    if baseline == "zero":
        return torch.zeros_like(x)
    config = model.config
    ref = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    ref = ref[0] if isinstance(ref, (list, tuple)) else ref
    if ref is None:
        raise ExplorerError(_("The model '{model}' names no pad or end-of-text token for a baseline.").format(
            model=model.name))
    ids = torch.full((1, len(target.ids)), int(ref), device=x.device)
    lead = special_prefix(model, target.ids)
    ids[0, :lead] = torch.tensor(target.ids[:lead], device=x.device)
    return model.hf.get_input_embeddings()(ids).detach()


def _attention_method(model: Model, target: Target, method: str) -> np.ndarray:
    trace = model.trace(list(target.ids))
    last = torch.zeros(1, trace.n_tokens, dtype=torch.float64)
    last[0, -1] = 1.0  # e_last: the rollout's last row
    if method == "attention_rollout":
        return rollout_rows(trace, last)[0].numpy()
    if method == "contribution_rollout":
        return rollout_rows(trace, last, blocks=trace.contribution_blocks)[0].numpy()
    n, layer = trace.n_tokens, trace.n_layers - 1  # last_layer_attention
    row = torch.stack([trace.attention_window(layer, h, queries=slice(n - 1, n))[0] for h in range(trace.n_heads)])
    return row.mean(0, dtype=torch.float64).numpy()  # (n,)


__all__ = ["Attribution", "METHODS", "PATH_METHODS", "RESIDUAL_WEIGHT", "attribute", "check_target"]
