"""The one statistic registry (issue #20): every name the engine, the table and the page use comes from it, and
each text statistic's gathered cell (first_query, key) is the cell its streamed row function reads."""

from __future__ import annotations

import math

import numpy as np
import torch

from explorer.analysis import stats


def test_the_registry_lists_every_statistic_once_with_its_label_formula_and_meaning():
    assert stats.STATISTICS == ("entropy", "previous_token", "first_token", "self", "induction")
    for name, stat in stats.REGISTRY.items():
        assert stat.name == name and stat.label and stat.formula and stat.meaning
    assert set(stats.TEXT_STATISTICS) == {n for n, s in stats.REGISTRY.items() if s.measured_on == "text"}
    assert set(stats.FUSED_STATISTICS) == set(stats.TEXT_STATISTICS)  # every text statistic is computed fused
    frame = stats.stats_frame({name: np.zeros((2, 3)) for name in stats.STATISTICS})
    assert list(frame.columns) == ["layer", "head", *stats.STATISTICS]


def test_each_gathered_cell_is_the_cell_the_row_function_reads():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 9, 9, generator=generator, dtype=torch.float64)
    maps /= maps.sum(-1, keepdim=True)  # rows sum to 1, every cell different
    for name, stat in stats.REGISTRY.items():
        if stat.key is None:
            continue
        per_query = stat.rows(maps)  # (2, 9), NaN for the queries left out
        queries = torch.arange(stat.first_query, 9)
        assert bool(per_query[:, : stat.first_query].isnan().all())
        torch.testing.assert_close(per_query[:, queries], maps[:, queries, stat.key.of(queries)], rtol=0, atol=0)
        whole = stat.whole(maps)
        torch.testing.assert_close(whole, maps[:, queries, stat.key.of(queries)].mean(-1), rtol=0, atol=1e-15)
        assert not math.isnan(float(whole.sum()))
