"""Head statistics: what kind of pattern each head computes, as one number per (layer, head).

The statistics are pure functions over attention tensors ``(..., n, n)`` (row i = query i, rows sum to 1) that
reduce the last two dimensions, so they can be checked on hand-made maps with known answers; :func:`head_stats`
composes them over a model's trace of a text and of an induction probe.

| statistic        | formula                                                   | queries averaged |
|------------------|-----------------------------------------------------------|------------------|
| entropy          | (1/n) Σ_i −Σ_j A_ij ln A_ij   (nats; uniform over n keys = ln n) | all n      |
| previous_token   | (1/(n−1)) Σ_{i≥1} A_{i,i−1}                               | i = 1 … n−1      |
| first_token      | (1/(n−1)) Σ_{i≥1} A_{i,0}                                  | i = 1 … n−1      |
| self             | (1/n) Σ_i A_ii                                             | all n            |
| induction        | (1/P) Σ_{i in 2nd half} A_{i, i−P+1}  on random tokens repeated twice (period P) | 2nd half |

Query 0 is left out of previous_token (it has no previous token) and of first_token (its "first token" is itself,
which a causal mask forces to 1: that weight is already the ``self`` statistic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..i18n import N_, _
from ..errors import ExplorerError
from ..capture import fused
from ..capture.tokens import Encoded

# ---- pure statistics over attention maps (..., n, n) ------------------------------------------------------------
def _check_square(attn: torch.Tensor) -> torch.Tensor:
    """The maps as a float tensor, in their own precision (converting every layer to float64 doubles the cost)."""
    attn = torch.as_tensor(attn)
    if attn.dim() < 2 or attn.shape[-1] != attn.shape[-2]:
        raise ExplorerError(
            _("Expected attention maps of shape (..., n, n), got {shape}.").format(shape=tuple(attn.shape))
        )
    return attn if attn.is_floating_point() else attn.double()


def entropy(attn: torch.Tensor) -> torch.Tensor:
    """Mean over queries of the Shannon entropy of each row, in nats (0·ln 0 = 0). Shape (..., n, n) → (...)."""
    return _query_mean(entropy_rows(_check_square(attn)))


def previous_token(attn: torch.Tensor) -> torch.Tensor:
    """Mean over queries i ≥ 1 of A[i, i−1]. NaN for a one-token map."""
    return _query_mean(previous_token_rows(_check_square(attn)))


def first_token(attn: torch.Tensor) -> torch.Tensor:
    """Mean over queries i ≥ 1 of A[i, 0]. NaN for a one-token map."""
    return _query_mean(first_token_rows(_check_square(attn)))


def self_attention(attn: torch.Tensor) -> torch.Tensor:
    """Mean over queries of A[i, i] (the diagonal)."""
    return _query_mean(self_rows(_check_square(attn)))


# ---- the same, one value per query, on a block of rows × keys of a map (for maps streamed a block at a time) ----
# ``a`` (..., Tq, Sk) holds queries first_query… and keys first_key…; keys outside the block have weight 0 (a mask hid
# them). Queries a statistic leaves out are NaN, so that the statistic is the NaN-skipping mean over all queries.
def entropy_rows(a: torch.Tensor, first_query: int = 0, first_key: int = 0) -> torch.Tensor:
    return torch.special.entr(a).sum(-1)  # entr(p) = −p ln p, and 0 at p = 0


def previous_token_rows(a: torch.Tensor, first_query: int = 0, first_key: int = 0) -> torch.Tensor:
    return _from_query(1, first_query, _weight_at(a, first_query, first_key, -1))


def first_token_rows(a: torch.Tensor, first_query: int = 0, first_key: int = 0) -> torch.Tensor:
    to_first = a[..., 0] if first_key == 0 else a.new_zeros(a.shape[:-1])
    return _from_query(1, first_query, to_first)


def self_rows(a: torch.Tensor, first_query: int = 0, first_key: int = 0) -> torch.Tensor:
    return _weight_at(a, first_query, first_key, 0)


def later_rows(a: torch.Tensor, first_query: int = 0, first_key: int = 0) -> torch.Tensor:
    """Σ_{j>i} A_ij for each query i of the block: the weight on keys after the query (0 under a causal mask)."""
    query = torch.arange(a.shape[-2])[:, None] + first_query  # (Tq, 1) absolute positions
    key = torch.arange(a.shape[-1])[None, :] + first_key  # (1, Sk)
    return a.masked_fill(key <= query, 0).sum(-1)


def _weight_at(a: torch.Tensor, first_query: int, first_key: int, offset: int) -> torch.Tensor:
    """(..., Tq): A[i, i + offset] for each query i of the block (0 where that key lies outside it)."""
    rows = torch.arange(a.shape[-2])
    keys = rows + first_query + offset - first_key  # column of key i + offset within the block
    inside = (keys >= 0) & (keys < a.shape[-1])
    weights = a[..., rows, keys.clamp(0, a.shape[-1] - 1)]
    return torch.where(inside, weights, torch.zeros((), dtype=a.dtype))


def _from_query(first_counted: int, first_query: int, values: torch.Tensor) -> torch.Tensor:
    """``values`` with queries before ``first_counted`` set to NaN (left out of the mean)."""
    query = torch.arange(values.shape[-1]) + first_query
    return torch.where(query >= first_counted, values, torch.full((), math.nan, dtype=values.dtype))


def _query_mean(per_query: torch.Tensor) -> torch.Tensor:
    """Mean over the queries that count (NaN when none does)."""
    return per_query.nanmean(-1)


def induction(attn: torch.Tensor, period: int, start: int = 0) -> torch.Tensor:
    """Induction score on a map of ``start`` prefix tokens, then P random tokens, then the same P tokens again.

    For each query i in the repeat (``start+P ≤ i < start+2P``) its earlier occurrence is i−P; an induction head
    attends to the token that came right after it, i−P+1. The score is the mean of A[i, i−P+1].
    """
    a = _check_square(attn)
    if period < 1 or start < 0 or start + 2 * period > a.shape[-1]:
        raise ExplorerError(
            _("An induction probe of period {period} at offset {start} needs ≥ {needed} tokens.").format(
                period=period, start=start, needed=start + 2 * period
            )
        )
    queries = torch.arange(start + period, start + 2 * period)
    return a[..., queries, queries - period + 1].mean(-1)


@dataclass(frozen=True)
class OneKey:
    """The one key a statistic reads in each query i's row: key i + ``offset`` (a diagonal), or key ``column``
    whatever the query."""

    offset: int = 0
    column: int | None = None

    def of(self, queries: torch.Tensor) -> torch.Tensor:
        """The key each of ``queries`` (positions) reads."""
        return torch.full_like(queries, self.column) if self.column is not None else queries + self.offset

    def probabilities(self, trace, layer: int, heads: slice = slice(None)) -> torch.Tensor:
        """(h, n) float32: that cell of every row of the layer's ``heads``, from q, k and the log-sum-exp."""
        if self.column is not None:
            return fused.column(trace, layer, self.column, heads)
        return fused.diagonal(trace, layer, self.offset, heads)


