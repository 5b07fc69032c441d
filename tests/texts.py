"""Texts shared by several test modules: the bad-input catalogue, a long English text, Gemma 3's texts, the tiny
models' word text. (Test modules never import one another; what two of them share lives here.)"""

from __future__ import annotations

import itertools

PROSE = (
    "Attention lets every token look at every other token and decide what matters. "
    "大规模语言模型通过注意力机制在上下文中寻找相关的信息。 "
)

# id -> text. Each must trace on both embedded models except those listed in TEXT_ERRORS.
TEXTS: dict[str, str] = {
    "empty": "",
    "whitespace-only": " \n\t  \r\n ",
    "one-character": "a",
    "50k-characters": (PROSE * (50_000 // len(PROSE) + 1))[:50_000],
    "10k-tokens": " word" * 10_000,
    "emoji": "Family 👩‍👩‍👧, flags 🇫🇷🇯🇵, skin tones 👋🏽 and 🎉🔥",
    "cjk": "大规模语言模型。日本語のテキスト。한국어 문장.",
    "rtl-arabic-hebrew": "مرحبا بالعالم — שלום עולם — mixed ltr",
    "combining-marks": "Ze\u0301\u0301\u0301 Z\u0351\u0352\u0353\u0354 a\u0308\u0304 n\u0303",
    "zero-width-joiners": "a\u200db\u200cc\u200bd\ufeffe\u2060f",
    "control-characters": "bell\x07 esc\x1b[31mred\x1b[0m del\x7f back\x08 vt\x0b ff\x0c",
    "nul": "before\x00after\x00",
    "script-tag": "<script>window.__xss=1</script>",
    "img-onerror": '<img src=x onerror="window.__xss=2">',
    "markdown-latex-injection": "**bold** [link](javascript:alert(1)) $\\frac{1}{0}$ $$\\begin{x}$$ # heading\n---",
    "special-token-strings": "<|im_start|>system\nignore<|im_end|> [CLS] [SEP] [MASK] <s></s>",
}
TEXT_ERRORS = {"empty": "text is empty", "whitespace-only": "text is empty"}
LONG = {"50k-characters", "10k-tokens"}

# A long English text (about 1,000 tokens) for the block-streamed overviews and the pages at the app's cap.
LONG_TEXT = " ".join(["The committee met on Tuesday to discuss the budget, and after a long debate it decided to "
                      "postpone the vote until the next session."] * 45)


def _long_text() -> str:
    """~650 tokens of varied English sentences (no sentence repeats)."""
    subjects = ["The old sailor", "A curious child", "Our new neighbour", "The tired engineer", "My grandmother",
                "A quiet student", "The village baker", "An impatient driver"]
    verbs = ["painted", "repaired", "described", "carried", "photographed", "forgot"]
    objects = ["a wooden boat near the harbour", "the broken clock in the hall", "seven red apples from the market",
               "a letter written in green ink", "the map of a forgotten island"]
    times = ["on Monday morning", "after the storm", "before dinner", "during the long winter"]
    rows = zip(itertools.product(subjects, verbs), itertools.cycle(objects), itertools.cycle(times))
    return " ".join(f"{s} {v} {o} {t}." for (s, v), o, t in rows)


# Gemma 3's texts: English, Chinese, and one past its 512-token sliding window.
GEMMA_TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog, and then the dog sleeps again.",
    "chinese": "大规模语言模型是一种机器学习模型，它通过在大量文本上训练来预测下一个词。",
    "long": _long_text(),
}

# The tiny GPT-2 / BERT / Llama configs' text, in their word tokenizer's vocabulary (tiny_tokenizer.py).
TINY_TEXT = " ".join(f"w{i}" for i in (5, 17, 99, 23, 5, 17, 64, 8, 120, 33, 5))
