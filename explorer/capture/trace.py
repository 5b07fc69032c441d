"""A Trace: everything one forward pass of one text used in its attention, with exact maps rebuilt on demand.

Holding every map of a 30-layer, 9-head model at n = 4096 would take ~18 GiB; the trace holds Q/K/V and the
log-sum-exp of each score row instead (~0.5 GiB) and rebuilds a head's map with one matmul when asked.
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Literal, Sequence

import torch

from ..i18n import _
from ..errors import ExplorerError, check_heads, check_layer_head
from . import contributions
from .gqa import kv_for_heads
from .masks import MaskKind, allowed_block, visible_keys
from .recorder import AttentionRecord, attention_probs
from .words import Word, by_word, segment, spans_from_labels

Mask = MaskKind  # the name this module used before masks.py

# trace.logits (every position) refuses above this: Gemma 3 at 8,192 tokens would need 8 GiB. Pages ask logits_at.
LOGITS_LIMIT_BYTES = 2 << 30
# Largest block of probabilities row_blocks computes at once. A whole layer of SmolLM2 at 8,192 tokens is 2.4 GiB
# (9 × 8192² float32), and scoring it needs two or three times that; blocks of rows keep a pass over it small.
ROW_BLOCK_BYTES = 64 << 20


class LayerView:
    """What ran at one layer of a trace, read-only: ``trace.layer(l)``. Its tensors are read through the trace's
    readers (``trace.attention(l, h)``, ``trace.q(l, h)``, …), or all heads at once here (float32, CPU)."""

    __slots__ = ("_record",)

    def __init__(self, record: AttentionRecord):
        self._record = record

    def __repr__(self) -> str:
        window = f", window={self.window}" if self.window else ""
        return (f"LayerView(index={self.index}, mask_kind={self.mask_kind!r}{window}, heads={self.n_heads}, "
                f"kv_heads={self.n_kv_heads}, queries={self.n_queries}, keys={self.n_keys})")

    @property
    def index(self) -> int:
        return self._record.layer

    @property
    def mask_kind(self) -> MaskKind:
        """``"causal"``, ``"bidirectional"``, ``"sliding"`` (see :attr:`window`) or ``"custom"``."""
        return self._record.mask_kind

    @property
    def window(self) -> int | None:
        """Keys per query, itself included, when :attr:`mask_kind` is ``"sliding"``; else None."""
        return self._record.window

    @property
    def mask_is_model_default(self) -> bool:
        """False when an override made this layer's mask differ from the model's own."""
        return self._record.mask_is_model_default

    @property
    def scale(self) -> float:
        return self._record.scale

    @property
    def n_heads(self) -> int:
        return self._record.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self._record.n_kv_heads

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (GQA)."""
        return self._record.group_size

    @property
    def head_dim(self) -> int:
        return self._record.q.shape[-1]

    @property
    def n_queries(self) -> int:
        return self._record.q.shape[1]

    @property
    def n_keys(self) -> int:
        """Keys the layer's queries were scored against (more than the queries over a cache)."""
        return self._record.k.shape[1]

    def q(self) -> torch.Tensor:
        """(H, T, D) every query head's vectors (after RoPE where the model uses it)."""
        return self._record.q.float().cpu()

    def k(self) -> torch.Tensor:
        """(H_kv, S, D) the key heads (GQA: fewer than the query heads)."""
        return self._record.k.float().cpu()

    def v(self) -> torch.Tensor:
        """(H_kv, S, D) the value heads."""
        return self._record.v.float().cpu()

    def lse(self) -> torch.Tensor:
        """(H, T) each score row's log-sum-exp."""
        return self._record.lse.float().cpu()


