"""The bad-input catalogue: every hostile or odd input gives a valid trace or one clear ExplorerError, never a crash.

``test_engine_survives`` drives the engine (``explorer.load`` + ``model.encode`` + ``model.trace``) through texts
(empty, huge, every script, control characters, HTML/Markdown/LaTeX payloads, special-token strings) on both
embedded models, and through broken model sources (unknown ids, non-model folders, a pickle-only folder that must
not be unpickled, an architecture without the attention interface, a tokenizer that does not match its weights,
CUDA without a GPU). Any exception other than ExplorerError fails the test with its traceback.

The texts are in ``tests/texts.py``; tests/app/test_bad_input_pages.py types them into every page.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

import explorer
from explorer import ExplorerError, InstrumentationError
from explorer.capture.embedded import resolve_embedded
from explorer.capture.tokens import CONTINUATION, display_label

from bounds import attention_bound, f32_dot_bound
from texts import LONG, TEXT_ERRORS, TEXTS
from tiny_tokenizer import word_tokenizer

CAP = 256  # the engine cases' token cap (kept small for speed): long texts must be cut to it

# ---- checks ------------------------------------------------------------------------------------------------------
def assert_clear_message(exc: ExplorerError, pattern: str) -> None:
    """A message written for a user: matches the case's pattern, one short paragraph, no traceback."""
    message = str(exc)
    assert re.search(pattern, message, re.IGNORECASE), f"{message!r} does not say {pattern!r}"
    assert 10 < len(message) < 1200 and "Traceback" not in message and 'File "' not in message


def assert_readable_tokens(tokens: list[str], ids: list[int], text: str, tokenizer) -> None:
    """One non-empty label per id; each either a special token's own name or a piece of the user's text."""
    assert len(tokens) == len(ids)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token, tid in zip(tokens, ids):
        assert isinstance(token, str) and token != ""
        if tid in special:
            assert token == tokenizer.convert_ids_to_tokens(tid)
        else:
            piece = token.removeprefix(CONTINUATION)
            assert piece != "" and piece in text, f"token {token!r} (id {tid}) is not a piece of the text"
        label = display_label(token)
        assert label and all(ch.isprintable() for ch in label), repr(label)


def assert_valid_trace(trace: explorer.Trace, model: explorer.Model, text: str) -> None:
    assert trace.n_tokens == len(trace.tokens) == len(trace.token_ids) >= 1
    assert_readable_tokens(trace.tokens, trace.token_ids, text, model.tokenizer._hf)  # the raw one: the reference
    for layer in range(trace.n_layers):
        maps = trace.attention(layer)
        error = (maps.sum(-1) - 1).abs().max().item()
        # each p carries the map's relative rounding, and a row sum adds n more (see bounds)
        bound = attention_bound(trace, layer) + f32_dot_bound(trace.n_tokens, 1.0)
        assert error <= bound, f"layer {layer}: rows do not sum to 1 (off by {error}; NaN fails too)"
        if trace.mask == "causal" and layer == 0:
            assert (maps.triu(1) == 0).all()
    assert all(torch.isfinite(h).all() for h in trace.hidden_states)


# ---- cases -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One input. ``run`` returns ``(model, text, trace)`` or raises; ``error`` is the pattern a refusal must match
    (None: a valid trace is expected); ``cut_to`` the token count a long input must be cut to."""

    id: str
    run: Callable[[pytest.FixtureRequest, Path], tuple[explorer.Model, str, explorer.Trace]]
    error: str | None = None
    error_type: type[ExplorerError] = ExplorerError
    cut_to: Callable[[explorer.Model], int] | None = None


def _text_run(model_name: str, text: str, max_tokens: int | None = CAP, **kwargs):
    def run(request, tmp_path):
        model = request.getfixturevalue(model_name)
        try:
            encoded = model.encode(text, max_tokens=max_tokens)
        except ExplorerError as refused:
            with pytest.raises(ExplorerError) as again:  # trace refuses with the same words
                model.trace(text, max_tokens=max_tokens, **kwargs)
            assert str(again.value) == str(refused)
            raise
        trace = model.trace(text, max_tokens=max_tokens, **kwargs)
        assert trace.token_ids == encoded.token_ids and trace.tokens == encoded.tokens
        assert trace.truncated_from == encoded.truncated_from
        return model, text, trace

    return run


def _context_cap(model: explorer.Model) -> int:
    return min(CAP, model.max_positions or CAP)


def _tiny_gpt2(folder: Path, tokenizer: str) -> Path:
    """A random 2-layer GPT-2 with 64 learned positions and a 100-token vocabulary, in safetensors."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    model.config.architectures = ["GPT2LMHeadModel"]
    model.save_pretrained(folder)
    if tokenizer == "matching":
        word_tokenizer(folder, 100)
    else:  # MiniLM's 30k-word tokenizer: ids far past the 100 embeddings
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(resolve_embedded("minilm"))).save_pretrained(folder)
    return folder


def _load_and_trace(source: Callable[[Path], str], text: str = "The cat sat on the mat.", **load_kwargs):
    def run(request, tmp_path):
        model = explorer.load(source(tmp_path), **{"device": "cpu", **load_kwargs})
        return model, text, model.trace(text, max_tokens=CAP)

    return run


