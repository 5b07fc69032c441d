"""The Intervene page's figure builders on hand-made data: changed tokens marked, labels escaped."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.errors import ExplorerError
from explorer.figures import palette
from explorer.figures.intervene import attribution_scatter, changed_tokens, next_token_bars


def test_next_token_bars_mark_the_tokens_in_only_one_list():
    before = ([5, 7, 9], [" Paris", "<b>", " London"], [0.5, 0.3, 0.1])
    after = ([7, 11, 5], ["<b>", " 50%", " Paris"], [0.4, 0.2, 0.1])
    assert changed_tokens(before[0], after[0]) == {9, 11}
    fig = next_token_bars(before, after, titles=("before", "after <i>"), value_name="p", changed_name="new")
    left, right = fig.data
    assert list(left.marker.color) == [palette.MAIN, palette.MAIN, palette.HIGHLIGHT]
    assert list(right.marker.color) == [palette.MAIN, palette.HIGHLIGHT, palette.MAIN]
    assert left.y[1] == "1\u2002&lt;b&gt;" and left.y[2].startswith("★ ")
    assert right.y[1] == "★ 1\u2002 50&#37;"
    assert list(left.x) == [0.5, 0.3, 0.1]
    assert fig.layout.annotations[1].text == "after &lt;i&gt;"


def test_next_token_bars_reject_ragged_lists():
    with pytest.raises(ExplorerError):
        next_token_bars(([1, 2], ["a"], [0.5, 0.5]), ([1], ["a"], [1.0]), titles=("a", "b"), value_name="p",
                        changed_name="c")


def test_attribution_scatter_plots_each_head_against_the_diagonal():
    fig = attribution_scatter(np.array([0.1, -0.2]), np.array([0.3, 0.6]), [(0, 1), (2, 3)], title="r <1",
                              x_name="attribution", y_name="exact")
    diagonal, points = fig.data
    assert list(diagonal.x) == list(diagonal.y) == [-0.2, 0.6]
    assert list(points.x) == [0.1, -0.2] and list(points.y) == [0.3, 0.6]
    assert [list(c) for c in points.customdata] == [[0, 1], [2, 3]]
    assert fig.layout.title.text == "r &lt;1"
    with pytest.raises(ExplorerError):
        attribution_scatter(np.array([0.1]), np.array([0.3, 0.6]), [(0, 1)], title="", x_name="", y_name="")