@dataclass(frozen=True)
class Statistic:
    """One head statistic, as the engine computes it and the pages show it: the one list of them (issue #20).

    ``label`` and ``meaning`` are marked for translation (show them with ``_()``). ``measured_on`` is ``"text"``
    (the user's text) or ``"probe"`` (the induction probe). For a text statistic, ``whole`` reduces whole maps
    (..., n, n) → (...) and ``rows`` gives one value per query of a streamed block (NaN for queries left out);
    ``first_query`` and ``key`` name its one cell per query (for queries i ≥ first_query), when it is one, which the
    fused overview reads without a map; entropy has none (it comes from the kernel with V = K).
    """

    name: str
    label: str
    formula: str  # one-line LaTeX (A is the head's map, rows = queries)
    meaning: str  # what a high value means, in one sentence
    measured_on: str
    whole: Callable[[torch.Tensor], torch.Tensor] | None = None
    rows: Callable[..., torch.Tensor] | None = None
    first_query: int = 0
    key: OneKey | None = None


REGISTRY: dict[str, Statistic] = {stat.name: stat for stat in (
    Statistic(
        "entropy", N_("Entropy"), r"H = -\frac{1}{n}\sum_{i}\sum_{j} A_{ij}\ln A_{ij}",
        N_("How spread out each query's attention is, in nats: 0 = all on one key; ln n = evenly over n keys."),
        "text", entropy, entropy_rows),
    Statistic(
        "previous_token", N_("Previous token"), r"\mathrm{prev} = \frac{1}{n-1}\sum_{i=1}^{n-1} A_{i,\,i-1}",
        N_("How much each token attends to the token just before it."),
        "text", previous_token, previous_token_rows, first_query=1, key=OneKey(offset=-1)),
    Statistic(
        "first_token", N_("First token"), r"\mathrm{first} = \frac{1}{n-1}\sum_{i=1}^{n-1} A_{i,\,0}",
        N_("How much each token attends to position 0 (an 'attention sink' when large)."),
        "text", first_token, first_token_rows, first_query=1, key=OneKey(column=0)),
    Statistic(
        "self", N_("Self"), r"\mathrm{self} = \frac{1}{n}\sum_{i} A_{ii}",
        N_("How much each token attends to itself (the diagonal)."),
        "text", self_attention, self_rows, key=OneKey(offset=0)),
    Statistic(
        "induction", N_("Induction"), r"\mathrm{ind} = \frac{1}{P}\sum_{i=s+P}^{s+2P-1} A_{i,\,i-P+1}",
        N_("On P random tokens repeated twice (after s special tokens), how much a token in the repeat attends "
           "to the token that followed its earlier occurrence: the 'copy what came next last time' pattern of "
           "induction heads."),
        "probe"),
)}