def _pickle_only_folder(tmp_path: Path) -> str:
    """A GPT-2 config next to a pytorch_model.bin whose unpickling would create a marker file."""
    from transformers import GPT2Config

    GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4).save_pretrained(tmp_path)

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "UNPICKLED"), "w"))

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"transformer.wte.weight": Payload()}))
    return str(tmp_path)


def _pickle_refused(request, tmp_path):
    try:
        return _load_and_trace(_pickle_only_folder)(request, tmp_path)
    finally:
        assert not (tmp_path / "UNPICKLED").exists(), "the pickle was loaded: it could have run any code"


def _gpt_neo_folder(tmp_path: Path) -> str:
    """A tiny random GPT-Neo: transformers 5.24 picks its attention class from a fixed dict, so there is no hook."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
                          attention_types=[[["global", "local"], 1]], bos_token_id=0, eos_token_id=0)
    GPTNeoForCausalLM(config).save_pretrained(tmp_path)
    word_tokenizer(tmp_path, 100)
    return str(tmp_path)


def _non_model_folder(tmp_path: Path) -> str:
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "data.json").write_text(json.dumps({"hello": "world"}))
    return str(tmp_path)


def _cuda_case() -> Case:
    run = _load_and_trace(lambda _: "minilm", device="cuda")
    if explorer.cuda_available():  # on a GPU machine CUDA is a valid choice: it must trace
        return Case("cuda-device", run)
    return Case("cuda-without-gpu", run, error=r"no CUDA GPU.*CPU")


CASES: list[Case] = [
    *(
        Case(f"{model}-{tid}", _text_run(model, text), error=TEXT_ERRORS.get(tid),
             cut_to=_context_cap if tid in LONG else None)
        for model in ("smollm2", "minilm")
        for tid, text in TEXTS.items()
    ),
    Case("smollm2-lone-surrogate", _text_run("smollm2", "half a pair: \ud83d here"), error=r"invalid character.*U\+D83D"),
    Case("smollm2-not-a-string", _text_run("smollm2", None), error="must be a string"),
    Case("smollm2-unknown-mask", _text_run("smollm2", "The cat.", mask="diagonal"), error=r"Unknown mask 'diagonal'"),
    Case("minilm-past-its-context", _text_run("minilm", TEXTS["10k-tokens"], max_tokens=None),
         cut_to=lambda model: 512),
    Case("minilm-causal-what-if", _text_run("minilm", "The cat sat.", mask="causal")),
    Case("unknown-model-id", _load_and_trace(lambda _: "no-such-org/no-such-model-xyz", allow_hub=False),
         error=r"'no-such-org/no-such-model-xyz' is not in the local Hugging Face cache"),
    Case("model-name-with-spaces", _load_and_trace(lambda _: "a model name"), error="is not a model name"),
    Case("model-name-url", _load_and_trace(lambda _: "https://example.com/model"), error="is not a model name"),
    Case("model-name-too-long", _load_and_trace(lambda _: "x" * 5000), error="is not a model name"),
    Case("model-name-with-nul", _load_and_trace(lambda _: "smol\x00lm2"), error="is not a model name"),
    Case("model-not-a-string", _load_and_trace(lambda _: 42), error="by name or path, not by a int"),
    Case("model-as-path-object", _load_and_trace(lambda p: Path(_non_model_folder(p))), error="not a model folder"),
    Case("missing-folder", _load_and_trace(lambda p: str(p / "nowhere")), error="no file or folder"),
    Case("non-model-folder", _load_and_trace(_non_model_folder), error=r"not a model folder.*config\.json"),
    Case("pickle-only-folder", _pickle_refused, error=r"no \.safetensors weights.*never pickled"),
    Case("local-folders-disabled", _load_and_trace(_non_model_folder, allow_local_paths=False),
         error="local folders is disabled"),
    Case("no-attention-interface", _load_and_trace(_gpt_neo_folder), error=r"gpt_neo.*attention interface",
         error_type=InstrumentationError),
    Case("tokenizer-not-matching-weights", _load_and_trace(lambda p: str(_tiny_gpt2(p, "minilm"))),
         error=r"token id \d+, but the model has only 100 embeddings"),
    Case("past-learned-positions", _load_and_trace(lambda p: str(_tiny_gpt2(p, "matching")), text="w5 w17 " * 100),
         cut_to=lambda model: 64),
    Case("unknown-device", _load_and_trace(lambda _: "minilm", device="tpu"), error=r"Unknown device 'tpu'"),
    _cuda_case(),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_engine_survives(case: Case, request, tmp_path):
    try:
        model, text, trace = case.run(request, tmp_path)
    except ExplorerError as exc:  # anything else propagates and fails the test
        assert case.error is not None, f"refused a valid input: {exc}"
        assert isinstance(exc, case.error_type)
        assert_clear_message(exc, case.error)
        return
    assert case.error is None, f"expected a refusal matching {case.error!r}, got a trace"
    assert_valid_trace(trace, model, text)
    if case.cut_to is not None:
        assert trace.n_tokens == case.cut_to(model)
        assert trace.truncated_from == len(model.tokenizer._hf(text)["input_ids"])  # the uncut length, as reported
    else:
        assert trace.truncated_from is None


def test_catalogue_long_texts_are_long():
    """The long inputs really are what their names say (so the cap cases above test the cap)."""
    assert len(TEXTS["50k-characters"]) == 50_000
    assert TEXTS["10k-tokens"].count(" word") == 10_000
