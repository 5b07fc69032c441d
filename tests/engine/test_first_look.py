"""The head Home shows first: picked by the head statistics, on hand-made scores and on the real model."""

from __future__ import annotations

import numpy as np

from explorer.analysis.stats import CLEAR_PATTERN, TellingHead, text_statistics, telling_head


def _values(prev=0.1, self_=0.1, first=0.5, at=(1, 2)) -> dict[str, np.ndarray]:
    values = {name: np.full((3, 4), 0.05) for name in ("entropy", "previous_token", "self", "first_token")}
    values["previous_token"][at], values["self"][at], values["first_token"][at] = prev, self_, first
    return values


def test_a_clear_previous_token_head_wins_over_the_sink():
    assert telling_head(_values(prev=0.8, first=0.99)) == TellingHead(1, 2, "previous_token", 0.8)


def test_a_self_head_wins_when_it_is_stronger():
    assert telling_head(_values(prev=0.4, self_=0.6)).kind == "self"


def test_without_a_clear_pattern_the_sink_is_shown():
    picked = telling_head(_values(prev=CLEAR_PATTERN / 2, self_=CLEAR_PATTERN / 2, first=0.9))
    assert picked == TellingHead(1, 2, "first_token", 0.9)


def test_nan_scores_never_win():
    values = _values(self_=0.5)
    values["previous_token"][:] = np.nan  # a one-token text has no previous token
    assert telling_head(values).kind == "self"


def test_on_smollm2_chinese_it_finds_the_previous_token_head(smollm2):
    # The README's worked example: 16.0 is SmolLM2's strongest previous-token head; on this text it scores ~0.8.
    trace = smollm2.trace("大规模语言模型正在改变我们使用计算机的方式。")
    values = text_statistics(trace)
    picked = telling_head(values)
    assert (picked.layer, picked.head, picked.kind) == (16, 0, "previous_token")
    assert picked.score == values["previous_token"][16, 0] == values["previous_token"].max()