#: Every statistic's name, in the table's order; and the views of the registry the pages and tests read.
STATISTICS = tuple(REGISTRY)
LABELS = {name: stat.label for name, stat in REGISTRY.items()}
FORMULAS = {name: stat.formula for name, stat in REGISTRY.items()}
MEANINGS = {name: stat.meaning for name, stat in REGISTRY.items()}
#: The statistics of the user's text, name → the function on whole maps.
TEXT_STATISTICS = {name: stat.whole for name, stat in REGISTRY.items() if stat.measured_on == "text"}
#: The text statistics one query at a time, on a block of a map (see :class:`StatisticSums`).
ROW_STATISTICS = {name: stat.rows for name, stat in REGISTRY.items() if stat.rows is not None}
ROW_STATISTICS["later_tokens"] = later_rows  # not a head statistic: what the masking page says a bidirectional map adds
#: Statistics the fused overview computes without a map (:func:`fused_statistics`); others are streamed.
FUSED_STATISTICS = tuple(name for name, stat in REGISTRY.items()
                         if stat.measured_on == "text" and (stat.key is not None or name == "entropy"))


class StatisticSums:
    """Text statistics of maps streamed a block of queries at a time: :meth:`add` each block (every query once),
    then :meth:`result`. Sums in float64 over the queries that count."""

    def __init__(self, names: Sequence[str], lead: tuple[int, ...]):
        self._sum = {name: torch.zeros(lead, dtype=torch.float64) for name in names}
        self._count = {name: torch.zeros(lead, dtype=torch.float64) for name in names}

    def add(self, queries: slice, keys: slice, block: torch.Tensor) -> None:
        """``block`` (..., Tq, Sk): the maps' cells ``[queries, keys]``; keys outside hold weight 0."""
        for name in self._sum:
            per_query = ROW_STATISTICS[name](block, queries.start, keys.start).double()
            self._sum[name] += per_query.nansum(-1)
            self._count[name] += (~per_query.isnan()).sum(-1)

    def result(self) -> dict[str, np.ndarray]:
        return {name: torch.where(self._count[name] > 0, total / self._count[name].clamp(min=1), math.nan).numpy()
                for name, total in self._sum.items()}


# ---- the induction probe ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InductionProbe:
    """Random tokens t_1..t_P repeated twice, wrapped in the tokenizer's own special tokens (e.g. [CLS] … [SEP])."""

    encoded: Encoded
    start: int  # index of t_1 (the number of special tokens in front)
    period: int  # P


