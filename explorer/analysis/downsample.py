"""Block means: a long text's maps shrunk to at most ``max_cells`` per side, each cell the mean of a block of token
pairs. One rule for every figure that downsamples, whether it holds the whole map or streams it a block of query
rows at a time (:class:`BlockMeanSum`, for layers too large to hold: SmolLM2's at 8,192 tokens is 2.4 GiB).

Blocks are ``step = ⌈n / max_cells⌉`` tokens on a side; at the bottom and right edges they may be partial, and each
is the mean of its own cells. NaN cells (a view transform's "nothing to show") are left out of a block's mean, and a
block with no finite cell is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..i18n import _

@dataclass(frozen=True)
class BlockMeans:
    """``values`` (..., ⌈n_rows / row_step⌉, ⌈n_cols / col_step⌉) float32: means of row_step × col_step blocks."""

    values: np.ndarray
    row_step: int
    col_step: int

    @property
    def downsampled(self) -> bool:
        return self.row_step > 1 or self.col_step > 1

    def __getitem__(self, index) -> "BlockMeans":
        """The block means of some of the maps (an index into the leading axes, e.g. one head of a layer)."""
        return BlockMeans(self.values[index], self.row_step, self.col_step)


def block_step(n: int, max_cells: int) -> int:
    """Tokens per block side so that ``n`` tokens fit in ``max_cells`` cells."""
    return max(1, -(-n // max_cells))


class BlockMeanSum:
    """Block means of maps (..., n_rows, n_cols) built from pieces: :meth:`add` each block of rows × columns (every
    cell at most once; cells never added count as 0), then :meth:`result`."""

    def __init__(self, lead: tuple[int, ...], n_rows: int, n_cols: int, max_cells: int):
        self.n_rows, self.n_cols = n_rows, n_cols
        self.row_step, self.col_step = block_step(n_rows, max_cells), block_step(n_cols, max_cells)
        cells = (-(-n_rows // self.row_step), -(-n_cols // self.col_step))
        self._sum = torch.zeros(*lead, *cells, dtype=torch.float64)
        self._missing = torch.zeros(*lead, *cells, dtype=torch.float64)  # NaN cells, left out of the means

    def add(self, rows: slice, cols: slice, block: torch.Tensor) -> None:
        """``block`` (..., Tq, Sk): the maps' cells ``[rows, cols]`` (slices with step 1)."""
        block = torch.as_tensor(block, dtype=torch.float32)
        by_col = _column_block_sums(block, cols.start, self.col_step)  # (..., Tq, column blocks spanned)
        if bool(by_col.isnan().any()):  # a NaN in the block: its NaN cells are counted out and summed as 0
            nan = block.isnan()
            self._add(self._missing, rows, cols, _column_block_sums(nan.float(), cols.start, self.col_step))
            by_col = _column_block_sums(block.masked_fill(nan, 0.0), cols.start, self.col_step)
        self._add(self._sum, rows, cols, by_col)

    def add_column_block_sums(self, rows: slice, sums: torch.Tensor, missing: torch.Tensor | None = None) -> None:
        """Rows already summed within each column block: ``sums`` (..., Tq, column blocks) are Σ over each block of
        every row ``rows`` (e.g. ``P @ B``, B the indicators of the column blocks, from the fused kernel);
        ``missing`` the same shape, how many of those cells are NaN (left out of the means)."""
        self._add(self._sum, rows, slice(0, self.n_cols), sums.double())
        if missing is not None:
            self._add(self._missing, rows, slice(0, self.n_cols), missing.double())

    def column_blocks(self) -> torch.Tensor:
        """(n_cols, column blocks) float32: 1 where a column lies in a block (the B of :meth:`add_column_block_sums`)."""
        cols = torch.arange(self.n_cols)
        indicators = torch.zeros(self.n_cols, self._sum.shape[-1])
        indicators[cols, cols // self.col_step] = 1.0
        return indicators

    def _add(self, into: torch.Tensor, rows: slice, cols: slice, by_col: torch.Tensor) -> None:
        # Columns are summed within the block first (by_col), then rows into the totals by each row's block index.
        first = cols.start // self.col_step
        row_block = torch.arange(rows.start, rows.start + by_col.shape[-2]) // self.row_step  # (Tq,)
        into[..., first : first + by_col.shape[-1]].index_add_(-2, row_block, by_col)

    def result(self) -> BlockMeans:
        rs, cs = self.row_step, self.col_step
        rows = torch.tensor([min(rs, self.n_rows - i) for i in range(0, self.n_rows, rs)], dtype=torch.float64)
        cols = torch.tensor([min(cs, self.n_cols - j) for j in range(0, self.n_cols, cs)], dtype=torch.float64)
        count = rows[:, None] * cols[None, :] - self._missing
        mean = torch.where(count > 0, self._sum / count.clamp(min=1), torch.nan)
        return BlockMeans(mean.float().numpy(), rs, cs)


def _column_block_sums(block: torch.Tensor, start: int, step: int) -> torch.Tensor:
    """(..., Tq, Sk) cells of columns start…start+Sk−1 → (..., Tq, b) sums over each block of ``step`` columns they
    touch (blocks at multiples of ``step``). Float32 sums of ≤ step cells, then float64: summing in float64 from the
    start is four to seven times slower, and a block's relative error stays ~ε·√step."""
    end = start + block.shape[-1]
    head_end = min(end, -(-start // step) * step)  # the first aligned column (or the end)
    body_end = head_end + (end - head_end) // step * step
    parts = []
    if head_end > start:
        parts.append(block[..., : head_end - start].sum(-1, keepdim=True))
    if body_end > head_end:
        body = block[..., head_end - start : body_end - start]
        parts.append(body.unflatten(-1, (-1, step)).sum(-1))
    if end > body_end:
        parts.append(block[..., body_end - start :].sum(-1, keepdim=True))
    return (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]).double()


def block_means(maps: np.ndarray | torch.Tensor | BlockMeans, max_cells: int) -> BlockMeans:
    """Block means of a whole map or stack of maps (..., rows, cols). Already reduced means pass through when they
    fit: a page that streamed a long layer hands its blocks to the same figures as a short text's maps."""
    if isinstance(maps, BlockMeans):
        if max(maps.values.shape[-2:], default=0) > max_cells:
            raise ValueError(_("Block means of {shape} cells do not fit in {cells}.").format(
                shape=tuple(maps.values.shape[-2:]), cells=max_cells))
        return maps
    maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    rows, cols = maps.shape[-2:]
    if block_step(rows, max_cells) == 1 and block_step(cols, max_cells) == 1:
        return BlockMeans(maps.numpy(), 1, 1)
    total = BlockMeanSum(tuple(maps.shape[:-2]), rows, cols, max_cells)
    total.add(slice(0, rows), slice(0, cols), maps)
    return total.result()
