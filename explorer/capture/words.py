"""Words of a traced text, and the rule that turns a token-by-token matrix into a word-by-word one.

Tokenizers cut words into pieces: WordPiece's ``##`` continuations, byte-level BPE's pieces of a Chinese character
('猫' is three tokens in SmolLM2), SentencePiece's sub-words. A *word* here is a run of tokens found at the level of
characters, the same way for every tokenizer, then laid onto the tokens' character offsets:

- Chinese (runs of Han characters) is cut by a real segmenter, ``rjieba`` (jieba-rs, the maintained Rust binding of
  jieba; on Han text it gives what pure-Python jieba gives, and it is many times faster).
- Every other script is cut where the text has whitespace, letters and digits run together into one word (an
  apostrophe between letters stays inside it: "don't" is one word for every tokenizer), and every other character
  (punctuation, symbols, emoji) is a word of its own; a run of one repeated mark ("...", "！！") is one word.
- A token never splits: a token whose characters touch two words joins them (Gemma 3's whole-word Chinese token
  是一种 makes 是 + 一种 one word). A character's byte pieces all point at that character, so they stay together.
- A token of whitespace alone joins the next word (the leading-space convention of BPE and SentencePiece); special
  tokens ([CLS], <bos>, …: empty offsets) are words of their own.

Aggregation follows Clark et al. (2019, "What Does BERT Look At?"): attention *to* a word is the sum over its
pieces (keys), attention *from* a word the mean over its pieces (queries), so each row still sums to 1. The same
rule serves any (…, n, n) matrix whose rows are distributions over keys: attention maps, rollout, contributions.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from ..i18n import _
from ..errors import ExplorerError

# A continuation piece's readable label starts with this (explorer.capture.tokens.CONTINUATION).
_APOSTROPHES = "'\u2019"


@dataclass(frozen=True)
class Word:
    """One word of a traced text: tokens ``start`` … ``end − 1`` (end exclusive) and the text they cover."""

    start: int
    end: int
    text: str

    @property
    def n_pieces(self) -> int:
        return self.end - self.start


def is_han(ch: str) -> bool:
    """A Chinese character (CJK unified ideographs, their extensions and compatibility forms)."""
    code = ord(ch)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x323AF
            or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F)


@lru_cache(maxsize=1)
def _segmenter():
    import rjieba  # imported on first use: loading its dictionary takes a moment

    return rjieba


def cut_han(run: str) -> list[str]:
    """A run of Han characters cut into words by rjieba (jieba's dictionary and HMM for unknown words)."""
    return [w for w in _segmenter().cut(run) if w]


def char_words(text: str) -> list[int]:
    """One entry per character of ``text``: the index of its character-level word, −1 for whitespace."""
    out = [-1] * len(text)
    word = -1
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif is_han(ch):
            j = i
            while j < n and is_han(text[j]):
                j += 1
            for piece in cut_han(text[i:j]):
                word += 1
                out[i : i + len(piece)] = [word] * len(piece)
                i += len(piece)
            i = j  # rjieba's pieces cover the run exactly; this only guards against a segmenter that drops some
        elif ch.isalnum() or unicodedata.category(ch).startswith("M"):  # combining marks stay with their letter
            word += 1
            j = i
            while j < n and not is_han(text[j]) and (
                text[j].isalnum() or unicodedata.category(text[j]).startswith("M")
                or (text[j] in _APOSTROPHES and j + 1 < n and text[j + 1].isalpha() and not is_han(text[j + 1])
                    and j > i)
            ):
                j += 1
            out[i:j] = [word] * (j - i)
            i = j
        else:  # punctuation, symbols, emoji: a word of its own (a run of the same mark together)
            word += 1
            j = i
            while j < n and text[j] == ch:
                j += 1
            out[i:j] = [word] * (j - i)
            i = j
    return out


def segment(text: str, offsets: Sequence[tuple[int, int]], labels: Sequence[str]) -> list[Word]:
    """The words of a tokenised text: ``offsets`` are the tokens' character spans in ``text`` (fast tokenizers; an
    empty span marks a special token), ``labels`` their readable strings (the text of special tokens' words)."""
    if len(offsets) != len(labels):
        raise ExplorerError(_("Expected one character span per token."))
    n = len(offsets)
    if n == 0:
        return []
    of_char = char_words(text)
    # Union-find over character-level words: a token touching several words joins them.
    parent = list(range(max(of_char, default=-1) + 1))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    touched: list[list[int]] = []
    for start, end in offsets:
        ids = sorted({of_char[c] for c in range(max(0, start), min(end, len(text))) if of_char[c] >= 0})
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
        touched.append(ids)
    # Each token's group: a special token its own, a whitespace-only token the next token's (else the previous one's).
    group: list[object] = [None] * n
    for i, ((start, end), ids) in enumerate(zip(offsets, touched)):
        if end <= start:
            group[i] = ("special", i)
        elif ids:
            group[i] = find(ids[0])
    for i in range(n - 1, -1, -1):
        if group[i] is None and i + 1 < n and not isinstance(group[i + 1], tuple):
            group[i] = group[i + 1]
    for i in range(n):
        if group[i] is None:
            group[i] = group[i - 1] if i > 0 and not isinstance(group[i - 1], tuple) else ("space", i)
    # Words are runs of tokens; a group that comes back after another (offsets out of order) joins everything between.
    last_seen = {g: i for i, g in enumerate(group)}
    words: list[Word] = []
    i = 0
    while i < n:
        end = last_seen[group[i]] + 1
        j = i
        while j < end:
            end = max(end, last_seen[group[j]] + 1)
            j += 1
        words.append(Word(i, end, _word_text(text, offsets[i:end], labels[i:end])))
        i = end
    return words


def _word_text(text: str, spans: Sequence[tuple[int, int]], labels: Sequence[str]) -> str:
    real = [(s, e) for s, e in spans if e > s]
    if not real:
        return "".join(labels)
    shown = text[min(s for s, _e in real) : max(e for _s, e in real)].strip()
    return shown or text[min(s for s, _e in real) : max(e for _s, e in real)]


def spans_from_labels(labels: Sequence[str], special: Sequence[bool]) -> tuple[str, list[tuple[int, int]]]:
    """For a tokenizer without offsets: the readable labels laid end to end as a text, with each token's span in it
    (special tokens get empty spans). Words are then found in that text; WordPiece without '##' markers loses its
    word starts there, so this is a fall-back only (every embedded model has offsets)."""
    text, spans = "", []
    for label, is_special in zip(labels, special):
        if is_special:
            spans.append((len(text), len(text)))
            continue
        piece = label[1:] if label.startswith("\u2026") and len(label) > 1 else label  # a byte piece's "…猫"
        if label.startswith("\u2026") and text.endswith(piece):
            spans.append((len(text) - len(piece), len(text)))
            continue
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    return text, spans


# ---- the aggregation rule (Clark et al. 2019) ---------------------------------------------------------------------
def check_cover(words: Sequence[Word], n_tokens: int) -> None:
    """Raise ExplorerError unless ``words`` cover tokens 0 … n_tokens − 1 in order, without gaps or overlap."""
    n = n_tokens
    if not words or words[0].start != 0 or words[-1].end != n or any(
            a.end != b.start for a, b in zip(words, words[1:])) or any(w.end <= w.start for w in words):
        raise ExplorerError(_("The words must cover the {n} tokens in order, without gaps or overlap.").format(n=n))


def membership(words: Sequence[Word], n_tokens: int) -> torch.Tensor:
    """(W, n) float64: row w has 1 at word w's tokens."""
    check_cover(words, n_tokens)
    m = torch.zeros(len(words), n_tokens, dtype=torch.float64)
    for index, word in enumerate(words):
        m[index, word.start : word.end] = 1.0
    return m


def by_word(matrix: torch.Tensor, words: Sequence[Word]) -> torch.Tensor:
    """(…, n, n) token × token → (…, W, W) word × word: the columns of a word's tokens summed (attention *to* a word),
    the rows of its tokens averaged (attention *from* a word). Rows that sum to 1 still do. Computed in float64 (two
    scatter-adds, n² + n·W, not a dense (W, n) product); float32 out unless given float64."""
    a = torch.as_tensor(matrix)
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ExplorerError(_("Expected a matrix of shape (..., n, n), got {shape}.").format(shape=tuple(a.shape)))
    n = a.shape[-1]
    check_cover(words, n)
    index = torch.tensor(word_of_token(words), device=a.device)  # (n,)
    counts = torch.tensor([w.n_pieces for w in words], dtype=torch.float64, device=a.device)  # (W,)
    to_words = a.double().new_zeros(*a.shape[:-1], len(words)).index_add_(-1, index, a.double())  # (…, n, W)
    summed = to_words.new_zeros(*a.shape[:-2], len(words), len(words)).index_add_(-2, index, to_words)  # (…, W, W)
    out = summed / counts[:, None]
    return out if a.dtype == torch.float64 else out.float()


def word_of_token(words: Sequence[Word]) -> list[int]:
    """Per token position, the index of the word holding it."""
    return [index for index, word in enumerate(words) for _t in range(word.start, word.end)]