def special_affixes(model) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after any text (BERT: [CLS] / [SEP]; SmolLM2: none)."""
    plain, full = model.token_ids("hello", special=False), model.token_ids("hello")
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain) :])
    return [], []


def induction_probe(model, period: int = 50, seed: int = 0, low: int = 1000, high: int = 20000) -> InductionProbe:
    """A deterministic probe: ``period`` distinct random ids (seeded), repeated twice.

    Ids come from ``[low, high)`` minus the special ids: below ~1000 most vocabularies keep bytes, special and
    unused tokens; the range is clipped to the vocabulary. Distinct ids make "the earlier occurrence" unique.
    """
    vocab = model.vocab_size
    high = min(high, vocab)
    low = min(low, max(0, high - 2 * period))
    special = model.special_ids
    candidates = torch.tensor([i for i in range(low, high) if i not in special])
    if len(candidates) < period:
        raise ExplorerError(
            _("The vocabulary is too small for an induction probe of {period} distinct tokens.").format(period=period)
        )
    generator = torch.Generator().manual_seed(seed)
    random_ids = candidates[torch.randperm(len(candidates), generator=generator)[:period]].tolist()
    before, after = special_affixes(model)
    ids = before + random_ids + random_ids + after
    tokens = [model.decode_token(i) for i in ids]
    return InductionProbe(Encoded("".join(tokens), ids, tokens), start=len(before), period=period)


# ---- composing: one table per model and text ---------------------------------------------------------------------
def fused_statistics(trace, layer: int, names: Sequence[str], heads: slice = slice(None),
                     mean_keys: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Text statistics of one layer's ``heads`` without its maps: name → (h,) float64, for names in
    :data:`FUSED_STATISTICS`.

    A statistic that names one key per query (previous token, first token, self) reads that cell of each row,
    ``exp(q_i·k_j·scale − lse_i)``: O(n·d) (:func:`explorer.capture.fused.diagonal`,
    :func:`~explorer.capture.fused.column`). Entropy is ``H_i = lse_i − scale·q_i·Σ_j p_ij k_j`` (−Σ p ln p with
    ln p_ij = s_ij − lse_i over the allowed keys), the inner sum one call of the fused kernel with V = K
    (:func:`explorer.capture.fused.mean_keys`). Queries that may see no key have entropy 0, as −Σ 0 ln 0 gives.
    ``mean_keys``: that sum when the caller already has it (:func:`explorer.capture.fused.mean_keys_and`)."""
    n_heads = len(range(*heads.indices(trace.n_heads)))
    out = {}
    if "entropy" in names:
        out["entropy"] = fused.entropy_rows(trace, layer, heads, mean_keys).mean(-1).numpy()
    for name in names:
        if name == "entropy":
            continue
        stat = REGISTRY[name]
        if stat.key is None:
            raise ValueError(_("The statistic {name} has no fused form: read it from the maps.").format(name=name))
        cells = stat.key.probabilities(trace, layer, heads)[:, stat.first_query :]  # (h, queries that count)
        # a one-token text has no previous token: NaN, as the streamed mean over no query
        out[name] = cells.double().mean(-1).numpy() if cells.shape[-1] else np.full(n_heads, math.nan)
    return {name: out[name] for name in names}


def text_statistics(trace) -> dict[str, np.ndarray]:
    """entropy / previous_token / first_token / self of every head of a trace: name → (n_layers, n_heads).
    From O(n·d) reads and one fused-kernel call per layer (:func:`fused_statistics`), never the maps; a trace the
    fused module cannot read (a word-level view) from its streamed maps."""
    if not fused.supports(trace):  # a word-level view: only its maps exist
        return streamed_text_statistics(trace)
    out = {name: np.zeros((trace.n_layers, trace.n_heads)) for name in TEXT_STATISTICS}
    for layer in range(trace.n_layers):
        for name, values in fused_statistics(trace, layer, tuple(TEXT_STATISTICS)).items():
            out[name][layer] = values
    return out


def streamed_text_statistics(trace) -> dict[str, np.ndarray]:
    """:func:`text_statistics` from every layer's exact maps read a block of queries at a time (Trace.row_blocks):
    the reference the fused statistics are tested against."""
    out = {name: np.zeros((trace.n_layers, trace.n_heads)) for name in TEXT_STATISTICS}
    for layer in range(trace.n_layers):
        sums = StatisticSums(TEXT_STATISTICS, (trace.n_heads,))
        for queries, keys, block in trace.row_blocks(layer):
            sums.add(queries, keys, block)
        for name, values in sums.result().items():
            out[name][layer] = values
    return out


