"""The next-token loss of a traced text, position by position: what an ablation or a patch makes worse."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..capture.trace import Trace
from ..errors import ExplorerError
from ..i18n import _

CHUNK_BYTES = 256 << 20  # float64 logits of one chunk of positions (the log-softmax takes as much again)


def next_token_loss(trace: Trace, on_progress: Callable[[float], None] | None = None) -> np.ndarray:
    """(n − 1,) cross-entropy in nats of each next token: entry i is −ln p(token i+1 | tokens ≤ i). Every position's
    logits are needed: at 8,192 tokens that is seconds for SmolLM2 and minutes for Gemma 3's 262,144-token
    vocabulary, so ``on_progress`` hears the fraction of positions done."""
    if not trace.has_logits:
        raise ExplorerError(_("This model has no next-token logits (an encoder): there is no next-token loss."))
    losses = []
    vocab = trace.logits_at([0]).shape[-1]  # one row: its width is the vocabulary, which sets the chunk's rows
    per_chunk = max(1, CHUNK_BYTES // (8 * vocab))  # Gemma 3: 128 rows of 262,144 float64 at a time, not n × vocab
    for rows in torch.split(torch.arange(trace.n_tokens - 1), per_chunk):
        logits = trace.logits_at(rows.tolist()).double()  # float64 so a 13-nat loss keeps its small digits
        targets = torch.tensor(trace.token_ids[1:])[rows]
        losses.append(torch.nn.functional.cross_entropy(logits, targets, reduction="none"))
        if on_progress is not None:
            on_progress(int(rows[-1] + 1) / (trace.n_tokens - 1))
    return torch.cat(losses).numpy() if losses else np.zeros(0)
