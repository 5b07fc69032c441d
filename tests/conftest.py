"""Shared fixtures: the real embedded models, loaded once per test session, and their eager references."""

from __future__ import annotations

import pytest
import torch
from streamlit.runtime.pages_manager import PagesManager

from explorer.ui.state import leave_legacy_pages_mode

import explorer
from explorer.capture.embedded import resolve_embedded
from transformers import (AutoModel, AutoModelForCausalLM, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM)

from tiny_tokenizer import word_tokenizer

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def smollm2() -> explorer.Model:
    return explorer.load("smollm2", device="cpu")


@pytest.fixture(scope="session")
def minilm() -> explorer.Model:
    return explorer.load("minilm", device="cpu")


def _reference(name: str, attn: str):
    """The same weights through transformers' own attention (``eager`` or ``sdpa``): the independent reference."""
    from transformers import AutoModel, AutoModelForCausalLM

    folder = str(resolve_embedded(name))
    auto = AutoModelForCausalLM if name in ("smollm2", "gemma3") else AutoModel
    return auto.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn).eval()


@pytest.fixture(scope="session")
def smollm2_eager():
    return _reference("smollm2", "eager")


@pytest.fixture(scope="session")
def smollm2_sdpa():
    return _reference("smollm2", "sdpa")


@pytest.fixture(scope="session")
def minilm_eager():
    return _reference("minilm", "eager")


@pytest.fixture(scope="session")
def gemma3() -> explorer.Model:
    return explorer.load("gemma3", device="cpu")


@pytest.fixture(scope="session")
def gemma3_eager():
    return _reference("gemma3", "eager")


@pytest.fixture(scope="session")
def gemma3_sdpa():
    return _reference("gemma3", "sdpa")


# Tiny random configs: unit tests of the mechanism (masks, GQA, scaling), in seconds.
TINY_VOCAB = 128
TINY_CONFIGS = {
    "gpt2": (GPT2LMHeadModel, AutoModelForCausalLM, GPT2Config(vocab_size=TINY_VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4)),
    "bert": (BertModel, AutoModel, BertConfig(vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=64, max_position_embeddings=64)),
    "llama": (LlamaForCausalLM, AutoModelForCausalLM, LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64,
                                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                                  max_position_embeddings=64)),
}


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def tiny(request, tmp_path_factory):
    """Tiny random GPT-2, BERT and Llama (GQA) configs with a word tokenizer: (name, explorer.Model, its eager twin)."""
    cls, auto, config = TINY_CONFIGS[request.param]
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(request.param)
    model = cls(config).eval()
    model.config.architectures = [cls.__name__]
    model.save_pretrained(folder)
    word_tokenizer(folder, TINY_VOCAB)
    eager = auto.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    return request.param, explorer.load(str(folder), device="cpu"), eager


@pytest.fixture(scope="session")
def tiny_bert_mlm_dir(tmp_path_factory):
    """A tiny randomly initialised BertForMaskedLM (with MiniLM's WordPiece tokenizer), saved as safetensors."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("tiny_bert_mlm")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(config).eval().save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(resolve_embedded("minilm"))).save_pretrained(folder)
    return folder


@pytest.fixture
def navigation_like_a_server(monkeypatch):
    """AppTest builds a fresh PagesManager per run and, seeing a pages/ folder, falls back to legacy multipage mode,
    which runs a page file without app.py (the sidebar and its state vanish after switch_page). A real server
    leaves that mode for good once st.navigation has run; do the same here, with the app's own switch
    (:func:`explorer.ui.state.leave_legacy_pages_mode`). Use with ``pytest.mark.usefixtures``."""
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        leave_legacy_pages_mode()

    monkeypatch.setattr(PagesManager, "__init__", init)
