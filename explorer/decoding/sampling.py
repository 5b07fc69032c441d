"""The sampling pipeline, one named distribution per stage: logits → softmax → ÷T → top-k → top-p → sample.

The order is the one ``transformers`` applies its logits warpers in (temperature, then top-k, then top-p), so
the knobs mean here what they mean in ``model.generate``:

1. ``softmax``: the model's own distribution, ``softmax(z)``.
2. ``temperature``: ``softmax(z / T)``. ``T = 0`` is greedy: all mass on the arg-max token.
3. ``top-k``: keep the ``k`` most probable tokens and renormalise. ``k = 0`` (or ``k ≥ vocab``) is off.
   Ties at the k-th value are broken by token index, so exactly ``k`` tokens survive (transformers keeps all
   tied tokens; with real-valued logits ties practically never happen).
4. ``top-p`` (nucleus): on the top-k distribution sorted by probability, keep the smallest prefix whose mass
   reaches ``p`` and renormalise. ``p = 1`` is off; ``p = 0`` keeps the single most probable token.
5. ``final``: the renormalised distribution the next token is drawn from (equal to the last cut).

Every stage is a full distribution over the vocabulary that sums to 1; a cut stage also says which tokens it kept
and what share of the previous stage's mass that was, so the page can show what each knob removed.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from ..i18n import _
from ..errors import ExplorerError

STAGE_NAMES = ("softmax", "temperature", "top-k", "top-p", "final")


@dataclass(frozen=True)
class Knobs:
    """Validated sampling settings. Build with :meth:`Knobs.of` to get clear errors for bad values."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @classmethod
    def of(cls, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> "Knobs":
        """Check the three knobs and return them normalised (``top_k`` as an int)."""
        return cls(_check_temperature(temperature), _check_top_k(top_k), _check_top_p(top_p))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: one of :data:`STAGE_NAMES`. ``label``: the stage with its knob, for display ("top-k = 50").
        probs: (vocab,) float32 on the CPU, sums to 1.
        kept: (vocab,) bool: the tokens this stage let through from the previous one (None: it cuts nothing).
        mass_kept: the share of the previous stage's probability mass on the kept tokens (1.0 when none is cut).
        active: False when the knob is off (the stage then equals the previous one).
    """

    name: str
    label: str
    probs: torch.Tensor
    kept: torch.Tensor | None = None
    mass_kept: float = 1.0
    active: bool = True

    @property
    def n_kept(self) -> int:
        """How many tokens carry probability after this stage."""
        return int((self.probs > 0).sum())


def stages(logits: torch.Tensor, knobs: Knobs) -> list[Stage]:
    """Run ``logits`` (vocab,) through the pipeline and return its five stages (see the module docstring).

    Each cut touches only the tokens it keeps (a scatter into zeros), so a step costs a few passes over the
    vocabulary: this runs once per generated token.
    """
    z = _check_logits(logits)
    raw = torch.softmax(z, dim=-1)
    out = [Stage("softmax", "softmax", raw)]

    if knobs.greedy:
        tempered = torch.zeros_like(raw)
        tempered[int(torch.argmax(z))] = 1.0
        out.append(Stage("temperature", _("T = 0: greedy"), tempered))
    else:
        # softmax subtracts the maximum first, so z/T stays well conditioned for tiny and huge T alike.
        tempered = raw if knobs.temperature == 1.0 else torch.softmax(z / knobs.temperature, dim=-1)
        out.append(Stage("temperature", f"÷ T = {knobs.temperature:g}", tempered, active=knobs.temperature != 1.0))

    vocab = z.shape[-1]
    if 0 < knobs.top_k < vocab:
        # Ranked on the logits: the same order as every temperature, and still meaningful at T = 0.
        out.append(_keep("top-k", f"top-k = {knobs.top_k}", tempered, torch.topk(z, knobs.top_k).indices))
    else:
        out.append(Stage("top-k", _("top-k: off"), tempered, active=False))

    before = out[-1].probs
    if knobs.top_p < 1.0:
        out.append(_keep("top-p", f"top-p = {knobs.top_p:g}", before, _nucleus_indices(before, knobs.top_p)))
    else:
        out.append(Stage("top-p", _("top-p: off"), before, active=False))

    out.append(Stage("final", _("sampled from"), out[-1].probs))
    return out


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(vocab,) bool: the smallest set of most probable tokens whose mass reaches ``top_p`` (at least one token).

    A token is kept when the mass of the tokens ranked above it is still below ``top_p``.
    """
    kept = torch.zeros_like(probs, dtype=torch.bool)
    kept[_nucleus_indices(probs, top_p)] = True
    return kept


def _nucleus_indices(probs: torch.Tensor, top_p: float, window: int = 1024) -> torch.Tensor:
    """The nucleus's token ids, most probable first. Ranks a growing top window rather than sorting the whole
    vocabulary: the nucleus is usually far smaller than the vocabulary."""
    vocab = probs.shape[-1]
    window = min(window, vocab)
    while True:
        ranked, ids = torch.topk(probs, window)  # sorted, largest first
        ranked = ranked.double()
        keep = ((torch.cumsum(ranked, dim=0) - ranked) < top_p) & (ranked > 0)  # a prefix of the ranking
        keep[0] = True
        n = int(keep.sum())
        if n < window or window == vocab:
            return ids[:n]
        window = min(vocab, window * 8)


def _keep(name: str, label: str, before: torch.Tensor, ids: torch.Tensor) -> Stage:
    """The stage that keeps only ``ids`` of ``before``, renormalised."""
    kept_probs = before[ids].double()
    mass = float(kept_probs.sum())
    probs = torch.zeros_like(before)
    probs[ids] = (kept_probs / mass).float()
    kept = torch.zeros_like(before, dtype=torch.bool)
    kept[ids] = True
    return Stage(name, label, probs, kept=kept, mass_kept=mass)


def draw(probs: torch.Tensor, u: float) -> int:
    """Inverse-CDF sampling: the token whose cumulative-probability interval contains ``u`` ∈ [0, 1).

    Tokens with zero probability have empty intervals, so they are never drawn.
    """
    support = torch.nonzero(probs > 0).squeeze(1)  # in token order; after a cut, only the kept tokens
    cdf = torch.cumsum(probs[support].double(), dim=0)
    position = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64), right=True)[0])
    return int(support[min(position, support.shape[0] - 1)])


