"""Readable token strings: what each token covers in the user's text, not the tokenizer's internal spelling.

Byte-level BPE (GPT-2, Llama 3, SmolLM2) spells tokens as bytes mapped to printable characters ('Ġ' for a space,
'å¤§' for 大), and WordPiece adds '##'. We instead cut the user's own text by the tokenizer's character offsets.
A character whose UTF-8 bytes are split over several tokens (common for CJK and emoji) is shown in full on its
first piece and as '…' + character on the others, so a label is never byte mojibake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..escape import plotly_escape

@dataclass
class Encoded:
    """A tokenised text: the ids the model runs on and one readable string per id."""

    text: str
    token_ids: list[int]
    tokens: list[str]
    truncated_from: int | None = None  # the token count before a max_tokens cut, if one was made
    # Each token's character span in ``text`` (fast tokenizers; empty for special tokens), for trace.words().
    offsets: list[tuple[int, int]] | None = None


CONTINUATION = "\u2026"  # "…": this token holds later bytes of the character shown


def readable_tokens(
    text: str,
    token_ids: Sequence[int],
    offsets: Sequence[tuple[int, int]] | None,
    raw_tokens: Sequence[str],
    special_ids: set[int],
    unk_id: int | None = None,
) -> list[str]:
    """One readable string per token. ``offsets`` are character spans into ``text`` (fast tokenizers)."""
    if offsets is None:
        return [_strip_markers(t) for t in raw_tokens]
    out: list[str] = []
    prev_end = 0
    prev_span: tuple[int, int] | None = None
    for tid, raw, (start, end) in zip(token_ids, raw_tokens, offsets):
        if tid in special_ids or end <= start:
            out.append(raw)
            continue
        piece = text[start:end]
        if prev_span is not None and start < prev_end:
            # Overlaps the previous token: a later byte-piece of a split character.
            piece = CONTINUATION + text[max(start, prev_end - 1) : end] if start >= prev_span[0] else piece
        if unk_id is not None and tid == unk_id:
            piece = f"{raw}{piece}"
        out.append(piece)
        prev_end = max(prev_end, end)
        prev_span = (start, end)
    return out


def _strip_markers(token: str) -> str:
    # Fall-back for slow tokenizers without offsets: drop SentencePiece/BPE/WordPiece markers.
    if token.startswith("##"):
        return token[2:]
    return token.replace("\u2581", " ").replace("\u0120", " ").replace("\u010a", "\n")


def display_label(token: str) -> str:
    """A token as an axis label: whitespace and control characters made visible, never empty."""
    shown = (
        token.replace("\n", "\u21b5").replace("\t", "\u21e5").replace("\r", "\u240d").replace("\x00", "\u2400")
    )
    shown = "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in shown)
    if shown.strip() == "":
        shown = "\u2423" * max(1, len(shown))  # "␣": a visible space
    return shown


def unique_labels(tokens: Sequence[str], positions: Sequence[int] | None = None) -> list[str]:
    """Axis labels that stay distinct when a token repeats (plotly merges equal category labels): each token named
    by its position, 0, 1, … or ``positions`` (where a window or a top-k list lies in the whole text)."""
    positions = range(len(tokens)) if positions is None else positions
    return [f"{i}\u2002{display_label(t)}" for i, t in zip(positions, tokens)]  # en space: "0The" misreads


def plotly_labels(tokens: Sequence[str], positions: Sequence[int] | None = None) -> list[str]:
    """:func:`unique_labels`, escaped for plotly: category labels for an axis, hover or text."""
    return [plotly_escape(label) for label in unique_labels(tokens, positions)]
