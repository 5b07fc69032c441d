"""Step-by-step generation: one forward pass per token over a KV cache, with each new token's attention recorded.

    >>> stepper = Stepper(model, "The capital of France is", temperature=0.8, top_k=50, top_p=0.9, seed=0)
    >>> stepper.pending.stages      # the next token's distribution, stage by stage (nothing chosen yet)
    >>> stepper.step()              # sample it (or step(greedy=True), or choose(token_id))
    >>> stepper.back()              # undo: crops the cache by one token, no recomputation

A step feeds only the newest token; its keys and values for the earlier positions come from the cache, so a step
costs O(context) rather than a fresh forward over everything. The step runs through the recording attention
(:mod:`explorer.capture.recorder`), whose record holds the new token's query, the keys over the whole context and
the log-sum-exp; the attention row is rebuilt from them with :func:`explorer.capture.recorder.attention_probs`, the same
function that rebuilds a trace's maps, so it equals the last row of ``model.trace`` of the same context.

Sampling is :mod:`explorer.decoding.sampling`. A seeded stepper draws step ``i`` with ``uniform(seed, i)``, so a run repeats
exactly and stepping again after :meth:`Stepper.back` redraws the same token.
"""

from __future__ import annotations

import inspect
import os
import secrets
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Literal, Sequence

import torch

from ..errors import ExplorerError, check_layer_head
from ..i18n import N_, _
from ..capture.model import Model
from ..capture.tokens import Encoded
from ..capture.recorder import Recorder, recording
from .sampling import Knobs, Stage, draw, stages, uniform
from ..capture.tokens import CONTINUATION

How = Literal["sampled", "greedy", "picked"]
StopReason = Literal["eos", "max_new_tokens", "context"]
#: Why generation stopped, written once for the engine's errors and the app's status line (translated on use).
STOP_MESSAGES: dict[str, str] = {
    "eos": N_("The model ended the text (it chose its end-of-sequence token)."),
    "max_new_tokens": N_("This run has reached its limit of {max_new_tokens} new tokens."),
    "context": N_("The context is full ({max_context} tokens, the model's maximum)."),
}
DECODE_WINDOW = 6  # tokens of left context used to decode one new token's text (spaces, split characters)


@dataclass
class Step:
    """One generation step: the distribution over the next token, and (once chosen) the token.

    Attributes:
        index: 0 for the first generated token. ``context_length``: tokens the model saw (prompt + earlier steps).
        logits: (vocab,) float32 CPU, the raw next-token logits. ``knobs``: the sampling settings of this step.
        rows: (n_layers, n_heads, context_length) float32 CPU: the newest context token's attention, per head.
        token_id / token: the chosen token and its text as appended to the output (None until chosen).
        how: "sampled", "greedy" or "picked". ``u``: the uniform number a sampled token was drawn with.
        p_chosen: the token's probability in the final distribution (0 for a picked token the knobs cut);
        p_model: its probability under the model's own softmax. Both are set when the token is chosen.
    """

    index: int
    context_length: int
    logits: torch.Tensor
    knobs: Knobs
    rows: torch.Tensor
    token_id: int | None = None
    token: str | None = None
    how: How | None = None
    u: float | None = None
    p_chosen: float | None = None  # the chosen token's probability in the distribution it was drawn from
    p_model: float | None = None  # ... and under the model's own softmax (T = 1), before any knob

    @property
    def stages(self) -> list[Stage]:
        """The distribution after each stage: softmax, ÷T, top-k, top-p, final (see :mod:`explorer.decoding.sampling`)."""
        return stages(self.logits, self.knobs)

    @property
    def probs(self) -> torch.Tensor:
        """(vocab,) the final distribution the token is drawn from; sums to 1."""
        return self.stages[-1].probs

    @property
    def chosen(self) -> bool:
        return self.token_id is not None

    def attention(self, layer: int, head: int) -> torch.Tensor:
        """(context_length,): the newest context token's attention over the whole context. Sums to 1."""
        self._check(layer, head)
        return self.rows[layer, head]

    def attentions(self, layer: int) -> torch.Tensor:
        """(n_heads, context_length): :meth:`attention` for every head of ``layer``."""
        self._check(layer, 0)
        return self.rows[layer]

    def _check(self, layer: int, head: int) -> None:
        n_layers, n_heads = self.rows.shape[:2]
        check_layer_head(layer, n_layers, head, n_heads)


