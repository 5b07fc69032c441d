"""Which keys may each query see: the mask kinds, the mask a caller may ask for, and the one rule that turns a kind
into allowed (query, key) pairs.

The recorder (what a layer ran), the trace (rebuilding maps and blocks of them) and the model (what a caller asked
for) all read the kinds and the rule from here, so "causal" means the same bottom-right aligned pattern everywhere
and an unknown name is an error, never silently every key.

Queries are the last T of S positions (S ≥ T when keys come from a cache): query i sits at absolute position
S − T + i. Key j is allowed under

- ``"causal"``: j ≤ S − T + i;
- ``"sliding"`` (Gemma 3, Mistral): causal, and S − T + i − window < j (the last ``window`` keys, itself included),
  as transformers' ``sliding_window_overlay``; a sliding-window cache keeps the most recent keys, so the same
  alignment holds there;
- ``"bidirectional"``: every j;
- ``"custom"``: whatever the (T, S) bool matrix a record holds says (padding, any other pattern): no rule here.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ..errors import ExplorerError
from ..i18n import _

MaskKind = Literal["causal", "bidirectional", "sliding", "custom"]
MASK_KINDS: tuple[str, ...] = get_args(MaskKind)
# What a caller may ask a trace to run: the model's own mask (None) or one of these in its place (a what-if when the
# model was trained with the other).
MaskOverride = Literal["causal", "bidirectional"] | None
MASK_OVERRIDES: tuple[str, ...] = ("causal", "bidirectional")
# The kinds the rule below covers without a matrix.
_RULED = ("causal", "bidirectional", "sliding")


def check_mask(mask: object) -> MaskOverride:
    """``mask`` as a mask override (None, "causal" or "bidirectional"), or a clear ExplorerError for anything else
    (a typo such as "causl" must not run as some other mask)."""
    if mask is None or (isinstance(mask, str) and mask in MASK_OVERRIDES):
        return mask  # type: ignore[return-value]
    raise ExplorerError(
        _("Unknown mask '{mask}'. Use 'causal', 'bidirectional' or None (the model's own).").format(mask=mask)
    )


def _check_kind(kind: str, window: int | None) -> None:
    # Programming errors, not user input (check_mask guards that): a wrong kind must fail loudly, not as every key.
    if kind not in _RULED:
        raise ValueError(_("There is no rule for which keys a query may see under the mask kind '{kind}': use "
                           "causal, bidirectional or sliding, or give the allowed matrix.").format(kind=kind))
    if kind == "sliding" and not (isinstance(window, int) and window > 0):
        raise ValueError(_("A sliding-window mask needs a positive window size, not {window!r}.").format(window=window))


def allowed_block(
    kind: str, T: int, S: int, rows: slice, cols: slice, window: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(len(rows), len(cols)) bool: the pairs ``kind`` allows among queries ``rows`` (of T) and keys ``cols`` (of S),
    without building the (T, S) matrix. ``rows`` and ``cols`` are plain start:stop slices. ``window`` is the number of
    keys a sliding query sees."""
    _check_kind(kind, window)
    i = torch.arange(rows.start, rows.stop, device=device)[:, None] + (S - T)  # (Tq, 1) absolute query positions
    j = torch.arange(cols.start, cols.stop, device=device)[None, :]  # (1, Sk)
    if kind == "bidirectional":
        return torch.ones(i.shape[0], j.shape[1], dtype=torch.bool, device=device)
    allowed = j <= i  # (Tq, Sk) causal, bottom-right aligned
    return allowed & (j > i - window) if kind == "sliding" else allowed


def allowed_matrix(kind: str, T: int, S: int, window: int | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, S) bool: every pair ``kind`` allows (see the module's rule)."""
    return allowed_block(kind, T, S, slice(0, T), slice(0, S), window, device)


def causal_allowed(T: int, S: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, S) bool: query i (absolute position S−T+i) may see keys 0..S−T+i. Bottom-right aligned for caches."""
    return allowed_matrix("causal", T, S, device=device)


def sliding_allowed(T: int, S: int, window: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, S) bool: causal, and query i sees only the last ``window`` keys up to itself (itself included), as in
    transformers' ``sliding_window_overlay`` (key j allowed iff i − window < j ≤ i). Bottom-right aligned, like
    :func:`causal_allowed`."""
    return allowed_matrix("sliding", T, S, window, device)


def mask_pattern(kind: str, T: int, S: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, S) bool of a plain mask, ``"causal"`` or ``"bidirectional"``; any other name is a ValueError."""
    if kind not in MASK_OVERRIDES:
        raise ValueError(_("'{kind}' is not a plain mask: use 'causal' or 'bidirectional'.").format(kind=kind))
    return allowed_matrix(kind, T, S, device=device)


def visible_keys(kind: str, T: int, S: int, rows: slice, window: int | None = None) -> slice:
    """The span of keys holding every key some query in ``rows`` may see under ``kind``: causal keys end at the last
    query (bottom-right aligned), a sliding window starts ``window − 1`` before the first; otherwise every key."""
    if kind not in ("causal", "sliding"):
        return slice(0, S)
    _check_kind(kind, window)
    stop = rows.stop + (S - T)
    start = max(0, rows.start + (S - T) - window + 1) if kind == "sliding" else 0
    return slice(start, stop)
