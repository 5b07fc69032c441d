"""The Explain page's figures: token labels escaped, the parts in the order and scale the page promises."""

from __future__ import annotations

import numpy as np
import pandas as pd

from explorer.figures import explain as fe


def test_part_bars_keep_the_largest_parts_by_size_on_one_centred_scale():
    parts = pd.Series({"embed": 0.5, "3.1": -2.0, "mlp2": 1.0, "bias": 0.01})
    bar = fe.part_bars(parts, title="t", value_name="v", top=3).data[0]
    assert list(bar.y) == ["3.1", "mlp2", "embed"]  # |value| order, the smallest left out
    assert list(bar.x) == [-2.0, 1.0, 0.5] and bar.marker.cmid == 0


def test_head_parts_map_puts_embed_and_mlps_beside_the_heads():
    grid = np.array([[1.0, -3.0], [0.5, 0.0]])  # 2 layers × 2 heads
    others = pd.Series({"embed": 2.0, "mlp0": -1.0, "mlp1": 0.25})
    heads, side = fe.head_parts_map(grid, others, title="t", value_name="v", embed_name="embed", mlp_name="MLP",
                                    layer_name="layer", head_name="head").data
    z = np.array(heads.z, dtype=float)
    assert np.isnan(z[0]).all() and np.array_equal(z[1:], grid)  # the embed row has no heads
    assert np.array_equal(np.array(side.z, dtype=float)[:, 0], [2.0, -1.0, 0.25])
    assert heads.zmin == side.zmin == -3.0 and heads.zmax == side.zmax == 3.0  # one scale, centred on 0


def test_attention_row_escapes_tokens_and_marks_query_and_key():
    fig = fe.attention_row(np.array([0.7, 0.2, 0.1]), ["<b>x</b>", "%{y}", "$y$"], query=2, key=0, title="<i>",
                           value_name="w")
    shown, hit = fig.data
    labels = [c[0] for c in hit.customdata]
    assert all("<" not in label and "%{" not in label for label in labels)
    assert [c[1] for c in hit.customdata] == [0.7, 0.2, 0.1] and list(hit.y) == [1.0] * 3  # clickable full height
    assert shown.marker.color[0] != shown.marker.color[1] != shown.marker.color[2]  # key, plain, query
    assert "<i>" not in fig.layout.title.text
