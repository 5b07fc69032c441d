"""The model wrapper: one loaded ``transformers`` model + tokenizer, traced through the recording attention."""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from ..i18n import _
from ..errors import ExplorerError, InstrumentationError
from .intervention import Ablation, Head, PatchResult, ablation_intervention, check_ablation, intervening, patch_heads
from .masks import MaskOverride, check_mask
from .recorder import AttentionRecord, Recorder, capture_input_hook, recording
from .tokens import Encoded, Tokenizer
from .trace import Trace

ModelKind = Literal["causal-lm", "masked-lm", "encoder"]


@dataclass
class Model:
    """A loaded model, ready to trace. Build it with :func:`explorer.load`, which hands it finished parts.

    The underlying ``transformers`` model is ``hf``; it is shared read-only between threads. Only the
    tokenizer needs a lock (HF fast tokenizers raise "Already borrowed" when used from two threads at once): it is
    behind :class:`~explorer.capture.tokens.Tokenizer`, which takes it on every call. Use the methods below
    (``encode``, ``decode``, ``token_ids``, …) rather than ``tokenizer`` itself.

    Verbs: what ``capture/`` does with the model is a method (``model.trace``, ``model.patch_heads``); what is
    built above it is a function taking the model (``explorer.head_stats(model, …)``, ``explorer.generate(model,
    …)``), since a lower group never imports a higher one.
    """

    name: str
    hf: torch.nn.Module
    tokenizer: Tokenizer
    device: torch.device
    kind: ModelKind
    attention_modules: tuple[torch.nn.Module, ...]  # in the order the forward pass calls them (find_attention)
    # Per layer, the module that turns the hidden state into the attention input x (its input norm, or Identity),
    # or None where none was found: a trace then keeps that layer's x instead of rebuilding it (input_rebuilders).
    input_rebuilders: tuple[torch.nn.Module | None, ...]

    # ---- facts -------------------------------------------------------------------------------------------
    @property
    def config(self):
        return self.hf.config

    @property
    def dtype(self) -> torch.dtype:
        """The type the weights were loaded in (``explorer.load``'s ``dtype``), which activations run in too."""
        return next(self.hf.parameters()).dtype

    @property
    def fingerprint(self) -> str:
        """What tells this model's numbers from another's: its name (hub id or folder), device and dtype. Caches of
        what a model computes (the app's ``st.cache_data``, its ablated traces) are keyed by it."""
        return repr((self.name, str(self.device), str(self.dtype)))

    @property
    def n_layers(self) -> int:
        return len(self.attention_modules)

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)

    @property
    def head_dim(self) -> int:
        """D, the size of one head's query/key/value vectors (Gemma 3's is not d_model / H, so the config's wins)."""
        return int(getattr(self.config, "head_dim", None) or self.config.hidden_size // self.n_heads)

    @property
    def default_mask(self) -> str:
        """The mask the model was trained with (what ``mask=None`` runs)."""
        causal = getattr(self.attention_modules[0], "is_causal", self.kind == "causal-lm")
        return "causal" if causal else "bidirectional"

    @property
    def is_causal_lm(self) -> bool:
        return self.kind == "causal-lm"

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def max_positions(self) -> int | None:
        """The longest input the model takes (its context length), when its config says; longer texts are cut.

        Models with learned absolute positions (BERT, GPT-2) fail with a shape error past it.
        """
        return self.tokenizer.context_length

    # ---- tokenising: the tokenizer's own calls are Tokenizer's (capture/tokens.py), each under its lock ---------
    def encode(self, text: str, chat: bool = False, max_tokens: int | None = None) -> Encoded:
        """Tokenise like the model's own tokenizer with its defaults (special tokens included, no padding).

        ``chat=True`` wraps the text as one user turn with the tokenizer's chat template, ready for the
        assistant's reply (for instruct models). ``max_tokens`` keeps the first that many tokens (the library's only
        cap of its own is the model's context length, :attr:`max_positions`; the app sets a lower one) and records
        the original length in ``truncated_from``.
        """
        return self.tokenizer.encode(text, chat=chat, max_tokens=max_tokens)

    def encode_ids(self, token_ids: Sequence[int], max_tokens: int | None = None) -> Encoded:
        """Token ids to trace as they are (no special tokens added), with one readable string per id.

        The text is the tokenizer's decoding of the ids; when encoding that text gives the same ids back (the usual
        case), each token is labelled by the part of the text it covers, as :meth:`encode` does.
        """
        if isinstance(token_ids, (str, bytes)) or not isinstance(token_ids, Sequence) or len(token_ids) == 0:
            raise ExplorerError(_("Give the token ids as a non-empty list of integers."))
        rows = self.hf.get_input_embeddings().num_embeddings
        ids = [_token_id(i, rows, self.name) for i in token_ids]
        return self.tokenizer.describe_ids(ids, max_tokens=max_tokens)

    def encode_input(self, text_or_ids: str | Sequence[int], chat: bool = False,
                     max_tokens: int | None = None) -> Encoded:
        """:meth:`encode` for a text, :meth:`encode_ids` for a list of token ids."""
        if isinstance(text_or_ids, (str, bytes)) or not isinstance(text_or_ids, Sequence):
            return self.encode(text_or_ids, chat=chat, max_tokens=max_tokens)  # refuses what is not a text
        if chat:
            raise ExplorerError(_("The chat template applies to a text; token ids are traced as they are."))
        return self.encode_ids(text_or_ids, max_tokens=max_tokens)

    def single_token_id(self, text: str, what: str | None = None) -> int:
        """The id of ``text`` when the tokenizer makes exactly one token of it (no special tokens added).

        ``what`` names the text in the error, already translated (default: "The text")."""
        return self.tokenizer.single_token_id(text, what)

    def decode_token(self, token_id: int) -> str:
        """One token's text, as it would appear appended to the output."""
        return self.decode([int(token_id)])

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids``, decoded as a whole (characters split over tokens come out whole)."""
        return self.tokenizer.decode(token_ids)

    def raw_tokens(self, token_ids: Sequence[int]) -> list[str]:
        """The tokenizer's own strings for ``token_ids`` (``'Ġthe'``, ``'##ing'``), not the readable labels."""
        return self.tokenizer.raw_tokens(token_ids)

    def token_ids(self, text: str, special: bool = True) -> list[int]:
        """The ids the tokenizer makes of ``text``, with its special tokens (``special=True``) or without."""
        return self.tokenizer.token_ids(text, special=special)

    @property
    def eos_ids(self) -> frozenset[int]:
        """The ids that end a generation: the generation config's EOS ids and the tokenizer's."""
        config = getattr(self.hf, "generation_config", None)
        source = getattr(config, "eos_token_id", None)
        ids = [source] if isinstance(source, int) else source if isinstance(source, (list, tuple)) else []
        return frozenset({int(i) for i in ids} | self.tokenizer.eos_ids)

    @property
    def special_ids(self) -> frozenset[int]:
        """Every id the tokenizer treats as special ([CLS], <s>, <pad>, …)."""
        return self.tokenizer.special_ids

    @property
    def mask_token(self) -> tuple[str, int] | None:
        """(text, id) of the tokenizer's mask token (masked LMs: "[MASK]", "<mask>"), or None when it has none."""
        tok = self.tokenizer
        return None if tok.mask_token is None or tok.mask_id is None else (tok.mask_token, tok.mask_id)

    # ---- tracing -----------------------------------------------------------------------------------------
    def trace(
        self,
        text: str | Sequence[int],
        mask: MaskOverride | str | None = None,
        chat: bool = False,
        keep_inputs: bool = True,
        max_tokens: int | None = None,
        ablate: Sequence[Head] = (),
        ablation: Ablation = "zero",
        on_progress: Callable[[float], None] | None = None,
    ) -> Trace:
        """Run ``text`` through the model and record its attention.

        Args:
            text: a text, or a list of token ids traced as they are (no special tokens added).
            mask: ``None`` runs the model's own mask; ``"causal"`` / ``"bidirectional"`` override it, which
                changes the computation (a what-if when the model was trained with the other one).
            chat: apply the tokenizer's chat template (off by default).
            keep_inputs: also keep each attention layer's input x (needed for the Q/K/V walk-through).
            max_tokens: cut the text to this many tokens; ``trace.truncated_from`` then says how many it had.
            ablate: (layer, head) query heads to switch off, at the input of the output projection W_o; the trace's
                maps, hidden states and logits are then those of the ablated run (see :mod:`explorer.capture.intervention`).
            ablation: ``"zero"`` sets each head's output to 0 at every position; ``"mean"`` to its mean over the
                text's positions in an un-ablated run.
            on_progress: hears the fraction of layers done, after each layer of the forward pass.
        """
        check_mask(mask)  # before tokenising: a typo is the first thing to hear about
        encoded = self.encode_input(text, chat=chat, max_tokens=max_tokens)
        return self.trace_ids(encoded, mask=mask, keep_inputs=keep_inputs, ablate=ablate, ablation=ablation,
                              on_progress=on_progress)

    def trace_ids(self, encoded: Encoded, mask: MaskOverride = None, keep_inputs: bool = True,
                  ablate: Sequence[Head] = (), ablation: Ablation = "zero",
                  on_progress: Callable[[float], None] | None = None) -> Trace:
        """:meth:`trace` of an already encoded text (``Model.encode*``)."""
        mask = check_mask(mask)  # every trace comes through here (head_stats' probe too)
        rows = self.hf.get_input_embeddings().num_embeddings
        if max(encoded.token_ids) >= rows:  # a folder whose tokenizer does not belong to its weights
            raise ExplorerError(
                _("The tokenizer of '{model}' produced token id {token_id}, but the model has only "
                  "{rows} embeddings: its tokenizer files do not match its weights.").format(
                    model=self.name, token_id=max(encoded.token_ids), rows=rows)
            )
        heads = check_ablation(self, ablate, ablation)
        ids = torch.tensor([encoded.token_ids], device=self.device)
        intervention = ablation_intervention(self, ids, heads, ablation, mask) if heads else None
        rebuilt = frozenset(id(m) for m, f in zip(self.attention_modules, self.input_rebuilders) if f is not None)
        recorder = Recorder(mask_override=mask, keep_inputs=keep_inputs, rebuilt_inputs=rebuilt,
                            on_record=(lambda done: on_progress(done / self.n_layers)) if on_progress else None)
        with torch.inference_mode(), recording(recorder), intervening(intervention):
            out = self.base(input_ids=ids, output_hidden_states=True, use_cache=False)
        recorder.check_complete(self.n_layers)
        records = recorder.records
        kinds = {r.mask_kind for r in records}
        ran = "custom" if "custom" in kinds else "sliding" if "sliding" in kinds else records[-1].mask_kind
        return Trace(
            text=encoded.text,
            tokens=encoded.tokens,
            token_ids=encoded.token_ids,
            records=records,
            mask=ran,
            mask_is_model_default=all(r.mask_is_model_default for r in records),  # what ran, not the names
            truncated_from=encoded.truncated_from,
            offsets=encoded.offsets,
            model_name=self.name,
            hidden_states=tuple(h[0] for h in out.hidden_states),
            final_hidden=out.last_hidden_state[0],
            _unembed=weakref.WeakMethod(self.unembed) if self.is_causal_lm else None,
            _model=weakref.ref(self),
            ablated=heads,
            ablation=ablation if heads else None,
            _x_rebuild=tuple(self.input_rebuilders) if keep_inputs else (),
        )

    # ---- pieces of the model used by the pages -------------------------------------------------------------
    @property
    def base(self) -> torch.nn.Module:
        """The transformer without its LM head (so a trace need not hold n × vocab logits)."""
        return self.hf.base_model

    def unembed(self, hidden: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Final hidden states (…, d_model) → next-token logits (…, vocab), as the LM head computes them.

        ``grad=True`` keeps the autograd graph (attribution patching differentiates the logits).
        """
        head = self.hf.get_output_embeddings()
        with torch.inference_mode(not grad):
            logits = head(hidden.to(self.device))
            cap = getattr(self.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
        return logits

    def final_norm(self) -> torch.nn.Module | None:
        """The norm applied before the unembedding (for the logit lens), when the architecture has one."""
        for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
            module = getattr(self.base, name, None)
            if isinstance(module, torch.nn.Module):
                return module
        return None

    def patch_heads(self, clean: str | Sequence[int], corrupt: str | Sequence[int], answer: str, wrong: str,
                    method: str = "exact", heads: Sequence[Head] | None = None) -> PatchResult:
        """Each head's share of the change from ``clean`` to ``corrupt``, as a :class:`PatchResult` (an (L, H)
        tensor of effects, the two logit differences, ``.to_frame()``): see
        :func:`explorer.capture.intervention.patch_heads`."""
        return patch_heads(self, clean, corrupt, answer, wrong, method=method, heads=heads)


def _token_id(value: object, rows: int, model_name: str) -> int:
    """``value`` as a token id of a model with ``rows`` embeddings, or a clear error."""
    if not isinstance(value, bool):  # True is an int to Python, but never a token id
        try:
            token_id = operator.index(value)  # int, numpy and 0-d torch integers
        except TypeError:
            token_id = -1
        if 0 <= token_id < rows:
            return token_id
    raise ExplorerError(_("Token id {value!r} is not a token of '{model}': ids are integers 0–{last}.").format(
        value=value, model=model_name, last=rows - 1))


def find_attention(hf: torch.nn.Module, name: str,
                   device: torch.device) -> tuple[tuple[torch.nn.Module, ...], tuple[torch.nn.Module | None, ...]]:
    """Run three tokens through ``hf`` once and note which modules call the attention interface, in order: the
    attention modules, and per layer the module that rebuilds its input x from the hidden state
    (:func:`input_rebuilders`). The loader hands both to :class:`Model`.

    This is how we know a model is instrumentable, and where to hook to capture each layer's input x (the hooks are
    registered here). One forward at load, not two: the pass first touches every weight, and it is most of a warm
    load's time.
    """
    ids = torch.tensor([[0, 1, 2]], device=device)
    recorder = Recorder(keep_inputs=True)
    # Until the attention modules are known, every module notes its input, for this pass only.
    probes = [m.register_forward_pre_hook(capture_input_hook, with_kwargs=True) for m in hf.modules()]
    try:
        with torch.inference_mode(), recording(recorder):
            hidden = hf.base_model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    finally:
        for probe in probes:
            probe.remove()
    if not recorder.modules:
        raise InstrumentationError(
            _("The model '{model}' does not route attention through transformers' attention interface, so "
              "Attention Explorer cannot see its attention. Try a Llama, Qwen, Mistral, GPT-2 or BERT model.")
            .format(model=name)
        )
    for module in recorder.modules:
        module.register_forward_pre_hook(capture_input_hook, with_kwargs=True)
    modules = tuple(recorder.modules)
    return modules, tuple(input_rebuilders(hf, modules, recorder.records, hidden))


def input_rebuilders(
    hf: torch.nn.Module, modules: Sequence[torch.nn.Module], records: Sequence[AttentionRecord],
    hidden: Sequence[torch.Tensor],
) -> list[torch.nn.Module | None]:
    """Per layer, the module that maps the layer's hidden state to its attention input x, or None.

    x is the layer's input norm of the hidden state (Llama, Gemma: ``input_layernorm``; GPT-2: ``ln_1``) or the
    hidden state itself (BERT), so a trace that keeps the hidden states need not keep x as well: 0.6 GiB of
    SmolLM2 at 8,192 tokens. Found by trying, on a short text's ``records`` (with x kept) and ``hidden`` states, the
    identity and each norm beside the attention ``modules``, and keeping the one that reproduces the recorded x
    exactly; any layer without one keeps its x.
    """
    parents = {id(child): parent for parent in hf.modules() for child in parent.children()}
    found: list[torch.nn.Module | None] = []
    for layer, (module, record) in enumerate(zip(modules, records)):
        candidates: list[torch.nn.Module] = [torch.nn.Identity()]
        ancestor = parents.get(id(module))
        for _step in range(2):  # the decoder layer is the parent (Llama) or the grandparent (BERT's self-attention)
            if ancestor is None:
                break
            candidates += [m for m in ancestor.children() if "norm" in type(m).__name__.lower()]
            ancestor = parents.get(id(ancestor))
        match = None
        if record.x is not None and layer < len(hidden):
            with torch.inference_mode():
                match = next((m for m in candidates if _same(m(hidden[layer][0]), record.x)), None)
        found.append(match)
    return found


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
