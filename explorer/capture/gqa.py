"""Grouped-query attention (GQA/MQA): H query heads share H_kv key/value heads, each kv head serving H / H_kv
consecutive query heads. One function repeats the kv heads so that every query head has its own, as transformers'
``repeat_kv`` does; the recorder, the walk-through and the from-scratch attention all use it."""

from __future__ import annotations

import torch


def repeat_kv(kv: torch.Tensor, groups: int, dim: int = -3) -> torch.Tensor:
    """(…, H_kv, T, D) → (…, H_kv·groups, T, D): query head h reads kv head h // groups.

    ``dim`` is the heads axis (−3 for (…, H, T, D); 0 for an unbatched (H, T, D) is the same axis). With one query
    head per kv head (plain multi-head attention) the tensor comes back as it is, not copied.
    """
    return kv.repeat_interleave(groups, dim=dim) if groups > 1 else kv


def kv_for_heads(kv: torch.Tensor, groups: int, heads: slice) -> torch.Tensor:
    """(H_kv, T, D) → (h, T, D): the kv head of each query head in ``heads`` (a plain slice start:stop), as
    ``repeat_kv(kv, groups, dim=0)[heads]`` gives it, repeating only the groups those heads fall in."""
    first = heads.start // groups  # the first kv head these query heads read
    repeated = repeat_kv(kv[first : (heads.stop - 1) // groups + 1], groups, dim=0)  # query heads first·groups …
    return repeated[heads.start - first * groups : heads.stop - first * groups]