def sink_share(trace, layer: int) -> float:
    """The layer's first_token statistic averaged over its heads (the first-token "sink"), from key 0's column
    alone: n weights a head, not the (n, n) maps. NaN for a one-token text, which has no sink to measure."""
    if trace.n_tokens < 2:
        return math.nan
    to_first = torch.stack([trace.attention_window(layer, h, keys=slice(0, 1))[:, 0]
                            for h in range(trace.n_heads)])  # (H, n)
    return float(to_first[:, 1:].double().mean())


def sink_shares(trace) -> np.ndarray:
    """(n_layers,) :func:`sink_share` of every layer: how much attention each layer parks on token 0."""
    return np.array([sink_share(trace, layer) for layer in range(trace.n_layers)])


def induction_scores(probe_trace, probe: InductionProbe) -> np.ndarray:
    """(n_layers, n_heads) induction scores from a trace of ``probe``: the one cell A[i, i−P+1] of each query in
    the repeat, gathered from q, k and the log-sum-exp (:func:`explorer.capture.fused.cells`), not the maps."""
    queries = torch.arange(probe.start + probe.period, probe.start + 2 * probe.period)
    keys = queries - probe.period + 1
    return np.stack([fused.cells(probe_trace, layer, queries, keys).double().mean(-1).numpy()
                     for layer in range(probe_trace.n_layers)])


def stats_frame(values: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (layer, head), one column per statistic (``values``: name → (n_layers, n_heads))."""
    n_layers, n_heads = next(iter(values.values())).shape
    layer, head = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    frame = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel()})
    for name in STATISTICS:
        frame[name] = values[name].ravel().astype(np.float64)
    return frame


def head_stats(
    model,
    text: str | None = None,
    *,
    mask: str | None = None,
    trace=None,
    period: int = 50,
    seed: int = 0,
    max_tokens: int | None = None,
) -> pd.DataFrame:
    """Every head's statistics: columns layer, head, entropy, previous_token, first_token, self, induction.

    entropy / previous_token / first_token / self are measured on ``text`` (or on an existing ``trace`` of it);
    with neither, on the induction probe itself. induction is always measured on the probe (``period`` random
    tokens repeated twice, seeded by ``seed``). ``mask`` applies to both traces (None = the model's own).
    """
    probe = induction_probe(model, period=period, seed=seed)
    probe_trace = model.trace_ids(probe.encoded, mask=mask, keep_inputs=False)
    if trace is None and text is not None:
        trace = model.trace(text, mask=mask, keep_inputs=False, max_tokens=max_tokens)
    values = text_statistics(trace if trace is not None else probe_trace)
    values["induction"] = induction_scores(probe_trace, probe)
    return stats_frame(values)


# ---- one telling head, for a first look --------------------------------------------------------------------------
@dataclass(frozen=True)
class TellingHead:
    """The head that shows most plainly what attention does with a text, and why it was picked."""

    layer: int
    head: int
    kind: str  # "previous_token" | "self" | "first_token": the pattern it shows
    score: float  # that statistic's value for this head (a share of attention, 0…1)


# The patterns a newcomer can see at a glance, in order of preference on ties: a diagonal just below the main one, the
# main diagonal, one bright column. The sink comes last: most heads of a causal LM park attention there, so it is the
# least telling, and is shown only when no head follows tokens more than this share of the time.
TELLING_KINDS = ("previous_token", "self", "first_token")
CLEAR_PATTERN = 0.3


def telling_head(values: dict[str, np.ndarray]) -> TellingHead:
    """Pick one head from :func:`text_statistics`' ``values`` (name → (n_layers, n_heads)).

    The strongest previous-token or self head, when its score reaches :data:`CLEAR_PATTERN`; otherwise the strongest
    first-token (sink) head. NaN scores (a one-token text has no previous token) count as −1 and never win.
    """

    def strongest(kind: str) -> TellingHead:
        scores = np.nan_to_num(np.asarray(values[kind], dtype=np.float64), nan=-1.0)
        layer, head = np.unravel_index(int(np.argmax(scores)), scores.shape)  # the first of equal maxima
        return TellingHead(int(layer), int(head), kind, float(scores[layer, head]))

    pattern = max((strongest(kind) for kind in TELLING_KINDS[:2]), key=lambda h: h.score)  # ties: previous_token
    return pattern if pattern.score >= CLEAR_PATTERN else strongest("first_token")
