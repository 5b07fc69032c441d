"""Does this head matter? Switch heads off (ablation) and move their outputs between two texts (activation patching).

Every intervention acts at one place: the input of each layer's output projection W_o (``o_proj``, BERT's
``attention.output.dense``, GPT-2's ``c_proj``; see :func:`explorer.capture.projections.output_projection`), which holds
the heads' outputs side by side, head h at [h·D, (h+1)·D). Under GQA a query head's slice is its own, so a query
head is switched off alone while its key/value head stays shared with the others.

A forward pre-hook on that module, registered once at load time, reads the active :class:`Intervention` from a
``ContextVar``, as :mod:`explorer.capture.recorder` does, so two sessions running the shared model never see each other's.
With none active the hook returns at once and the model computes exactly what it computes without it.

Zero ablation, mean ablation and patching are one operation: replace some head slices by given values.
"""

from __future__ import annotations

import contextlib
import math
import operator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Literal, Sequence

import pandas as pd
import torch

from ..i18n import _
from ..errors import ExplorerError, check_layer_head
from .projections import output_projection
from .masks import MaskOverride
from .recorder import Recorder, recording

if TYPE_CHECKING:
    from .model import Model

Ablation = Literal["zero", "mean"]
ABLATIONS = ("zero", "mean")
METHODS = ("exact", "attribution")
Head = tuple[int, int]  # (layer, head)

# Patched runs of the exact sweep share forward passes as a batch of this many tokens (rows × text length): big
# enough that the matmuls run at full speed, small enough that a batch's activations stay well under a GiB.
TOKENS_PER_FORWARD = 2048


@dataclass(frozen=True)
class PatchResult:
    """What :func:`patch_heads` found: each head's effect, the two logit differences it is measured between, and the
    method. ``effects`` is (L, H) float64, NaN for heads that were not patched; ``heads`` lists the patched ones
    (sorted by layer, then head)."""

    effects: torch.Tensor  # (L, H)
    ld_clean: float
    ld_corrupt: float
    method: str
    heads: tuple[Head, ...]

    def effect(self, layer: int, head: int) -> float:
        """One head's effect (NaN when it was not patched)."""
        return float(self.effects[layer, head])

    def to_frame(self) -> pd.DataFrame:
        """One row per patched head, in :attr:`heads`' order: columns layer, head, effect."""
        return pd.DataFrame({"layer": [l for l, _ in self.heads], "head": [h for _, h in self.heads],
                             "effect": [self.effect(l, h) for l, h in self.heads]})


