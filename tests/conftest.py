"""Shared fixtures: the real embedded models, loaded once per test session, and their eager references."""

from __future__ import annotations

import pytest
import torch
from streamlit.runtime.pages_manager import PagesManager

from explorer.ui.common import leave_legacy_pages_mode

import explorer
from explorer.capture.embedded import resolve_embedded

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
    (:func:`explorer.ui.common.leave_legacy_pages_mode`). Use with ``pytest.mark.usefixtures``."""
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        leave_legacy_pages_mode()

    monkeypatch.setattr(PagesManager, "__init__", init)
