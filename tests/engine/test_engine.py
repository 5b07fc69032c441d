"""Loading, the conversion cache, readable tokens and the public contract of the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import explorer
from explorer.capture import embedded
from explorer.capture.tokens import CONTINUATION, display_label, unique_labels


def test_contract_on_real_model(smollm2):
    trace = smollm2.trace("The cat sat on the mat.", mask="causal")
    assert trace.tokens == ["The", " cat", " sat", " on", " the", " mat", "."]
    assert trace.token_ids == smollm2.tokenizer._hf("The cat sat on the mat.")["input_ids"]  # the raw tokenizer
    assert (trace.n_layers, trace.n_heads, trace.head_dim) == (30, 9, 64)
    a = trace.attention(2, 1)
    assert a.dtype == torch.float32 and a.device.type == "cpu" and a.shape == (7, 7)
    assert trace.q(2, 1).shape == trace.k(2, 1).shape == trace.v(2, 1).shape == (7, 64)
    assert trace.logits.shape == (7, 49152)
    assert trace.mask == "causal"


def test_chinese_tokens_are_characters_not_mojibake(smollm2, minilm):
    text = "大规模语言模型"
    trace = smollm2.trace(text)
    assert len(trace.tokens) == len(trace.token_ids) > len(text)  # byte-level BPE splits characters
    assert "".join(t for t in trace.tokens if not t.startswith(CONTINUATION)) == text
    assert not any(ch in "".join(trace.tokens) for ch in "åæèÃ\ufffd")
    bert_trace = minilm.trace(text)
    assert bert_trace.tokens[0] == "[CLS]" and bert_trace.tokens[-1] == "[SEP]"
    assert "大" in bert_trace.tokens[1]


def test_labels_are_visible_and_unique():
    assert display_label("\n") == "\u21b5" and display_label(" ") == "\u2423"
    assert display_label("a\x00b") == "a\u2400b"
    labels = unique_labels(["the", "the", " "])
    assert len(set(labels)) == 3


def test_greedy_prediction_is_real(smollm2):
    trace = smollm2.trace("The capital of France is")
    assert smollm2.decode_token(int(trace.logits[-1].argmax())) == " Paris"


def test_interrupted_conversion_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))
    fake = tmp_path / "src" / "tiny.gguf"
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF")

    def half_written(src: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-conversion

    monkeypatch.setattr(embedded, "_convert_gguf", half_written)
    with pytest.raises(KeyboardInterrupt):
        embedded.converted_gguf_dir(fake)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "src"]
    assert leftovers == []

    def complete(src: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(embedded, "_convert_gguf", complete)
    target = embedded.converted_gguf_dir(fake)
    assert (target / "complete.json").exists() and (target / "model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "No model given"),
        ("no/such-model-xyz", "not in the local Hugging Face cache"),
        ("/definitely/not/here", "no file or folder"),
        ("../../etc/passwd; rm -rf", "no file or folder"),
        ("<script>alert(1)</script>", "not a model name"),
    ],
)
def test_bad_model_names_raise_one_clear_error(name, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(explorer.ExplorerError, match=message):
        explorer.load(name, device="cpu", allow_hub=False)


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(explorer.ExplorerError, match="no CUDA GPU"):
        explorer.resolve_device("cuda")
    assert explorer.resolve_device("auto").type == "cpu"


def test_out_of_range_layer_and_head(smollm2):
    trace = smollm2.trace("Hello world")
    with pytest.raises(explorer.ExplorerError, match="Layer 30"):
        trace.attention(30, 0)
    with pytest.raises(explorer.ExplorerError, match="Head 9"):
        trace.attention(0, 9)


# ---- knowledge in one place (issue 12) ------------------------------------------------------------------------------
def test_repeat_kv_matches_transformers():
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    from explorer.capture.gqa import kv_for_heads, repeat_kv

    kv = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0))  # (B, H_kv, T, D)
    for groups in (1, 3):
        assert torch.equal(repeat_kv(kv, groups), hf_repeat_kv(kv, groups))  # a copy: exact
    assert torch.equal(repeat_kv(kv[0], 3), hf_repeat_kv(kv, 3)[0])  # unbatched (H_kv, T, D): same heads axis
    for groups, heads in ((3, slice(0, 9)), (3, slice(2, 7)), (3, slice(4, 5)), (1, slice(1, 3))):
        # a range of query heads: the same heads as transformers' whole repeat, only the groups they fall in
        h_kv = 9 // groups if groups > 1 else 3
        kv = torch.randn(h_kv, 5, 4, generator=torch.Generator().manual_seed(groups))
        assert torch.equal(kv_for_heads(kv, groups, heads), hf_repeat_kv(kv[None], groups)[0, heads])


def test_head_dim_is_the_attention_modules_own(smollm2, minilm):
    assert smollm2.head_dim == smollm2.attention_modules[0].head_dim == 64
    assert minilm.head_dim == minilm.attention_modules[0].attention_head_size == 32


def test_tokenizer_calls_on_the_model_match_the_tokenizer(smollm2, minilm):
    for model in (smollm2, minilm):
        tok = model.tokenizer._hf  # the raw tokenizer: the reference
        ids = tok("The cat sat.")["input_ids"]
        assert model.token_ids("The cat sat.") == ids
        assert model.token_ids("The cat sat.", special=False) == tok("The cat sat.", add_special_tokens=False)["input_ids"]
        assert model.decode(ids) == tok.decode(ids)
        assert model.raw_tokens(ids) == tok.convert_ids_to_tokens(ids)


def test_unknown_attention_module_names_the_supported_families(smollm2, monkeypatch):
    from explorer.capture.projections import layer_projections, output_projection

    monkeypatch.setattr(smollm2, "attention_modules", [torch.nn.Identity()] * smollm2.n_layers)
    for fn in (layer_projections, output_projection):
        with pytest.raises(explorer.ExplorerError, match=r"Identity .*Llama family .*BERT .*GPT-2"):
            fn(smollm2, 0)