@dataclass(frozen=True)
class HeadSlices:
    """Replace head ``heads[i]``'s slice by ``values[i]`` (T or 1 positions, D or 1 dims: broadcast), in batch row
    ``rows[i]``, or in every row when ``rows`` is None."""

    heads: torch.Tensor  # (n,) long
    values: torch.Tensor  # (n, T | 1, D | 1)
    rows: torch.Tensor | None = None  # (n,) long

    def apply(self, a: torch.Tensor, n_heads: int) -> torch.Tensor:
        """a (B, T, H·D) → a copy with the slices replaced (the model's own tensor is never written)."""
        B, T, HD = a.shape
        out = a.clone()
        per_head = out.view(B, T, n_heads, HD // n_heads)  # (B, T, H, D), a view of out
        values, heads = self.values.to(out), self.heads.to(out.device)
        if self.rows is None:
            per_head[:, :, heads] = values.transpose(0, 1)  # (T|1, n, D|1) broadcast over rows
        else:
            per_head[self.rows.to(out.device), :, heads] = values  # indexing gives (n, T, D)
        return out


@dataclass
class Intervention:
    """What the output-projection hooks do during one call.

    ``capture``: layers whose input (before any edit) to keep in ``captured``, (B, T, H·D) each.
    ``replace``: per layer, the head slices to overwrite.
    ``expand``: (layer, rows): at that layer's W_o, turn a batch of one into ``rows`` copies. Patched runs thus share
    the unpatched layers below it (the residual add broadcasts the one row to all of them).
    ``differentiate``: add a zero leaf to every layer's input, kept in ``leaves``, so that ∂/∂leaf = ∂/∂a.
    """

    n_heads: int
    capture: frozenset[int] = frozenset()
    replace: dict[int, HeadSlices] = field(default_factory=dict)
    expand: tuple[int, int] | None = None
    differentiate: bool = False
    captured: dict[int, torch.Tensor] = field(default_factory=dict)
    leaves: dict[int, torch.Tensor] = field(default_factory=dict)

    def edit(self, layer: int, a: torch.Tensor) -> torch.Tensor | None:
        """The input W_o of ``layer`` should see instead of ``a`` (B, T, H·D), or None to leave it as it is."""
        if layer in self.capture:
            self.captured[layer] = a.detach()
        out = a
        if self.expand is not None and self.expand[0] == layer:
            out = out.expand(self.expand[1], *out.shape[1:])  # (rows, T, H·D) views of the one row
        if layer in self.replace:
            out = self.replace[layer].apply(out, self.n_heads)
        if self.differentiate:
            self.leaves[layer] = torch.zeros_like(out, requires_grad=True)
            out = out + self.leaves[layer]
        return None if out is a else out


_ACTIVE: ContextVar[Intervention | None] = ContextVar("explorer_active_intervention", default=None)


@contextlib.contextmanager
def intervening(intervention: Intervention | None) -> Iterator[Intervention | None]:
    """Make ``intervention`` the active one for forward passes in this context (thread / task); None: none."""
    token = _ACTIVE.set(intervention)
    try:
        yield intervention
    finally:
        _ACTIVE.reset(token)


class _OutputProjectionHook:
    """Forward pre-hook on one layer's W_o module: applies the active intervention, if any, to its input."""

    def __init__(self, layer: int):
        self.layer = layer

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple | None:
        intervention = _ACTIVE.get()
        if intervention is None:
            return None
        edited = intervention.edit(self.layer, args[0])
        return None if edited is None else (edited, *args[1:])


def register_output_hooks(model: Model) -> None:
    """Hook every layer's output projection (once, at load time). Architectures whose W_o module is unknown are
    left alone: they trace as before, and ablating or patching them raises the clear error of
    :func:`output_projection`."""
    try:
        modules = [output_projection(model, layer) for layer in range(model.n_layers)]
    except ExplorerError:
        return
    for layer, module in enumerate(modules):
        module.register_forward_pre_hook(_OutputProjectionHook(layer))


# ---- validation ----------------------------------------------------------------------------------------------


def check_heads(model: Model, heads: Sequence[Head], what: str | None = None) -> tuple[Head, ...]:
    """(layer, head) pairs checked against the model, without repeats, sorted by layer then head. ``what`` names one
    pair in the error, already translated (default: "head")."""
    what = _("head") if what is None else what
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Sequence):
        raise ExplorerError(_("Give each {what} as a (layer, head) pair, in a list.").format(what=what))
    checked = set()
    for item in heads:
        try:
            layer, head = item
            if isinstance(layer, bool) or isinstance(head, bool):  # True is an int to Python, but not an index
                raise TypeError
            layer, head = operator.index(layer), operator.index(head)  # int, numpy and 0-d torch integers
        except (TypeError, ValueError):
            raise ExplorerError(
                _("Give each {what} as a (layer, head) pair of integers, not {item!r}.").format(what=what, item=item)
            ) from None
        check_layer_head(layer, model.n_layers, head, model.n_heads)
        checked.add((layer, head))
    if checked:
        output_projection(model, 0)  # a clear error if this architecture's W_o is not known (no hooks then)
    return tuple(sorted(checked))


def check_ablation(model: Model, ablate: Sequence[Head], ablation: str) -> tuple[Head, ...]:
    if ablation not in ABLATIONS:
        raise ExplorerError(_("Unknown ablation {ablation!r}. Use 'zero' or 'mean'.").format(ablation=ablation))
    return check_heads(model, ablate, _("head to ablate"))


# ---- ablation ------------------------------------------------------------------------------------------------


