"""Masked-word prediction (BERT's objective), the counterpart of next-token prediction (GPT's).

A masked language model sees the whole sentence at once (bidirectional attention) and predicts the word behind
each mask token from both sides; a causal LM sees only the left context and predicts the next token. The forward
pass runs through the recording attention, so the mask position's attention row comes with the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..i18n import _, join
from ..errors import ExplorerError
from ..capture.model import Model
from ..capture.recorder import Recorder, recording

PLACEHOLDER = "[MASK]"  # typed by the user; replaced by the tokenizer's own mask token ("<mask>" for RoBERTa)
MASKED_LM_EXAMPLES = ("bert-base-uncased", "distilbert-base-uncased", "roberta-base")


@dataclass
class Candidate:
    token_id: int
    token: str
    prob: float


@dataclass
class MaskPrediction:
    """The prediction at one mask position: the top candidates and the position's attention over the sentence."""

    position: int
    candidates: list[Candidate]
    probs: torch.Tensor  # (vocab,) float32 CPU
    rows: torch.Tensor  # (n_layers, n_heads, n_tokens): the mask token's attention in every head

    def attention(self, layer: int, head: int) -> torch.Tensor:
        return self.rows[layer, head]


@dataclass
class FillMask:
    text: str
    tokens: list[str]
    token_ids: list[int]
    predictions: list[MaskPrediction]


def fill_mask(model: Model, text: str, top: int = 10, max_tokens: int | None = None) -> FillMask:
    """Predict the word behind every mask in ``text`` (write it as ``[MASK]`` or the tokenizer's own mask token)."""
    if model.kind != "masked-lm":
        raise ExplorerError(no_masked_lm_message(model))
    if model.mask_token is None:
        raise ExplorerError(
            _("The tokenizer of '{model}' has no mask token, so it cannot fill in masked words.").format(
                model=model.name
            )
        )
    mask_token, mask_id = model.mask_token
    if PLACEHOLDER not in text and mask_token not in text:
        raise ExplorerError(
            _("Put {placeholder} in the text where the word to predict goes.").format(placeholder=PLACEHOLDER)
        )
    encoded = model.encode(text.replace(PLACEHOLDER, mask_token), max_tokens=max_tokens)
    positions = [i for i, t in enumerate(encoded.token_ids) if t == mask_id]
    if not positions:
        raise ExplorerError(
            _("The {placeholder} token was cut off by the token limit; move it earlier in the text.").format(
                placeholder=PLACEHOLDER
            )
        )
    recorder = Recorder(keep_inputs=False)
    with torch.inference_mode(), recording(recorder):
        logits = model.hf(input_ids=torch.tensor([encoded.token_ids], device=model.device)).logits[0]
    recorder.check_complete(model.n_layers)
    probs = torch.softmax(logits[positions].float(), dim=-1).cpu()
    predictions = []
    for i, position in enumerate(positions):
        rows = recorder.query_rows(position).float().cpu()  # (n_layers, H, n)
        values, ids = torch.topk(probs[i], min(top, probs.shape[-1]))
        candidates = [Candidate(int(t), _token_text(model, int(t)), float(p)) for p, t in zip(values, ids)]
        predictions.append(MaskPrediction(position, candidates, probs[i], rows))
    return FillMask(encoded.text, encoded.tokens, encoded.token_ids, predictions)


def _token_text(model: Model, token_id: int) -> str:
    raw, text = model.raw_tokens([token_id])[0], model.decode([token_id])
    return text if text.strip() else raw


def no_masked_lm_message(model: Model) -> str:
    """Why ``model`` cannot fill masks, and which models can."""
    examples = join(MASKED_LM_EXAMPLES)
    if model.kind == "causal-lm":
        return _(
            "'{model}' is a causal language model: it predicts the next token from the left context only, "
            "not a masked word. Load a masked-LM model for fill-mask, e.g. {examples}."
        ).format(model=model.name, examples=examples)
    return _(
        "'{model}' has no masked-LM head (it is a sentence encoder: its outputs are embeddings, not word "
        "predictions), so it cannot fill in masked words. Load a masked-LM model instead, e.g. {examples} "
        "(downloaded from the Hugging Face hub when the server is online), or a local BertForMaskedLM folder."
    ).format(model=model.name, examples=examples)
