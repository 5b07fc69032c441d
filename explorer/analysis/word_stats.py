"""Head statistics by word: the text statistics of :mod:`explorer.analysis.stats` on the word maps (Clark et al.'s
aggregation, :class:`explorer.capture.word_trace.WordTrace`), which reads the same token maps a block of queries at a
time.

Which make sense per word, and which do not:

- ``previous_word`` (the statistic ``previous_token`` on word maps): mean over words w ≥ 1 of the weight word w puts
  on word w − 1. A previous-token head that looks back across a word's own pieces ('…猫' to '猫') is *not* a
  previous-word head: that weight stays inside the word, on the diagonal.
- ``first_word``: mean over words w ≥ 1 of the weight on word 0 (the sink; for BERT and Gemma 3 that is [CLS] or
  <bos>, a word of its own).
- ``self``: mean over words of the weight a word keeps on its own pieces; it includes the pieces' attention to one
  another, so it is higher than the token ``self`` of a text with split words.
- ``entropy``: in nats over words; not comparable with the token entropy (fewer, heavier keys).
- ``induction`` has no word form: its probe is random token ids, which have no words, and the pattern it measures
  (attend to the token after an earlier copy) is one of tokens.
"""

from __future__ import annotations

import numpy as np

from ..capture.word_trace import WordTrace
from .stats import TEXT_STATISTICS, text_statistics

#: The word statistics' names, keyed by the token statistic they are computed with.
WORD_NAMES = {"entropy": "entropy", "previous_token": "previous_word", "first_token": "first_word", "self": "self"}


def word_statistics(trace) -> dict[str, np.ndarray]:
    """entropy / previous_word / first_word / self of every head, by word: name → (n_layers, n_heads)."""
    values = text_statistics(WordTrace(trace))
    return {WORD_NAMES[name]: values[name] for name in TEXT_STATISTICS}
