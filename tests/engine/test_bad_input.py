"""The bad-input catalogue: every hostile or odd input gives a valid trace or one clear ExplorerError, never a crash.

``test_engine_survives`` drives the engine (``explorer.load`` + ``model.encode`` + ``model.trace``) through texts
(empty, huge, every script, control characters, HTML/Markdown/LaTeX payloads, special-token strings) on both
embedded models, and through broken model sources (unknown ids, non-model folders, a pickle-only folder that must
not be unpickled, an architecture without the attention interface, a tokenizer that does not match its weights,
CUDA without a GPU). Any exception other than ExplorerError fails the test with its traceback.

``test_home_page_survives`` types each text into the real app's sidebar (AppTest, Home page): the text box keeps
exactly what was typed, nothing raises, the tokens shown are the engine's, and the user's text never lands in an
element that renders raw HTML.
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
from explorer.ui.settings import Settings
from explorer.capture.tokens import CONTINUATION, display_label
from explorer.escape import md_escape
from explorer.ui.home import STRIP_TOKENS

from apptest_helpers import APP
from bounds import attention_bound, f32_dot_bound
from tiny_tokenizer import word_tokenizer

CAP = 256  # the engine cases' token cap (kept small for speed): long texts must be cut to it
APP_CAP = Settings.from_env().max_tokens  # the app's cap (1024 by default), which the Home page applies

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
    assert_readable_tokens(trace.tokens, trace.token_ids, text, model.tokenizer)
    for layer in range(trace.n_layers):
        maps = trace.attentions(layer)
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
        assert trace.truncated_from == len(model.tokenizer(text)["input_ids"])  # the uncut length, as reported
    else:
        assert trace.truncated_from is None


def test_catalogue_long_texts_are_long():
    """The long inputs really are what their names say (so the cap cases above test the cap)."""
    assert len(TEXTS["50k-characters"]) == 50_000
    assert TEXTS["10k-tokens"].count(" word") == 10_000


# ---- the app ------------------------------------------------------------------------------------------------------
RAW_HTML = re.compile(r"<\s*(script|img|iframe|svg|object|embed)|on\w+\s*=|javascript:", re.IGNORECASE)


def _elements(node):
    children = getattr(node, "children", None)
    if children is None:
        yield node
        return
    for child in children.values():
        yield from _elements(child)


def assert_no_injection(at, text: str) -> None:
    """The user's text never reaches an element that renders raw HTML (markdown with unsafe_allow_html, st.html),
    and no such element carries an HTML/JS payload at all. Reusable for every page."""
    for element in _elements(at._tree):
        proto = getattr(element, "proto", None)
        unsafe = bool(getattr(proto, "allow_html", False)) or getattr(element, "type", "") == "html"
        if not unsafe:
            continue
        body = getattr(proto, "body", "")
        if len(text.strip()) >= 3:
            assert text not in body, f"user text inside an unsafe element: {body[:200]!r}"
        assert not RAW_HTML.search(body), f"raw HTML in an unsafe element: {body[:200]!r}"


@pytest.mark.usefixtures("navigation_like_a_server")
@pytest.mark.parametrize("tid", list(TEXTS))
def test_home_page_survives(tid: str, smollm2):
    from streamlit.testing.v1 import AppTest

    text = TEXTS[tid]
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.text_area(key="text").set_value(text).run()

    assert not at.exception, [e.value for e in at.exception]
    assert at.text_area(key="text").value == text  # the box keeps exactly what the user typed
    assert_no_injection(at, text)
    if tid in TEXT_ERRORS:
        assert any(re.search(TEXT_ERRORS[tid], e.value, re.IGNORECASE) for e in at.error), [e.value for e in at.error]
        return
    assert not at.error, [e.value for e in at.error]
    expected = smollm2.encode(text, max_tokens=APP_CAP)
    # Home's token strip: the model's own tokens, each one escaped chip, and how many there are.
    chips = " ".join(f":gray-background[{md_escape(display_label(t))}]" for t in expected.tokens[:STRIP_TOKENS])
    assert any(m.value == chips for m in at.markdown)
    n = len(expected.token_ids)
    assert any(c.value.startswith(f"{n} token") for c in at.caption), [c.value for c in at.caption]
    if tid in LONG:
        assert n == APP_CAP
        assert any(f"{n - STRIP_TOKENS} more tokens" in c.value for c in at.caption)
        assert any(f"{expected.truncated_from:,} tokens" in i.value for i in at.info)


def test_injection_check_catches_raw_html():
    """The checker above is not vacuous: it flags a page that echoes the text into unsafe markdown or st.html."""
    from streamlit.testing.v1 import AppTest

    def leaky_page():
        import streamlit as st

        st.markdown("safe words")
        st.markdown(f"<b>{st.session_state['text']}</b>", unsafe_allow_html=True)

    def leaky_html():
        import streamlit as st

        st.html(f"<div>{st.session_state['text']}</div>")

    for script in (leaky_page, leaky_html):
        at = AppTest.from_function(script)
        at.session_state["text"] = TEXTS["img-onerror"]
        at.run()
        assert not at.exception
        with pytest.raises(AssertionError, match="unsafe element"):
            assert_no_injection(at, TEXTS["img-onerror"])