def heads_by_layer(heads: Sequence[Head]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for layer, head in heads:
        grouped.setdefault(layer, []).append(head)
    return grouped


def ablation_intervention(
    model: Model, ids: torch.Tensor, heads: Sequence[Head], ablation: Ablation, mask: MaskOverride = None
) -> Intervention:
    """The intervention that switches ``heads`` off for the text ``ids`` (1, T).

    "zero" sets each head's slice to 0. "mean" sets it to its mean over the text's positions in an un-ablated run
    of the same text and mask, which this runs first.
    """
    by_layer = heads_by_layer(heads)
    if ablation == "zero":
        values = {layer: torch.zeros(len(hs), 1, 1) for layer, hs in by_layer.items()}  # broadcast to (n, T, D)
    else:
        probe = Intervention(model.n_heads, capture=frozenset(by_layer))
        # A recorder only to apply a mask override: with none it would keep every layer's q, k, v (1 GiB at 8,192
        # tokens) for nothing, and the attention computes the same numbers without it.
        override = (recording(Recorder(mask_override=mask, keep_inputs=False)) if mask is not None
                    else contextlib.nullcontext())
        with torch.inference_mode(), override, intervening(probe):
            model.base(input_ids=ids, use_cache=False)
        values = {}
        for layer, hs in by_layer.items():
            a = probe.captured[layer][0]  # (T, H·D)
            per_head = a.view(a.shape[0], model.n_heads, -1)[:, hs]  # (T, n, D)
            values[layer] = per_head.mean(dim=0)[:, None]  # (n, 1, D)
    replace = {layer: HeadSlices(torch.tensor(hs), values[layer]) for layer, hs in by_layer.items()}
    return Intervention(model.n_heads, replace=replace)


# ---- patching ------------------------------------------------------------------------------------------------


def _logit_difference(model: Model, ids: torch.Tensor, intervention: Intervention, answer: int, wrong: int,
                      grad: bool = False) -> torch.Tensor:
    """(B,) logit(answer) − logit(wrong) at the last position of each batch row, with ``intervention`` active."""
    with intervening(intervention):
        hidden = model.base(input_ids=ids, use_cache=False).last_hidden_state[:, -1]  # (B, d_model)
    logits = model.unembed(hidden, grad=grad)  # (B, vocab): only the last position is ever unembedded
    return logits[:, answer] - logits[:, wrong]


def patch_heads(
    model: Model,
    clean: str | Sequence[int],
    corrupt: str | Sequence[int],
    answer: str,
    wrong: str,
    method: str = "exact",
    heads: Sequence[Head] | None = None,
) -> PatchResult:
    """How much of the change from ``clean`` to ``corrupt`` each head carries, one row per (layer, head).

    The metric is LD = logit(answer) − logit(wrong) at the last position. Patching a head puts its slice of the W_o
    input, at every position, from the corrupt run into the clean run; its effect is
    (LD_patched − LD_clean) / (LD_corrupt − LD_clean): 1 when that head alone carries the whole difference, 0 when
    it carries none. ``method="exact"`` runs every patched forward (batched); ``"attribution"`` estimates all at
    once to first order, (a_corrupt − a_clean) · ∂LD/∂a, from one forward and one backward pass.

    Args:
        clean, corrupt: texts (or token-id lists) of the same number of tokens.
        answer, wrong: one token each, e.g. " Mary" and " John" (the leading space is part of the token).
        heads: the (layer, head) pairs to patch; all of them by default.

    Returns a :class:`PatchResult`: ``effects`` (L, H), ``ld_clean``, ``ld_corrupt``, ``method``; ``.to_frame()``
    gives the table (layer, head, effect).
    """
    if method not in METHODS:
        raise ExplorerError(
            _("Unknown patching method {method!r}. Use 'exact' or 'attribution'.").format(method=method)
        )
    if not model.is_causal_lm:
        raise ExplorerError(
            _("Patching compares next-token logits, and '{model}' is not a causal language model (it is an encoder).")
            .format(model=model.name) if model.kind == "encoder" else
            _("Patching compares next-token logits, and '{model}' is not a causal language model "
              "(it is a masked language model).").format(model=model.name)
        )
    all_heads = [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    chosen = check_heads(model, all_heads if heads is None else heads, _("head to patch"))
    if not chosen:
        raise ExplorerError(_("Choose at least one head to patch."))
    answer_id = model.single_token_id(answer, _("The answer"))
    wrong_id = model.single_token_id(wrong, _("The wrong answer"))
    clean_ids, corrupt_ids = (model.encode_input(t).token_ids for t in (clean, corrupt))
    if len(clean_ids) != len(corrupt_ids):
        raise ExplorerError(
            _("The clean text has {clean} tokens and the corrupt text has {corrupt}. Patching "
              "swaps head outputs position by position, so both must have the same number of tokens.").format(
                clean=len(clean_ids), corrupt=len(corrupt_ids))
        )
    pair = torch.tensor([clean_ids, corrupt_ids], device=model.device)  # (2, T): both runs in one forward
    if method == "exact":
        ld, effects = _exact(model, pair, chosen, answer_id, wrong_id)
    else:
        ld, effects = _attribution(model, pair, chosen, answer_id, wrong_id)
    ld_clean, ld_corrupt = ld
    grid = torch.full((model.n_layers, model.n_heads), float("nan"), dtype=torch.float64)  # (L, H)
    for (layer, head), effect in zip(chosen, effects):
        grid[layer, head] = effect
    return PatchResult(grid, float(ld_clean), float(ld_corrupt), method, chosen)


def _denominator(ld_clean: float, ld_corrupt: float) -> float:
    change = ld_corrupt - ld_clean
    # Logits of one forward agree across implementations to ~1e-4 in float32 (see tests/engine/test_parity.py); a
    # change smaller than that is noise, and dividing by it would turn noise into effects.
    if not math.isfinite(change) or abs(change) < 1e-4:
        raise ExplorerError(
            _("The clean and corrupt texts give the same logit difference ({clean:.4g} and {corrupt:.4g}), so "
              "there is no difference for a head to carry. Change the corrupt text so that the answer changes.").format(
                clean=ld_clean, corrupt=ld_corrupt)
        )
    return change


def _exact(model: Model, pair: torch.Tensor, heads: tuple[Head, ...], answer: int,
           wrong: int) -> tuple[tuple[float, float], list[float]]:
    """LDs of the clean and corrupt runs, and each head's effect from its own patched forward."""
    H, T = model.n_heads, pair.shape[1]
    runs = Intervention(H, capture=frozenset(layer for layer, _ in heads))
    with torch.inference_mode():
        ld_clean, ld_corrupt = _logit_difference(model, pair, runs, answer, wrong).tolist()
        change = _denominator(ld_clean, ld_corrupt)
        corrupt = {layer: a[1].view(T, H, -1) for layer, a in runs.captured.items()}  # (T, H, D) per layer
        clean = pair[:1]  # (1, T)
        per_forward = max(1, TOKENS_PER_FORWARD // T)
        patched: list[float] = []
        for start in range(0, len(heads), per_forward):
            chunk = heads[start : start + per_forward]  # sorted by layer: the batch starts at the first one's W_o
            replace = {}
            for layer, hs in heads_by_layer(chunk).items():
                rows = [i for i, (l, _) in enumerate(chunk) if l == layer]
                values = corrupt[layer][:, hs].transpose(0, 1)  # (n, T, D)
                replace[layer] = HeadSlices(torch.tensor(hs), values, torch.tensor(rows))
            sweep = Intervention(H, replace=replace, expand=(chunk[0][0], len(chunk)))
            patched += _logit_difference(model, clean, sweep, answer, wrong).tolist()
    return (ld_clean, ld_corrupt), [(p - ld_clean) / change for p in patched]


def _attribution(model: Model, pair: torch.Tensor, heads: tuple[Head, ...], answer: int,
                 wrong: int) -> tuple[tuple[float, float], list[float]]:
    """LDs of the clean and corrupt runs, and each head's first-order effect (a_corrupt − a_clean) · ∂LD/∂a."""
    H, T = model.n_heads, pair.shape[1]
    layers = sorted({layer for layer, _ in heads})
    runs = Intervention(H, capture=frozenset(layers), differentiate=True)
    # Gradients only here, and only with respect to the activations: inference_mode(False) also lifts a caller's
    # inference mode. autograd.grad never writes .grad, so the shared parameters are untouched.
    with torch.inference_mode(False), torch.enable_grad():
        pair = pair.clone()  # made under a caller's inference mode, the ids could not be saved for backward
        ld = _logit_difference(model, pair, runs, answer, wrong, grad=True)  # (2,)
        grads = torch.autograd.grad(ld[0], [runs.leaves[layer] for layer in layers])
    ld_clean, ld_corrupt = ld.detach().tolist()
    change = _denominator(ld_clean, ld_corrupt)
    per_layer = {}
    for layer, grad in zip(layers, grads):
        a = runs.captured[layer]  # (2, T, H·D): clean, corrupt
        contribution = (a[1] - a[0]) * grad[0]  # (T, H·D)
        per_layer[layer] = contribution.view(T, H, -1).sum(dim=(0, 2)) / change  # (H,)
    return (ld_clean, ld_corrupt), [per_layer[layer][head].item() for layer, head in heads]