def uniform(seed: int, step: int) -> float:
    """A reproducible u ∈ [0, 1) for one step of one seeded run: the same (seed, step) always gives the same u.

    Keying on the step index (rather than advancing one generator) means that going back and stepping again
    redraws the same token, and any path through the stepper is reproducible from its seed.
    """
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63))
    return float(torch.rand(1, generator=generator, dtype=torch.float64))


# ---- validation ------------------------------------------------------------------------------------------------
def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_temperature(value: object) -> float:
    if not _is_number(value) or math.isnan(float(value)):
        raise ExplorerError(_("Temperature must be a number ≥ 0 (0 = greedy), not {value!r}.").format(value=value))
    t = float(value)
    if t < 0 or math.isinf(t):
        raise ExplorerError(
            _("Temperature must be finite and ≥ 0 (0 = greedy; 1 = the model's own), not {value:g}.").format(value=t)
        )
    return t


def _check_top_k(value: object) -> int:
    if not _is_number(value) or math.isnan(float(value)) or float(value) != int(float(value)):
        raise ExplorerError(_("top-k must be a whole number ≥ 0 (0 = off), not {value!r}.").format(value=value))
    k = int(value)
    if k < 0:
        raise ExplorerError(_("top-k must be ≥ 0 (0 = off), not {value}.").format(value=k))
    return k


def _check_top_p(value: object) -> float:
    if not _is_number(value) or math.isnan(float(value)):
        raise ExplorerError(_("top-p must be a number between 0 and 1 (1 = off), not {value!r}.").format(value=value))
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise ExplorerError(
            _("top-p must be between 0 and 1 (1 = off; 0 keeps only the top token), not {value:g}.").format(value=p)
        )
    return p


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    z = logits.detach().float().cpu().reshape(-1)
    if z.numel() == 0:
        raise ExplorerError(_("There are no logits to sample from."))
    top = float(z.max())  # NaN if any is NaN; +inf if any is; -inf if every token is masked
    if not math.isfinite(top):
        raise ExplorerError(_("The model produced NaN or infinite logits; it cannot be sampled from."))
    return z
