"""What flipping the attention mask does: the masks themselves, one head under both, and the model's outputs.

A causal mask lets token i attend to tokens 0…i; a bidirectional one to every token. A model trained with one and
run with the other computes something it never learned: these numbers describe a what-if, not the model's
behaviour. For a causal LM we compare next-token predictions position by position (top token and
KL(causal ‖ bidirectional)); for an encoder, how far each token's final state moves (cosine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..i18n import _, join
from ..errors import ExplorerError
from ..capture.model import Model
from ..capture.masks import causal_allowed
from ..capture.trace import Trace
from .downsample import BlockMeans
from .overview import layer_overview

MASKS = ("causal", "bidirectional")
LOGIT_CHUNK = 128  # positions unembedded at once: n × vocab logits never exist whole (1,024 × 49,152 ≈ 200 MB)


CAUSAL_MASK_LATEX = r"M_{ij} = \begin{cases} 0 & j \le i \\ -\infty & j > i \end{cases}"


def mask_matrix(kind: str, n: int) -> np.ndarray:
    """(n, n) bool: True where query i may attend to key j under the ``kind`` mask."""
    if kind == "causal":
        return causal_allowed(n, n).numpy()
    if kind == "bidirectional":
        return np.ones((n, n), dtype=bool)
    raise ExplorerError(_("Unknown mask '{mask}'. Use one of: {choices}.").format(mask=kind, choices=join(MASKS)))


def additive_mask(allowed: np.ndarray) -> np.ndarray:
    """The additive form M (0 where allowed, −∞ where not) that is added to the scaled scores."""
    return np.where(np.asarray(allowed, dtype=bool), 0.0, -np.inf)


def _check_pair(causal: Trace, bidirectional: Trace) -> None:
    if causal.mask != "causal" or bidirectional.mask != "bidirectional":
        raise ExplorerError(
            _("Expected a causal and a bidirectional trace, got '{first}' and '{second}'.").format(
            first=causal.mask, second=bidirectional.mask)
        )
    if causal.token_ids != bidirectional.token_ids:
        raise ExplorerError(_("The two traces are of different texts."))


def attention_difference(causal: Trace, bidirectional: Trace, layer: int, head: int) -> np.ndarray:
    """(n, n) bidirectional − causal attention of one head: where the flip moves attention to and from."""
    _check_pair(causal, bidirectional)
    return (bidirectional.attention(layer, head) - causal.attention(layer, head)).numpy()


@dataclass(frozen=True)
class HeadUnderBoth:
    """One head's map under each mask as the masking page draws them (exact up to ``max_cells`` tokens, else block
    means of the same blocks), and ``later_share``: :func:`share_on_later_tokens` of the bidirectional map."""

    causal: BlockMeans
    bidirectional: BlockMeans
    later_share: float

    @property
    def difference(self) -> BlockMeans:
        """bidirectional − causal: a block's mean of the differences is the difference of its means."""
        return BlockMeans(self.bidirectional.values - self.causal.values, self.causal.row_step, self.causal.col_step)


def head_under_both(causal: Trace, bidirectional: Trace, layer: int, head: int, max_cells: int,
                    on_progress: Callable[[float], None] | None = None) -> HeadUnderBoth:
    """:class:`HeadUnderBoth` from one pass over each map a block of queries at a time (Trace.row_blocks): a long
    text's (n, n) maps are never held. ``on_progress`` hears the fraction done."""
    _check_pair(causal, bidirectional)
    heads = slice(head, head + 1)
    half = (lambda start: (lambda f: on_progress(start + f / 2))) if on_progress else (lambda start: None)
    seen = layer_overview(causal, layer, cells=(max_cells,), heads=heads, on_progress=half(0.0))
    both = layer_overview(bidirectional, layer, cells=(max_cells,), statistics=("later_tokens",), heads=heads,
                          on_progress=half(0.5))
    return HeadUnderBoth(seen.blocks[max_cells][0], both.blocks[max_cells][0],
                         float(both.statistics["later_tokens"][0]))


def share_on_later_tokens(attention: np.ndarray | torch.Tensor) -> float:
    """Mean over queries of the attention on keys after the query (Σ_{j>i} p_ij): 0 under a causal mask."""
    a = torch.as_tensor(attention, dtype=torch.float64)
    n = a.shape[-1]
    later = ~causal_allowed(n, n)
    return float((a * later).sum(-1).mean())


