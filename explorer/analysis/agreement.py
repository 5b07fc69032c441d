"""How far apart two traces of the same tokens are (one on the CPU, one on CUDA; one in float32, one in bfloat16):
the largest difference of their attention and of their logits."""

from __future__ import annotations

import torch

from ..capture.trace import Trace
from ..errors import ExplorerError
from ..i18n import _


def device_agreement(reference: Trace, other: Trace) -> dict[str, float]:
    """Largest |Δ| between two traces of the same tokens (e.g. one on the CPU, one on CUDA): ``attention`` over
    every layer, head, query and key; ``logits`` over every position and token (language models only)."""
    check_same_tokens(reference, other)
    if (reference.n_layers, reference.n_heads) != (other.n_layers, other.n_heads):
        raise ExplorerError(_("The two traces come from models of different shapes."))
    attention = max(float((reference.attention(i) - other.attention(i)).abs().max())
                    for i in range(reference.n_layers))
    result = {"attention": attention}
    if reference.has_logits and other.has_logits:  # 512 positions at a time: never n × vocab at once
        chunks = [r.tolist() for r in torch.split(torch.arange(reference.n_tokens), 512)]
        result["logits"] = max(float((reference.logits_at(c) - other.logits_at(c)).abs().max()) for c in chunks)
    return result


def check_same_tokens(a: Trace, b: Trace) -> None:
    """Refuse two traces of different tokens: their positions do not correspond."""
    if list(a.token_ids) != list(b.token_ids):
        raise ExplorerError(_("The two traces ran on different tokens: compare runs of the same text."))
