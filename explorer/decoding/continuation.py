"""Greedy continuation with heads switched off: what the text becomes when some heads are ablated.

The intervention itself (a hook on each layer's W_o input) is :mod:`explorer.capture.intervention`'s; this is a
decoding loop over it, here with the other ways of producing tokens.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..capture.intervention import Ablation, Head, HeadSlices, Intervention, check_ablation, heads_by_layer, intervening
from ..capture.model import Model


def greedy_continuation(model: Model, ids: Sequence[int], n: int, ablate: Sequence[Head] = (),
                        ablation: Ablation = "zero",
                        on_progress: Callable[[float], None] | None = None) -> list[int]:
    """``n`` greedy next tokens after ``ids``, each the arg-max of the next-token logits of the text so far with
    ``ablate`` switched off as :meth:`Model.trace` does it. ``on_progress`` hears the fraction of tokens done.

    Zero ablation (or none) acts on each position alone and the model is causal, so earlier positions never change:
    one pass over ``ids`` and then one token per step over a KV cache give the same numbers as re-running the text.
    Mean ablation replaces a head by its mean over the text so far, which moves with every new token and with it
    every position: each step runs the whole text again with the new mean (the un-ablated run that gives the mean
    goes on over a cache).
    """
    from transformers import DynamicCache

    heads = check_ablation(model, ablate, ablation)
    out = [int(i) for i in ids]
    by_layer = heads_by_layer(heads)
    zero = Intervention(model.n_heads, replace={layer: HeadSlices(torch.tensor(hs), torch.zeros(len(hs), 1, 1))
                                                for layer, hs in by_layer.items()}) if heads else None
    cache = DynamicCache(config=model.hf.config)
    sums = {layer: 0.0 for layer in by_layer}  # mean ablation: Σ over the text so far of each head's slice
    fed = 0  # tokens of ``out`` already in the cache
    for step in range(n):
        new = torch.tensor([out[fed:]], device=model.device)  # (1, t): the tokens the cache has not seen
        with torch.inference_mode():
            if ablation == "zero" or not heads:
                with intervening(zero):
                    hidden = model.base(input_ids=new, cache=cache, use_cache=True).last_hidden_state[:, -1]
            else:
                probe = Intervention(model.n_heads, capture=frozenset(by_layer))
                with intervening(probe):
                    model.base(input_ids=new, cache=cache, use_cache=True)
                replace = {}
                for layer, hs in by_layer.items():
                    a = probe.captured[layer][0]  # (t, H·D)
                    sums[layer] = sums[layer] + a.view(a.shape[0], model.n_heads, -1)[:, hs].double().sum(0)  # (n, D)
                    replace[layer] = HeadSlices(torch.tensor(hs), (sums[layer] / len(out)).float()[:, None])
                with intervening(Intervention(model.n_heads, replace=replace)):
                    text = torch.tensor([out], device=model.device)
                    hidden = model.base(input_ids=text, use_cache=False).last_hidden_state[:, -1]  # (1, d_model)
            out.append(int(model.unembed(hidden)[0].argmax()))
        fed = len(out) - 1
        if on_progress is not None:
            on_progress((step + 1) / n)
    return out[len(ids):]