def _log_probs(unembed: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities (rows, vocab) of final hidden states, in float64."""
    return torch.log_softmax(unembed(hidden).double(), dim=-1).cpu()


def next_token_changes(
    model: Model, causal: Trace, bidirectional: Trace, chunk: int = LOGIT_CHUNK,
    on_progress: Callable[[float], None] | None = None,
) -> pd.DataFrame:
    """One row per position of a causal LM: the next-token prediction under each mask and how far it moved.

    Columns: ``position``, ``token``, ``actual_next`` (the text's next token, "" at the end),
    ``top_causal``/``p_causal``, ``top_bidirectional``/``p_bidirectional`` (decoded top token and its probability),
    ``top_changed``, ``bidirectional_says_next`` (its top token is the text's next token), and
    ``kl`` = KL(P_causal ‖ P_bidirectional) in nats, computed in float64.
    Under the bidirectional mask position i can already see token i+1, the one it is asked to predict.
    ``on_progress`` hears the fraction of positions done.
    """
    if not model.is_causal_lm:
        raise ExplorerError(
            _("'{model}' is not a causal language model: it makes no next-token predictions.").format(model=model.name)
        )
    _check_pair(causal, bidirectional)
    n = causal.n_tokens
    kl = np.empty(n)
    top_c = np.empty(n, dtype=np.int64)
    top_b = np.empty(n, dtype=np.int64)
    p_c = np.empty(n)
    p_b = np.empty(n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        lc = _log_probs(model.unembed, causal.final_hidden[start:stop])
        lb = _log_probs(model.unembed, bidirectional.final_hidden[start:stop])
        kl[start:stop] = (lc.exp() * (lc - lb)).sum(-1).clamp_min(0.0).numpy()
        mc, ic = lc.max(-1)
        mb, ib = lb.max(-1)
        top_c[start:stop], top_b[start:stop] = ic.numpy(), ib.numpy()
        p_c[start:stop], p_b[start:stop] = mc.exp().numpy(), mb.exp().numpy()
        if on_progress is not None:
            on_progress(stop / n)
    decode = {int(t): model.decode_token(int(t)) for t in set(top_c.tolist()) | set(top_b.tolist())}
    return pd.DataFrame({
        "position": np.arange(n),
        "token": causal.tokens,
        "actual_next": causal.tokens[1:] + [""],
        "top_causal": [decode[int(t)] for t in top_c],
        "p_causal": p_c,
        "top_bidirectional": [decode[int(t)] for t in top_b],
        "p_bidirectional": p_b,
        "top_changed": top_c != top_b,
        "bidirectional_says_next": np.append(top_b[:-1] == np.asarray(causal.token_ids[1:]), False),
        "kl": kl,
    })


def final_state_changes(causal: Trace, bidirectional: Trace) -> pd.DataFrame:
    """One row per token: cosine similarity of its final hidden state under the two masks, and 1 − cosine.

    Columns: ``position``, ``token``, ``cosine``, ``cosine_change`` (= 1 − cosine; 0 means unchanged in direction),
    ``norm_causal``, ``norm_bidirectional``.
    """
    _check_pair(causal, bidirectional)
    hc = causal.final_hidden.double().cpu()
    hb = bidirectional.final_hidden.double().cpu()
    cos = torch.nn.functional.cosine_similarity(hc, hb, dim=-1).numpy()
    return pd.DataFrame({
        "position": np.arange(causal.n_tokens),
        "token": causal.tokens,
        "cosine": cos,
        "cosine_change": 1.0 - cos,
        "norm_causal": hc.norm(dim=-1).numpy(),
        "norm_bidirectional": hb.norm(dim=-1).numpy(),
    })


def flip_summary(changes: pd.DataFrame) -> dict[str, float]:
    """Headline numbers of :func:`next_token_changes` or :func:`final_state_changes` output."""
    if "kl" in changes:
        return {"mean_kl": float(changes["kl"].mean()), "max_kl": float(changes["kl"].max()),
                "share_top_changed": float(changes["top_changed"].mean())}
    return {"mean_cosine_change": float(changes["cosine_change"].mean()),
            "max_cosine_change": float(changes["cosine_change"].max())}
