"""Shared helpers for the benchmark scripts: timing medians and texts of an exact token length."""

from __future__ import annotations

import statistics
import time
from typing import Callable

PARAGRAPH = (
    "Attention lets every token look at every other token and decide what matters. In a causal language model "
    "each position may only look back, which is what makes generation possible one token at a time. "
    "大规模语言模型通过注意力机制在上下文中寻找相关的信息。 "
)


def text_of_tokens(model, n: int):
    """An ``Encoded`` of exactly ``n`` tokens of mixed English/Chinese prose."""
    text = PARAGRAPH * (n // 20 + 2)
    enc = model.encode(text, max_tokens=n)
    assert len(enc.token_ids) == n, (len(enc.token_ids), n)
    return enc


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stock_model(name: str = "smollm2", attn: str = "sdpa"):
    """The same embedded weights as ``explorer.load(name)``, through transformers' own attention (``"sdpa"``: the
    plain forward every ratio is measured against; ``"eager"``), float32, eval mode, on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from explorer.capture.embedded import resolve_embedded

    return AutoModelForCausalLM.from_pretrained(str(resolve_embedded(name)), dtype=torch.float32,
                                                attn_implementation=attn).eval()