@dataclass
class Trace:
    """The attention of one text through one model.

    Attributes:
        text: the input text. ``tokens``: one readable string per token. ``token_ids``: the ids the model ran on.
        mask: the mask that ran (``"causal"`` or ``"bidirectional"``; ``"sliding"`` when some layers see only a
            window of recent keys, as in Gemma 3: each record's ``mask_kind`` and ``window`` say which; else
            ``"custom"``).
        mask_is_model_default: False when an override made some layer's mask differ from the model's own (the
            computation is then a what-if); an override equal to the model's own mask leaves it True.
        hidden_states: the residual stream, ``n_layers + 1`` tensors (n, d_model), embeddings first.
        final_hidden: the model's last hidden state (after its final norm), which the unembedding reads.
    """

    unit: ClassVar[str] = "token"  # what a map's rows and columns are (explorer.capture.word_trace: "word")

    text: str
    tokens: list[str]
    token_ids: list[int]
    records: list[AttentionRecord]  # internal to capture/: read through layer(), attention() and the readers
    mask: MaskKind
    mask_is_model_default: bool
    model_name: str
    truncated_from: int | None = None
    offsets: list[tuple[int, int]] | None = None  # each token's character span in text (for words())
    hidden_states: tuple[torch.Tensor, ...] = ()
    final_hidden: torch.Tensor | None = None
    ablated: tuple[tuple[int, int], ...] = ()  # (layer, head) pairs switched off in this run (Model.trace's ablate)
    ablation: str | None = None  # how they were: "zero" or "mean"; None when nothing was ablated
    # The model's unembedding, held weakly: a cached trace must not keep a GiB-sized model alive after it is unloaded.
    _unembed: weakref.WeakMethod | None = field(default=None, repr=False)
    _logits: torch.Tensor | None = field(default=None, repr=False)
    # The model itself, weakly too: contributions and QK attribution read its weights (W_o, W_q, W_k, norms).
    _model: weakref.ref | None = field(default=None, repr=False)
    # Per layer, the module (input norm, or Identity) that rebuilds x from hidden_states[layer] where the record
    # did not keep x (Model.input_rebuilders). Held strongly: a norm is d_model weights, not the model.
    _x_rebuild: tuple[torch.nn.Module | None, ...] = field(default=(), repr=False)

    # ---- sizes -------------------------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def n_layers(self) -> int:
        return len(self.records)

    @property
    def n_heads(self) -> int:
        return self.records[0].n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.records[0].n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.records[0].q.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.records[0].q.device

    @property
    def dtype(self) -> torch.dtype:
        """The type the model ran in (its records' q, k, v): a bfloat16 trace differs from a float32 one."""
        return self.records[0].q.dtype

    @property
    def fingerprint(self) -> str:
        """What tells this trace's numbers from any other's: model, device, dtype, text and token ids, the mask each
        layer ran with (a custom one by its contents) and the heads ablated. Two traces share it only when they hold
        the same computation; caches of analyses (the app's ``st.cache_data``) are keyed by it."""
        masks = tuple((r.mask_kind, r.window, None if r.allowed is None else
                       hashlib.blake2b(r.allowed.cpu().numpy().tobytes(), digest_size=16).hexdigest())
                      for r in self.records)
        what = (self.model_name, str(self.device), str(self.dtype), self.text, tuple(self.token_ids),
                self.truncated_from, self.mask, self.mask_is_model_default, masks, self.ablated, self.ablation)
        return hashlib.blake2b(repr(what).encode(), digest_size=16).hexdigest()

    # ---- GQA ---------------------------------------------------------------------------------------------
    def kv_head(self, head: int) -> int:
        """The key/value head that query head ``head`` reads (GQA: several query heads share one)."""
        self._check(0, head)
        return head // self.records[0].group_size

    def heads_sharing_kv(self, kv_head: int) -> list[int]:
        g = self.records[0].group_size
        return list(range(kv_head * g, (kv_head + 1) * g))

    # ---- per layer -----------------------------------------------------------------------------------------
    def layer(self, layer: int) -> LayerView:
        """What ran at one layer: its mask, window, scale and sizes (:class:`LayerView`); tensors come from the
        readers below."""
        self._check(layer, 0)
        return LayerView(self.records[layer])

    @property
    def layers(self) -> tuple[LayerView, ...]:
        """:meth:`layer` for every layer, in order."""
        return tuple(LayerView(r) for r in self.records)

    def record(self, layer: int) -> AttentionRecord:
        """Deprecated: the internal record. Use :meth:`layer` (what ran) and the readers (:meth:`attention`,
        :meth:`q`, :meth:`k`, :meth:`v`, :meth:`lse`, :meth:`allowed`)."""
        warnings.warn("Trace.record(layer) is internal and will go: use trace.layer(layer) and the trace's readers "
                      "(attention, q, k, v, lse, allowed)", DeprecationWarning, stacklevel=2)
        self._check(layer, 0)
        return self.records[layer]

    # ---- attention: one indexer (float32, CPU) ---------------------------------------------------------------
    def attention(
        self, layer: int, head: int | None = None, queries: slice = slice(None), keys: slice = slice(None),
        by: Literal["token", "word"] = "token",
    ) -> torch.Tensor:
        """The exact attention probabilities of one layer: ``attention(layer, head)`` is one head's (n, n) map (row i
        is query i; rows sum to 1), ``attention(layer)`` every head's, (H, n, n).

        ``queries`` and ``keys`` (slices, step 1) pick a block, (Tq, Sk) or (H, Tq, Sk), computed without the whole
        map. Rows are normalised over the whole text (each query's recorded lse), so a block's rows need not sum
        to 1. For a long text, read a layer block by block (:meth:`row_blocks`) or one query's heaviest keys
        (:meth:`top_keys`) instead of the whole map.

        ``by="word"``: (W, W) (or (H, W, W)) over :meth:`words`, by Clark et al.'s rule (to a word: the sum over its
        pieces; from a word: the mean over its pieces), rows still summing to 1; whole maps only.
        """
        if by not in ("token", "word"):
            raise ExplorerError(_("Unknown unit '{by}'. Use 'token' or 'word'.").format(by=by))
        if by == "word":
            if queries != slice(None) or keys != slice(None):
                raise ExplorerError(_("By word, ask for whole maps; for a block, use the trace's words() spans."))
            return by_word(self.attention(layer, head), self.words())
        self._check(layer, 0 if head is None else head)
        r = self.records[layer]
        T, S = r.q.shape[1], r.k.shape[1]
        rows, cols = _span(queries, T, "queries"), _span(keys, S, "keys")
        if head is None:
            q, k, lse = r.q, r.k, r.lse  # (H, T, D), (H_kv, S, D), (H, T): attention_probs repeats the kv heads
        else:
            kv = self.kv_head(head)
            q, k, lse = r.q[head : head + 1], r.k[kv : kv + 1], r.lse[head : head + 1]  # one head, kept 3-d
        if rows == slice(0, T) and cols == slice(0, S):
            p = attention_probs(q, k, lse, r.scale, r.mask_kind, r.allowed, r.window)  # (h, T, S)
        else:
            p = attention_probs(q[:, rows], k[:, cols], lse[:, rows], r.scale, "custom", _allowed_block(r, rows, cols))
        p = p.float().cpu()
        return p if head is None else p[0]

    def words(self) -> list[Word]:
        """The text's words over the tokens, in order and without overlap (see :mod:`explorer.capture.words`):
        each a :class:`Word` with token positions ``start``, ``end`` (exclusive) and its ``text``."""
        cached = self.__dict__.get("_words")
        if cached is None:
            if self.offsets is not None:
                cached = segment(self.text, self.offsets, self.tokens)
            else:  # no offsets (a slow tokenizer): the readable labels laid end to end
                text, spans = spans_from_labels(self.tokens, [False] * self.n_tokens)
                cached = segment(text, spans, self.tokens)
            self.__dict__["_words"] = cached
        return list(cached)

    def attention_window(self, layer: int, head: int, queries: slice = slice(None),
                         keys: slice = slice(None)) -> torch.Tensor:
        """``attention(layer, head, queries, keys)``: one head on a block of queries × keys, (Tq, Sk) float32."""
        return self.attention(layer, head, queries=queries, keys=keys)

    def attentions(self, layer: int) -> torch.Tensor:
        """Deprecated: ``attention(layer)``, all heads of one layer, (H, n, n)."""
        warnings.warn("Trace.attentions(layer) will go: use trace.attention(layer)", DeprecationWarning, stacklevel=2)
        return self.attention(layer)

    def top_keys(self, layer: int, head: int, query: int, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """Where does one query look? The ``k`` keys it weighs most over the whole text: (positions, weights),
        heaviest first; keys the mask hides (weight exactly 0) are left out. One (1, n) row, never the map."""
        if not 0 <= int(query) < self.n_tokens:
            raise ExplorerError(_("The query position must lie in 0–{last}.").format(last=self.n_tokens - 1))
        row = self.attention(layer, head, queries=slice(query, query + 1))[0]  # (S,)
        top = row.topk(min(max(int(k), 1), row.shape[0]))
        seen = top.values > 0
        return top.indices[seen], top.values[seen]

    def row_blocks(
        self, layer: int, heads: slice = slice(None), max_bytes: int | None = None
    ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """The layer's exact maps a block of queries at a time, never the whole (H, n, n): yields
        ``(queries, keys, probs)`` with probs (h, Tq, Sk) float32 CPU equal to ``attention(layer)[heads, queries,
        keys]``, ≤ ``max_bytes`` (default :data:`ROW_BLOCK_BYTES`) each. The blocks cover every query once, in
        order. ``keys`` is the span that holds every key the mask lets these queries see: weights outside it are
        exactly 0, so a causal layer scores about half the pairs and a sliding-window layer only its window."""
        self._check(layer, 0)
        r = self.records[layer]
        heads = check_heads(heads, r.n_heads)
        T, S = r.q.shape[1], r.k.shape[1]
        n_heads = heads.stop - heads.start
        rows_per_block = max(1, (max_bytes or ROW_BLOCK_BYTES) // (4 * n_heads * S))
        for start in range(0, T, rows_per_block):
            rows = slice(start, min(T, start + rows_per_block))
            cols = _visible_keys(r, rows)
            q = r.q[heads, rows]  # (h, Tq, D)
            k = kv_for_heads(r.k[:, cols], r.group_size, heads)  # (h, Sk, D): one key head per query head
            p = attention_probs(q, k, r.lse[heads, rows], r.scale, "custom", _allowed_block(r, rows, cols))
            yield rows, cols, p.float().cpu()

    # ---- per-head tensors (float32, CPU) -----------------------------------------------------------------
    def q(self, layer: int, head: int) -> torch.Tensor:
        """(n, head_dim): the query vectors used in the scores (after RoPE where the model uses it)."""
        self._check(layer, head)
        return self.records[layer].q[head].float().cpu()

    def k(self, layer: int, head: int) -> torch.Tensor:
        """(n, head_dim): the keys query head ``head`` is scored against (its shared KV head under GQA)."""
        self._check(layer, head)
        return self.records[layer].k[self.kv_head(head)].float().cpu()

    def v(self, layer: int, head: int) -> torch.Tensor:
        self._check(layer, head)
        return self.records[layer].v[self.kv_head(head)].float().cpu()

    def scale(self, layer: int) -> float:
        self._check(layer, 0)
        return self.records[layer].scale

    def lse(self, layer: int, head: int) -> torch.Tensor:
        """(n,) log-sum-exp of each scaled, masked score row: the softmax normaliser in log space."""
        self._check(layer, head)
        return self.records[layer].lse[head].float().cpu()

    def allowed(self, layer: int = 0) -> torch.Tensor:
        """(n, n) bool: which (query, key) pairs the mask allowed."""
        self._check(layer, 0)
        return self.records[layer].allowed_matrix().cpu()

    def allowed_rows(self, layer: int, queries: slice) -> torch.Tensor:
        """(len(queries), n) bool: ``allowed(layer)[queries]`` without the (n, n) matrix. Slices with step 1 only."""
        self._check(layer, 0)
        r = self.records[layer]
        rows = _span(queries, r.q.shape[1], "queries")
        return _allowed_block(r, rows, slice(0, r.k.shape[1])).cpu()

    def x(self, layer: int) -> torch.Tensor:
        """(n, d_model): the attention module's input at ``layer`` (the normed hidden state it projects)."""
        self._check(layer, 0)
        r = self.records[layer]
        if r.x is not None:
            return r.x.float().cpu()
        rebuild = self._x_rebuild[layer] if layer < len(self._x_rebuild) else None
        if rebuild is None or layer >= len(self.hidden_states):
            raise ExplorerError(_("This trace did not keep attention inputs."))
        with torch.inference_mode():  # the same module on the same hidden state: x as the forward pass made it
            return rebuild(self.hidden_states[layer]).float().cpu()

    def has_x(self, layer: int) -> bool:
        """Can :meth:`x` give this layer's attention input (kept, or rebuilt from the hidden state)?"""
        self._check(layer, 0)
        r = self.records[layer]
        return r.x is not None or (layer < len(self._x_rebuild) and self._x_rebuild[layer] is not None
                                   and layer < len(self.hidden_states))

    def head_output(self, layer: int, head: int) -> torch.Tensor:
        """(n, head_dim): Σ_j p_ij v_j for one head, before the output projection."""
        return self.attention(layer, head) @ self.v(layer, head)

    # ---- norm-based attention (explorer.capture.contributions) -------------------------------------------------
    def value_norms(self, layer: int, head: int) -> torch.Tensor:
        """(n,) float32: ``||f_j||``, each key's value through the head's slice of W_o (f_j = W_o^h v_j)."""
        self._check(layer, head)
        return contributions.value_norms(self.records[layer].v, self._output_weight(layer), range(head, head + 1),
                                         self.records[layer].group_size)[0]

    def contributions(self, layer: int, head: int, by: Literal["token", "word"] = "token") -> torch.Tensor:
        """(n, n) float32: ``α_ij ||f_j||``, rows normalised to 1 over the allowed keys (reads like the weights).

        ``by="word"``: (W, W) by the same rule as :meth:`attention`'s (to a word: the sum over its pieces; from a
        word: the mean), so rows still sum to 1."""
        if by not in ("token", "word"):
            raise ExplorerError(_("Unknown unit '{by}'. Use 'token' or 'word'.").format(by=by))
        self._check(layer, head)
        tokens = contributions.contributions(self, layer, head, self._output_weight(layer))
        return tokens if by == "token" else by_word(tokens, self.words())

    def contribution_blocks(self, layer: int, heads: slice = slice(None), max_bytes: int | None = None
                            ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """:meth:`row_blocks` of :meth:`contributions`: (queries, keys, (h, Tq, Sk)), never the whole layer."""
        return contributions.contribution_blocks(self, layer, self._output_weight(layer), heads, max_bytes)

    def _output_weight(self, layer: int) -> torch.Tensor:
        return contributions.output_weight(self.source_model(), layer)  # a clear error once the model is gone

    # ---- outputs -----------------------------------------------------------------------------------------
    @property
    def has_logits(self) -> bool:
        """Does this trace come from a language model (so :meth:`logits_at` can give next-token logits)?"""
        return self._unembed is not None

    @property
    def logits(self) -> torch.Tensor | None:
        """(n, vocab) next-token logits for language models (computed on first use, then kept), None for encoders.

        Every position at once is n × vocab floats: Gemma 3's 262,144-token vocabulary makes that 1 MiB per position,
        8 GiB at 8,192 tokens. Above :data:`LOGITS_LIMIT_BYTES` this raises ExplorerError; use :meth:`logits_at`
        for the positions a page shows.

        Raises ExplorerError when they were not computed before the model that made the trace was unloaded.
        """
        if self._unembed is None:
            return None
        if self._logits is None:
            size = self.n_tokens * self._vocab_size() * 4
            if size > LOGITS_LIMIT_BYTES:
                raise ExplorerError(
                    _("The logits of all {n} positions would take {gib} GiB. Ask for the positions you need "
                      "with trace.logits_at(positions).").format(n=self.n_tokens, gib=f"{size / 2**30:.1f}")
                )
            self._logits = self.logits_at(range(self.n_tokens))
        return self._logits

    def logits_at(self, positions: Sequence[int] | slice | range) -> torch.Tensor:
        """(len(positions), vocab) float32 next-token logits at those positions only (rows in the order given).

        Raises ExplorerError for encoders, positions out of range, or when the model that made the trace is gone.
        """
        if self._unembed is None:
            raise ExplorerError(
                _("The model '{model}' has no next-token logits (it is an encoder).").format(model=self.model_name)
            )
        rows = list(range(self.n_tokens))[positions] if isinstance(positions, slice) else [int(p) for p in positions]
        if any(p < 0 or p >= self.n_tokens for p in rows):
            raise ExplorerError(_("Positions must lie in 0–{last}.").format(last=self.n_tokens - 1))
        if self._logits is not None:
            return self._logits[rows]
        unembed = self._unembed()
        if unembed is None:
            raise ExplorerError(
                _("The model '{model}' that made this trace is no longer loaded, so its logits cannot be "
                  "computed. Trace the text again.").format(model=self.model_name)
            )
        index = torch.tensor(rows, dtype=torch.long, device=self.final_hidden.device)
        return unembed(self.final_hidden[index]).float().cpu()

    def _vocab_size(self) -> int:
        unembed = self._unembed() if self._unembed is not None else None
        if unembed is None:
            return 0  # logits_at raises the clear error
        return int(unembed.__self__.vocab_size)

    def source_model(self):
        """The Model that made this trace (its weights: QK attribution), or an ExplorerError once it is unloaded."""
        model = self._model() if self._model is not None else None
        if model is None:
            raise ExplorerError(_("The model '{model}' that made this trace is no longer loaded. Trace the text "
                                  "again.").format(model=self.model_name))
        return model

    @property
    def model_alive(self) -> bool:
        """Is the model that made this trace still loaded? (A cache may drop traces whose model is gone.)"""
        return self._unembed is None or self._unembed() is not None

    def _check(self, layer: int, head: int) -> None:
        check_layer_head(layer, self.n_layers, head, self.n_heads)

    def nbytes(self) -> int:
        """Approximate memory held by the trace's tensors (for cache accounting)."""
        total = sum(t.numel() * t.element_size() for t in self.hidden_states)
        for r in self.records:
            for t in (r.q, r.k, r.v, r.lse, r.x, r.allowed):
                if t is not None:
                    total += t.numel() * t.element_size()
        if self._logits is not None:
            total += self._logits.numel() * self._logits.element_size()
        return total


def _span(part: slice, size: int, what: str) -> slice:
    """``part`` of range(size) as a plain slice start:stop (step 1), or a clear error."""
    start, stop, step = part.indices(size)
    if step != 1 or stop <= start:
        raise ExplorerError(_("Choose a non-empty range of {what} within 0–{last}.").format(what=what, last=size - 1))
    return slice(start, stop)


def _visible_keys(r: AttentionRecord, rows: slice) -> slice:
    """The span of keys holding every key some query in ``rows`` may see (the mask rule's, or every key for a
    custom matrix)."""
    T, S = r.q.shape[1], r.k.shape[1]
    return slice(0, S) if r.allowed is not None else visible_keys(r.mask_kind, T, S, rows, r.window)


def _allowed_block(r: AttentionRecord, rows: slice, cols: slice) -> torch.Tensor:
    """(Tq, Sk) bool: the record's mask on rows × cols, without building the (T, S) matrix (except a custom one,
    which the record already holds)."""
    if r.allowed is not None:
        return r.allowed[rows, cols]
    return allowed_block(r.mask_kind, r.q.shape[1], r.k.shape[1], rows, cols, r.window, r.q.device)