@dataclass
class Generation(Sequence[Step]):
    """The result of :func:`generate`: a sequence of chosen steps, plus the prompt and the text."""

    prompt: Encoded
    steps: list[Step]
    text: str
    stop_reason: StopReason
    seed: int

    def __getitem__(self, index):  # type: ignore[override]
        return self.steps[index]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    @property
    def token_ids(self) -> list[int]:
        """The generated token ids (without the prompt)."""
        return [s.token_id for s in self.steps]


class Stepper:
    """Generation one token at a time, with undo: ``step()``, ``choose(token_id)``, ``back()``, ``reset()``.

    Holds a per-user KV cache (keep one per session; the model itself is shared read-only). The pending step (the
    distribution over the next token) is computed when first asked for, so the last chosen token is fed only
    if generation goes on.

    Args:
        prompt: tokenised like :meth:`Model.trace` (``chat=True`` applies the chat template, for instruct models).
        temperature, top_k, top_p: see :class:`explorer.decoding.sampling.Knobs`; change them later with :meth:`set_knobs`.
        seed: makes sampling reproducible; None picks a random seed (kept in ``self.seed``).
        max_new_tokens: the most tokens this stepper generates. ``max_tokens``: cut the prompt to this many tokens.
        stop_at_eos: stop once the model's end-of-sequence token is chosen.
    """

    def __init__(
        self,
        model: Model,
        prompt: str,
        *,
        chat: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        max_new_tokens: int = 64,
        max_tokens: int | None = None,
        stop_at_eos: bool = True,
        on_progress: Callable[[float], None] | None = None,
    ):
        if not model.is_causal_lm:
            raise ExplorerError(not_causal_message(model))
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ExplorerError(
                _("max_new_tokens must be a whole number ≥ 1, not {value!r}.").format(value=max_new_tokens)
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ExplorerError(_("The seed must be a whole number ≥ 0, not {value!r}.").format(value=seed))
        self.model = model
        self.prompt = model.encode(prompt, chat=chat, max_tokens=max_tokens)
        self.chat = chat
        self.knobs = Knobs.of(temperature, top_k, top_p)
        self.seed = secrets.randbelow(2**31) if seed is None else seed
        self.max_new_tokens = max_new_tokens
        self.stop_at_eos = stop_at_eos
        self.eos_ids = set(model.eos_ids)
        self.max_context = model.max_positions
        self._supports_logits_to_keep = "logits_to_keep" in inspect.signature(model.hf.forward).parameters
        self.steps: list[Step] = []
        self._start(on_progress)

    # ---- facts for the page ---------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.model.n_layers

    @property
    def n_heads(self) -> int:
        return self.model.n_heads

    @property
    def generated_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]

    @property
    def context_ids(self) -> list[int]:
        """Prompt + generated token ids."""
        return self.prompt.token_ids + self.generated_ids

    @property
    def context_tokens(self) -> list[str]:
        """One readable string per context token: the prompt's tokens, then each generated token's text."""
        return self.prompt.tokens + [s.token for s in self.steps]

    @property
    def text(self) -> str:
        """The generated text (decoded as a whole, so characters split over tokens come out whole)."""
        return self.model.decode(self.generated_ids)

    @property
    def stop_reason(self) -> StopReason | None:
        """Why no further step can be taken, or None while generation can go on."""
        if self.steps and self.stop_at_eos and self.steps[-1].token_id in self.eos_ids:
            return "eos"
        if len(self.steps) >= self.max_new_tokens:
            return "max_new_tokens"
        if self.max_context is not None and len(self.context_ids) >= self.max_context:
            return "context"
        return None

    @property
    def stop_message(self) -> str | None:
        """:attr:`stop_reason` in words, in the reader's language (None while generation can go on)."""
        if self.stop_reason is None:
            return None
        return _(STOP_MESSAGES[self.stop_reason]).format(max_new_tokens=self.max_new_tokens,
                                                        max_context=self.max_context)

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def pending(self) -> Step | None:
        """The next step: its distribution and attention, nothing chosen yet (None when generation is done)."""
        if self.done:
            return None
        if self._pending is None:
            try:
                self._pending = self._forward([self.steps[-1].token_id], index=len(self.steps))
            except Exception:
                self._rebuild_cache(len(self.prompt.token_ids) + self._fed)  # drop any half-written layers
                raise
            self._fed += 1
        return self._pending

    # ---- the four actions -------------------------------------------------------------------------------------
    def set_knobs(self, temperature: float, top_k: int, top_p: float) -> None:
        """Change the sampling settings for the pending step and later ones (chosen steps keep theirs)."""
        self.knobs = Knobs.of(temperature, top_k, top_p)
        if self._pending is not None:
            self._pending.knobs = self.knobs

    def step(self, greedy: bool = False) -> Step:
        """Choose the next token: drawn from the pending distribution, or its arg-max when ``greedy`` or T = 0."""
        pending = self._require_pending()
        if greedy or pending.knobs.greedy:
            pending.knobs = replace(pending.knobs, temperature=0.0)
            return self._commit(pending, int(torch.argmax(pending.logits)), "greedy")
        u = uniform(self.seed, pending.index)
        probs = pending.probs
        pending.u = u
        return self._commit(pending, draw(probs, u), "sampled", probs)

    def choose(self, token_id: int) -> Step:
        """Append a token of the user's choice (any id in the vocabulary, even one the knobs cut)."""
        pending = self._require_pending()
        vocab = pending.logits.shape[-1]
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < vocab:
            raise ExplorerError(
                _("Token id {value!r} is not in the vocabulary (0–{last}).").format(value=token_id, last=vocab - 1)
            )
        return self._commit(pending, token_id, "picked")

    def back(self) -> Step | None:
        """Undo the last step (its distribution becomes the pending one again). Returns it, or None at the prompt."""
        if not self.steps:
            return None
        last = self.steps.pop()
        extra = self._fed - len(self.steps)  # 1 when the undone token had been fed, else 0
        if extra:
            self._crop(extra)
        self._fed = len(self.steps)
        self._pending = replace(
            last, token_id=None, token=None, how=None, u=None, p_chosen=None, p_model=None, knobs=self.knobs
        )
        return last

    def reset(self) -> None:
        """Back to the prompt alone, by undoing every step (no new forward pass; the seed and knobs are kept)."""
        while self.steps:
            self.back()

    def run(self, n: int) -> list[Step]:
        """Take up to ``n`` sampled steps (fewer when generation ends)."""
        taken = []
        for _step in range(n):
            if self.done:
                break
            taken.append(self.step())
        return taken

    def result(self) -> Generation:
        return Generation(self.prompt, list(self.steps), self.text, self.stop_reason or "max_new_tokens", self.seed)

    # ---- internals ----------------------------------------------------------------------------------------------
    def _start(self, on_progress: Callable[[float], None] | None = None) -> None:
        """The prefill: one forward over the prompt into a fresh cache, giving the first step's distribution.
        ``on_progress`` hears the fraction of layers done (a long prompt's prefill takes seconds)."""
        from transformers import DynamicCache

        self._cache = DynamicCache(config=self.model.hf.config)
        self._fed = 0
        self._pending = self._forward(self.prompt.token_ids, index=0, on_progress=on_progress)

    def _require_pending(self) -> Step:
        pending = self.pending
        if pending is None:
            raise ExplorerError(_("{reason} Go back a step or reset to continue.").format(reason=self.stop_message))
        return pending

    def _commit(self, pending: Step, token_id: int, how: How, probs: torch.Tensor | None = None) -> Step:
        pending.token_id = token_id
        pending.how = how
        pending.p_chosen = float((pending.probs if probs is None else probs)[token_id])
        pending.p_model = float(torch.softmax(pending.logits, -1)[token_id])
        pending.token = self._piece(token_id)
        self.steps.append(pending)
        self._pending = None
        return pending

    def _piece(self, token_id: int) -> str:
        """The text this token adds to the output, decoded with a little left context.

        Decoding a token alone loses leading spaces with some tokenizers and gives '�' for part of a character
        split over tokens; a token that completes such a character is shown as '…' + the character.
        """
        window = self.context_ids[-DECODE_WINDOW:]
        before, after = self.model.decode(window), self.model.decode(window + [token_id])
        common = len(os.path.commonprefix([before, after]))
        piece = after[common:]
        return CONTINUATION + piece if common < len(before) else piece

    def _forward(self, ids: list[int], index: int, on_progress: Callable[[float], None] | None = None) -> Step:
        """Feed ``ids`` through the model over the cache; return the step for the position after them."""
        model = self.model
        recorder = Recorder(keep_inputs=False,
                            on_record=(lambda done: on_progress(done / model.n_layers)) if on_progress else None)
        kwargs = {"logits_to_keep": 1} if self._supports_logits_to_keep else {}
        with torch.inference_mode(), recording(recorder):
            out = model.hf(
                input_ids=torch.tensor([ids], device=model.device), cache=self._cache, use_cache=True, **kwargs
            )
        recorder.check_complete(model.n_layers)
        context_length = len(self.prompt.token_ids) + index  # step i sees the prompt and i generated tokens
        rows = recorder.last_query_rows(context_length).float().cpu()
        logits = out.logits[0, -1].float().cpu()
        return Step(index=index, context_length=context_length, logits=logits, knobs=self.knobs, rows=rows)

    def _crop(self, tokens: int) -> None:
        expected = self._cache.get_seq_length() - tokens
        try:
            self._cache.crop(-tokens)
        except (RuntimeError, ValueError):
            pass
        if self._cache.get_seq_length() != expected:
            self._rebuild_cache(expected)

    def _rebuild_cache(self, length: int) -> None:
        """Re-run the first ``length`` context tokens into a fresh cache: for caches that cannot be cropped (full
        sliding windows), and after a failed step that may have written some layers and not others."""
        from transformers import DynamicCache

        self._cache = DynamicCache(config=self.model.hf.config)
        ids = torch.tensor([self.context_ids[:length]], device=self.model.device)
        kwargs = {"logits_to_keep": 1} if self._supports_logits_to_keep else {}
        with torch.inference_mode():
            self.model.hf(input_ids=ids, cache=self._cache, use_cache=True, **kwargs)


