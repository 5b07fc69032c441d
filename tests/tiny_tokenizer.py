"""The suite's minimal real tokenizer, for tiny random models saved to a folder that ``explorer.load`` reads."""

from __future__ import annotations

from pathlib import Path


def word_tokenizer(folder: str | Path, vocab_size: int) -> None:
    """Save a WordLevel fast tokenizer over [UNK], [CLS], [SEP], [PAD] and w4 … w{vocab_size − 1} into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, **{f"w{i}": i for i in range(4, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
