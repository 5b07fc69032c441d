"""Logit lens (nostalgebraist 2020): read each layer's residual stream as if it were the last one.

Row 0 is the token embeddings, row l (1 ≤ l < L) the residual stream after block l−1, each passed through the
model's final norm and then the unembedding. The last row is the model's own final hidden state (transformers
already applies the final norm to it), so the last row *is* the model's prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..i18n import _
from ..errors import ExplorerError


@dataclass(frozen=True)
class LensResult:
    """Top-k next-token predictions read from every layer at some positions.

    ``token_ids`` / ``probs``: (n_layers + 1, len(positions), k). ``tokens``: the decoded strings, same shape.
    """

    positions: list[int]
    layer_labels: list[str]
    token_ids: np.ndarray
    probs: np.ndarray
    tokens: list[list[list[str]]]

    @property
    def top_tokens(self) -> list[list[str]]:
        """(layers, positions) top-1 decoded tokens."""
        return [[cell[0] for cell in row] for row in self.tokens]


def layer_labels(n_layers: int) -> list[str]:
    """Row names: the embeddings, then the residual stream after each layer (the last one is the output)."""
    return ([_("embeddings")] + [_("layer {layer}").format(layer=l) for l in range(n_layers - 1)]
            + [_("layer {layer} = output").format(layer=n_layers - 1)])


def lens_hidden(model, trace, layer: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """(n, d_model) the residual stream read by the lens at row ``layer`` (0 … n_layers), final norm applied.

    ``index`` keeps only those positions, before the norm: it acts on each position alone, so the others need
    not be normalised at all."""
    if layer == trace.n_layers:
        return trace.final_hidden if index is None else trace.final_hidden[index]
    norm = model.final_norm()
    hidden = trace.hidden_states[layer] if index is None else trace.hidden_states[layer][index]
    with torch.inference_mode():
        return norm(hidden) if norm is not None else hidden


def logit_lens(model, trace, positions: Sequence[int] | None = None, top_k: int = 1) -> LensResult:
    """Top-``top_k`` predictions and their probabilities from every layer at ``positions`` (default: all)."""
    if not model.is_causal_lm or not trace.has_logits:
        raise ExplorerError(
            _("The logit lens reads next-token predictions, and '{model}' has no language-model head "
              "(it is an encoder). Choose a causal language model such as smollm2.").format(model=model.name)
        )
    if len(trace.hidden_states) != trace.n_layers + 1:
        raise ExplorerError(_("This trace did not keep the residual stream of every layer."))
    positions = list(range(trace.n_tokens)) if positions is None else [int(p) for p in positions]
    if not positions or min(positions) < 0 or max(positions) >= trace.n_tokens:
        raise ExplorerError(_("Positions must lie in 0–{last}.").format(last=trace.n_tokens - 1))
    index = torch.tensor(positions, device=trace.final_hidden.device)
    # All layers' rows go through the unembedding together (one big matmul is much faster than 31 small ones),
    # in chunks so that rows × vocab probabilities stay within ~200 MB.
    hidden = torch.cat([lens_hidden(model, trace, layer, index) for layer in range(trace.n_layers + 1)])
    chunk = max(1, (50_000_000 // model.vocab_size))
    ids, probs = [], []
    for rows in torch.split(hidden, chunk):
        top = torch.softmax(model.unembed(rows).float(), dim=-1).topk(top_k, dim=-1)
        ids.append(top.indices.cpu())
        probs.append(top.values.cpu())
    shape = (trace.n_layers + 1, len(positions), top_k)
    token_ids, top_probs = torch.cat(ids).reshape(shape).numpy(), torch.cat(probs).reshape(shape).numpy()
    decoded = {int(i): model.decode_token(int(i)) for i in np.unique(token_ids)}
    tokens = [[[decoded[int(i)] for i in cell] for cell in row] for row in token_ids]
    return LensResult(positions, layer_labels(trace.n_layers), token_ids, top_probs, tokens)
