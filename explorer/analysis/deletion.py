"""Does the attribution point at what the model uses? Delete the tokens it ranks highest and watch the target fall.

Deleting removes the token ids from the input (the text is re-run without them; nothing is masked or zeroed). The
last token, the one that predicts, is never deleted, nor a special token the tokenizer put in front (Gemma's
``<bos>``: without it the model is out of its training distribution, which would reward any method ranking it
first). A faithful attribution's top tokens should move the target most: AOPC, the mean over k = 1 … K of
``F(x) − F(x without its top k)`` (Samek et al. 2017), is the faithfulness score; a random order is the baseline
every method should beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..capture.model import Model
from ..errors import ExplorerError
from ..i18n import _
from .attribution import Attribution, check_target, special_prefix, targets_of_ids

DEFAULT_STEPS = 5
RANDOM_ORDERS = 5  # random orders averaged for the baseline curve


@dataclass(frozen=True)
class DeletionCurve:
    """``targets[k]``: F after deleting the first k positions of ``order`` (targets[0] = F of the whole text);
    ``random_targets[k]``: the mean of the same over ``RANDOM_ORDERS`` seeded random orders; ``aopc`` and
    ``random_aopc``: the mean drop F(x) − targets[k] over k = 1 … steps."""

    method: str
    order: tuple[int, ...]
    targets: np.ndarray
    random_targets: np.ndarray
    aopc: float
    random_aopc: float


def deletable(model: Model, token_ids: Sequence[int]) -> list[int]:
    """Positions that may be deleted: not the last, not the special tokens the tokenizer adds in front."""
    return list(range(special_prefix(model, token_ids), len(token_ids) - 1))


def deletion_curve(model: Model, text: str | Sequence[int], attribution: Attribution, answer: str,
                   wrong: str | None = None, steps: int = DEFAULT_STEPS, seed: int = 0) -> DeletionCurve:
    """F after deleting the top-1 … top-``steps`` tokens by ``attribution`` (highest score first), with a seeded
    random order as the baseline. Raises ExplorerError when the attribution is of another text."""
    target = check_target(model, text, answer, wrong)
    if tuple(attribution.token_ids) != target.ids:
        raise ExplorerError(_("This attribution was made for another text; attribute this text first."))
    positions = deletable(model, target.ids)
    steps = int(steps)
    if not 1 <= steps <= len(positions):
        raise ExplorerError(_("Deletion steps must lie in 1–{most} for this text.").format(most=max(1, len(positions))))
    scores = np.asarray(attribution.scores, dtype=np.float64)
    order = sorted(positions, key=lambda p: (-scores[p], p))[:steps]  # stable: ties by position
    targets = _curve(model, target, order)
    rng = np.random.default_rng(seed)
    randoms = np.mean([_curve(model, target, list(rng.permutation(positions)[:steps])) for _ in range(RANDOM_ORDERS)],
                      axis=0)
    return DeletionCurve(attribution.method, tuple(order), targets, randoms,
                         float(np.mean(targets[0] - targets[1:])), float(np.mean(randoms[0] - randoms[1:])))


def _curve(model: Model, target, order: Sequence[int]) -> np.ndarray:
    """F of the text with order[:k] deleted, k = 0 … len(order)."""
    ids = list(target.ids)
    kept = [[t for i, t in enumerate(ids) if i not in set(order[:k])] for k in range(len(order) + 1)]
    return np.asarray(targets_of_ids(model, kept, target), dtype=np.float64)
