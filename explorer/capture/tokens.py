"""The tokenizer behind one door, and readable token strings: what each token covers in the user's text, not the
tokenizer's internal spelling.

:class:`Tokenizer` is the only way to reach a model's ``transformers`` tokenizer: every call into it runs under one
lock (HF fast tokenizers raise "Already borrowed" when two threads use one at once, and Streamlit sessions share a
model), and the facts the engine needs (EOS, mask and special ids, the context length) are read once when it is built.

Byte-level BPE (GPT-2, Llama 3, SmolLM2) spells tokens as bytes mapped to printable characters ('Ġ' for a space,
'å¤§' for 大), and WordPiece adds '##'. We instead cut the user's own text by the tokenizer's character offsets.
A character whose UTF-8 bytes are split over several tokens (common for CJK and emoji) is shown in full on its
first piece and as '…' + character on the others, so a label is never byte mojibake.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

from ..errors import ExplorerError
from ..escape import plotly_escape
from ..i18n import _, join


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


class Tokenizer:
    """A model's tokenizer, every call under one lock. Built by :func:`explorer.load`; reach it as
    ``model.tokenizer`` or, better, through the :class:`~explorer.capture.model.Model` methods of the same names.

    Attributes (read once, at build time): ``eos_ids`` (the tokenizer's end-of-sequence id, as a set),
    ``pad_id``, ``unk_id``, ``mask_token`` / ``mask_id`` (masked LMs; None elsewhere), ``special_ids``,
    ``context_length`` (the longest input the model takes, from its config; None when unknown), ``model_name``.
    """

    def __init__(self, hf_tokenizer: object, context_length: int | None, model_name: str):
        self._hf = hf_tokenizer
        self._lock = threading.Lock()
        self.model_name = model_name
        self.context_length = context_length
        tok = hf_tokenizer
        self.is_fast = bool(getattr(tok, "is_fast", False))
        self.special_ids: frozenset[int] = frozenset(getattr(tok, "all_special_ids", []) or [])
        self.unk_id: int | None = getattr(tok, "unk_token_id", None)
        self.pad_id: int | None = getattr(tok, "pad_token_id", None)
        eos = getattr(tok, "eos_token_id", None)
        self.eos_ids: frozenset[int] = frozenset([eos] if isinstance(eos, int) else eos or [])
        self.mask_token: str | None = getattr(tok, "mask_token", None)
        self.mask_id: int | None = getattr(tok, "mask_token_id", None)
        self.has_chat_template = bool(getattr(tok, "chat_template", None))

    def __repr__(self) -> str:
        return f"Tokenizer({type(self._hf).__name__} of {self.model_name!r})"

    # ---- texts in ------------------------------------------------------------------------------------------
    def encode(self, text: str, chat: bool = False, max_tokens: int | None = None) -> Encoded:
        """Tokenise like the model's own tokenizer with its defaults (special tokens included, no padding).

        ``chat=True`` wraps the text as one user turn with the chat template, ready for the assistant's reply.
        ``max_tokens`` keeps the first that many tokens (never more than :attr:`context_length`) and records the
        original length in ``truncated_from``.
        """
        if not isinstance(text, str):
            raise ExplorerError(_("The text must be a string."))
        if text.strip() == "":
            raise ExplorerError(_("The text is empty. Type a sentence to trace."))
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: the tokenizer would raise a bare TypeError
            raise ExplorerError(
                _("The text contains an invalid character (U+{code:04X}, half of a surrogate pair) "
                  "at position {position}. Remove it or paste the text again.").format(
                    code=ord(text[exc.start]), position=exc.start)
            ) from exc
        tok = self._hf
        if chat and not self.has_chat_template:
            raise ExplorerError(_("The model '{model}' has no chat template.").format(model=self.model_name))
        with self._lock:
            if chat:
                text = tok.apply_chat_template(
                    [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
                )
                enc = tok(text, add_special_tokens=False, return_offsets_mapping=self.is_fast)
            else:
                enc = tok(text, return_offsets_mapping=self.is_fast)
            ids = list(enc["input_ids"])
            raw = tok.convert_ids_to_tokens(ids)
        if not ids:
            raise ExplorerError(_("The tokenizer produced no tokens for this text."))
        offsets = [tuple(o) for o in enc["offset_mapping"]] if "offset_mapping" in enc else None
        tokens = readable_tokens(text, ids, offsets, raw, set(self.special_ids), self.unk_id)
        return self.cut(Encoded(text, ids, tokens, offsets=offsets), max_tokens)

    def describe_ids(self, ids: list[int], max_tokens: int | None = None) -> Encoded:
        """Checked token ids as they are, with their text (their decoding) and one readable string per id: when
        encoding that text gives the same ids back (the usual case), each is labelled by the part it covers."""
        tok = self._hf
        with self._lock:
            raw = tok.convert_ids_to_tokens(ids)
            text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True) if self.is_fast else None
        offsets = None
        if enc is not None and list(enc["input_ids"]) == ids:
            offsets = [tuple(o) for o in enc["offset_mapping"]]
        tokens = readable_tokens(text, ids, offsets, raw, set(self.special_ids), self.unk_id)
        return self.cut(Encoded(text, ids, tokens, offsets=offsets), max_tokens)

    def cut(self, encoded: Encoded, max_tokens: int | None) -> Encoded:
        """The first ``max_tokens`` tokens (and never more than the context length), the uncut length recorded."""
        if self.context_length is not None:  # never past the model's context length, whatever the caller asked
            max_tokens = self.context_length if max_tokens is None else min(max_tokens, self.context_length)
        n = len(encoded.token_ids)
        if max_tokens is not None and n > max_tokens:
            encoded = Encoded(encoded.text, encoded.token_ids[:max_tokens], encoded.tokens[:max_tokens], n,
                              None if encoded.offsets is None else encoded.offsets[:max_tokens])
        return encoded

    def token_ids(self, text: str, special: bool = True) -> list[int]:
        """The ids the tokenizer makes of ``text``, with its special tokens (``special=True``) or without."""
        with self._lock:
            return list(self._hf(text, add_special_tokens=special)["input_ids"])

    def single_token_id(self, text: str, what: str | None = None) -> int:
        """The id of ``text`` when the tokenizer makes exactly one token of it (no special tokens added).

        ``what`` names the text in the error, already translated (default: "The text")."""
        what = _("The text") if what is None else what
        if not isinstance(text, str) or text == "":
            raise ExplorerError(_("{what} must be a non-empty string of one token.").format(what=what))
        ids = self.token_ids(text, special=False)
        if len(ids) != 1:
            pieces = [self.decode([i]) for i in ids]
            raise ExplorerError(
                _("{what} {text!r} is {n} tokens for '{model}' ({pieces}), not one. "
                  "Use a single token; a word after a space usually starts with that space (' Mary').").format(
                    what=what, text=text, n=len(ids), model=self.model_name, pieces=join(map(repr, pieces)))
            )
        return ids[0]

    # ---- ids out -------------------------------------------------------------------------------------------
    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids``, decoded as a whole (characters split over tokens come out whole)."""
        with self._lock:
            return self._hf.decode([int(i) for i in token_ids])

    def raw_tokens(self, token_ids: Sequence[int]) -> list[str]:
        """The tokenizer's own strings for ``token_ids`` (``'Ġthe'``, ``'##ing'``), not the readable labels."""
        with self._lock:
            return list(self._hf.convert_ids_to_tokens([int(i) for i in token_ids]))


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
