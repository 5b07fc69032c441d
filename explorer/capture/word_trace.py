"""A trace seen word by word: the same readers as :class:`~explorer.capture.trace.Trace`, over words instead of
tokens, so every view that reads a trace's maps (block means, statistics, lines, differences) works by word unchanged.

Each map is the token map aggregated by Clark et al.'s rule (:func:`explorer.capture.words.by_word`: to a word the
sum over its pieces, from a word the mean). Its ``tokens`` are the words' texts, ``n_tokens`` the number of words.
What has no meaning per word is left out on purpose: q, k, v, x, logits and records are the tokens' (use ``.tokens_trace``).
"""

from __future__ import annotations

from typing import ClassVar, Iterator

import torch

from ..i18n import _
from ..errors import ExplorerError, check_heads, check_layer_head
from .trace import ROW_BLOCK_BYTES, Trace, _span
from .words import Word, word_of_token


class WordTrace:
    """``trace`` by word. Maps are rebuilt from the token trace on demand (one layer's (h, W, W) at a time)."""

    unit: ClassVar[str] = "word"

    def __init__(self, trace: Trace):
        if isinstance(trace, WordTrace):
            trace = trace.tokens_trace
        self.tokens_trace = trace
        self.words: list[Word] = trace.words()
        self._index = torch.tensor(word_of_token(self.words))  # (n,): each token's word
        self._counts = torch.tensor([w.n_pieces for w in self.words], dtype=torch.float64)  # (W,)
        self._last: tuple[tuple, torch.Tensor] | None = None  # the last layer's word maps asked for

    # ---- what stays the trace's --------------------------------------------------------------------------------
    def __getattr__(self, name: str):
        # Facts of the run (model, text, mask, sizes of the model, GQA): the token trace's own.
        if name in _SHARED:
            return getattr(self.tokens_trace, name)
        raise AttributeError(name)

    @property
    def tokens(self) -> list[str]:
        """One label per word: the text it covers (special tokens keep their own label)."""
        return [w.text for w in self.words]

    @property
    def n_tokens(self) -> int:
        """The number of words (the size of every map here)."""
        return len(self.words)

    def pieces(self, word: int) -> range:
        """The token positions of word ``word``."""
        if not 0 <= int(word) < len(self.words):
            raise ExplorerError(_("The word must lie in 0–{last}.").format(last=len(self.words) - 1))
        return range(self.words[word].start, self.words[word].end)

    # ---- maps by word ------------------------------------------------------------------------------------------
    def attentions(self, layer: int, heads: slice = slice(None)) -> torch.Tensor:
        """(h, W, W) float32: the layer's heads by word (the whole of it: for long texts read :meth:`row_blocks`)."""
        heads = slice(*heads.indices(self.tokens_trace.n_heads))
        key = (layer, heads.start, heads.stop)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        result = torch.cat([probs for _q, _k, probs in self.row_blocks(layer, heads)], dim=1)  # (h, W, W)
        self._last = (key, result)
        return result

    def attention(self, layer: int, head: int, by: str = "word") -> torch.Tensor:
        """(W, W) of one head; rows sum to 1. ``by="token"`` gives the token trace's own (n, n) map."""
        if by == "token":
            return self.tokens_trace.attention(layer, head)
        if by != "word":
            raise ExplorerError(_("Unknown unit '{by}'. Use 'token' or 'word'.").format(by=by))
        check_layer_head(layer, self.tokens_trace.n_layers, head, self.tokens_trace.n_heads)
        return self.attentions(layer, slice(head, head + 1))[0]

    def attention_window(self, layer: int, head: int, queries: slice = slice(None), keys: slice = slice(None)
                         ) -> torch.Tensor:
        W = len(self.words)
        return self.attention(layer, head)[_span(queries, W, "queries"), _span(keys, W, "keys")]

    def row_blocks(self, layer: int, heads: slice = slice(None), max_bytes: int | None = None
                   ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """As :meth:`Trace.row_blocks`, by word: (queries, keys, probs (h, Wq, W) float32) covering every word once,
        in order. Each block of words reads its pieces' token rows (≤ ``max_bytes`` of them, default
        :data:`ROW_BLOCK_BYTES`), so neither the token layer nor the word layer is held whole."""
        trace = self.tokens_trace
        check_layer_head(layer, trace.n_layers)
        heads = check_heads(heads, trace.n_heads)
        n, W = trace.n_tokens, len(self.words)
        budget = max(1, (max_bytes or ROW_BLOCK_BYTES) // (8 * (heads.stop - heads.start) * max(n, W)))
        first = 0
        while first < W:
            last = first + 1  # whole words only: at least one, then as many as the budget's token rows hold
            while last < W and self.words[last].end - self.words[first].start <= budget:
                last += 1
            rows = slice(self.words[first].start, self.words[last - 1].end)
            block = torch.zeros(heads.stop - heads.start, last - first, W, dtype=torch.float64)  # (h, Wq, W)
            for h in range(heads.start, heads.stop):
                p = trace.attention_window(layer, h, queries=rows).double()  # (Tq, n)
                to_words = p.new_zeros(p.shape[0], W).index_add_(-1, self._index, p)  # to a word: sum over its keys
                block[h - heads.start].index_add_(0, self._index[rows] - first, to_words)
            block /= self._counts[first:last, None]  # from a word: the mean over its queries
            yield slice(first, last), slice(0, W), block.float()
            first = last

    def top_keys(self, layer: int, head: int, query: int, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= int(query) < self.n_tokens:
            raise ExplorerError(_("The query position must lie in 0–{last}.").format(last=self.n_tokens - 1))
        row = self.attention(layer, head)[int(query)]
        top = row.topk(min(max(int(k), 1), row.shape[0]))
        seen = top.values > 0
        return top.indices[seen], top.values[seen]


_SHARED = frozenset({
    "text", "model_name", "device", "dtype", "mask", "mask_is_model_default", "truncated_from", "token_ids",
    "ablated", "ablation", "n_layers", "n_heads", "n_kv_heads", "head_dim", "kv_head", "heads_sharing_kv",
    "has_logits", "model_alive",
})


def by_unit(trace: Trace, unit: str) -> Trace | WordTrace:
    """The trace as a page shows it: ``unit`` "words" gives its :class:`WordTrace`, "tokens" the trace itself."""
    if unit == "words":
        return trace if isinstance(trace, WordTrace) else WordTrace(trace)
    if unit == "tokens":
        return trace.tokens_trace if isinstance(trace, WordTrace) else trace
    raise ExplorerError(_("Unknown unit '{unit}'. Use 'tokens' or 'words'.").format(unit=unit))