def generate(
    model: Model,
    prompt: str,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    chat: bool = False,
    max_tokens: int | None = None,
    stop_at_eos: bool = True,
) -> Generation:
    """Generate up to ``max_new_tokens`` tokens and return every step (see :class:`Stepper` for the arguments).

    ``temperature=0`` is greedy decoding and gives the same tokens as ``transformers``' ``generate(do_sample=False)``.
    """
    stepper = Stepper(
        model, prompt, chat=chat, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        max_new_tokens=max_new_tokens, max_tokens=max_tokens, stop_at_eos=stop_at_eos,
    )
    while not stepper.done:
        stepper.step()
    return stepper.result()


def prompt_limit(model: Model, max_new_tokens: int, max_tokens: int | None = None) -> int | None:
    """The most prompt tokens that leave room for ``max_new_tokens`` in the model's context (and at most
    ``max_tokens``): a prompt that fills the context could not be continued at all."""
    context = model.max_positions
    room = None if context is None else max(1, context - max_new_tokens)
    return room if max_tokens is None else max_tokens if room is None else min(max_tokens, room)


def not_causal_message(model: Model) -> str:
    if model.kind == "masked-lm":
        return _(
            "'{model}' is a masked language model: it fills in masked words rather than predicting the next "
            "token. Use it for fill-mask below, and a causal LM (smollm2, gpt2, Qwen/Qwen2.5-0.5B) to generate."
        ).format(model=model.name)
    return _(
        "'{model}' is an encoder without a language-model head: it can neither generate text nor fill in "
        "masked words. Choose smollm2 (or another causal LM, e.g. gpt2) to generate."
    ).format(model=model.name)
