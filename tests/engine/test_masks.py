"""The mask rule, once (explorer/capture/masks.py): each kind's allowed pairs against an independent formulation
(``tril``/``triu`` of a (T, S) matrix, bottom-right aligned), blocks against the whole matrix, and the mask a caller
gives checked on every path to a trace: ``head_stats(model, mask="causl")`` with no text once ran its probe
unchecked, and an unknown kind was silently every key."""

from __future__ import annotations

import pytest
import torch

import explorer
from explorer.capture import masks
from explorer.capture.recorder import Recorder


def _reference(kind: str, T: int, S: int, window: int | None = None) -> torch.Tensor:
    ones = torch.ones(T, S, dtype=torch.bool)
    if kind == "bidirectional":
        return ones
    causal = ones.tril(diagonal=S - T)  # query i sits at S − T + i
    return causal if kind == "causal" else causal & ones.triu(diagonal=S - T - window + 1)


@pytest.mark.parametrize("T, S", [(1, 1), (5, 5), (3, 8), (1, 9), (7, 7)])
@pytest.mark.parametrize("kind, window", [("causal", None), ("bidirectional", None), ("sliding", 3), ("sliding", 1),
                                          ("sliding", 20)])
def test_each_kind_allows_what_the_reference_does(kind, window, T, S):
    whole = masks.allowed_matrix(kind, T, S, window)
    assert torch.equal(whole, _reference(kind, T, S, window))
    for rows in (slice(0, T), slice(T // 2, T), slice(0, 1)):
        for cols in (slice(0, S), slice(S // 3, S), slice(1, max(2, S - 1))):
            if cols.stop > S or cols.start >= cols.stop:
                continue
            assert torch.equal(masks.allowed_block(kind, T, S, rows, cols, window), whole[rows, cols])
        keys = masks.visible_keys(kind, T, S, rows, window)  # the span holds every key the rows may see
        outside = whole[rows].clone()
        outside[:, keys] = False
        assert not outside.any() and whole[rows, keys].any(dim=-1).all()


def test_unknown_kinds_are_errors_not_every_key():
    for bad in ("causl", "sliding", "custom", ""):
        with pytest.raises(ValueError):
            masks.mask_pattern(bad, 3, 3)  # a plain pattern is causal or bidirectional, nothing else
    with pytest.raises(ValueError):
        masks.allowed_matrix("causl", 3, 3)
    with pytest.raises(ValueError):
        masks.allowed_matrix("sliding", 3, 3, window=None)
    assert torch.equal(masks.mask_pattern("causal", 3, 3), _reference("causal", 3, 3))


@pytest.mark.parametrize("bad", ["causl", "Causal", "sliding", "custom", 1, ["causal"]])
def test_a_bad_mask_is_refused_on_every_path(smollm2, bad):
    with pytest.raises(explorer.ExplorerError, match="Unknown mask"):
        Recorder(mask_override=bad)
    with pytest.raises(explorer.ExplorerError, match="Unknown mask"):
        smollm2.trace("The cat sat.", mask=bad)
    with pytest.raises(explorer.ExplorerError, match="Unknown mask"):
        smollm2.trace_ids(smollm2.encode("The cat sat."), mask=bad)
    if bad == "causl":  # no text: only the induction probe is traced, through trace_ids
        with pytest.raises(explorer.ExplorerError, match="Unknown mask"):
            explorer.head_stats(smollm2, mask=bad)
    assert masks.check_mask(None) is None and masks.check_mask("bidirectional") == "bidirectional"
