"""Gemma 3 270M, embedded: parity with transformers' own attention on sliding-window and global layers, QK-norm
and per-layer-type RoPE in the Q/K/V projections, and generation over a sliding-window cache.

The long text is over 512 tokens, so that Gemma 3's 512-key window cuts on its 15 sliding layers.
"""

from __future__ import annotations

import json

import pytest
import torch

from explorer import generate
from explorer.capture.embedded import _load_tokenizer_fast
from explorer.capture.projections import layer_projections
from explorer.capture.recorder import sliding_allowed
from explorer.decoding.generation import Stepper

from texts import GEMMA_TEXTS as TEXTS

WINDOW = 512
SLIDING, GLOBAL = 0, 5  # Gemma 3 270M: full attention at layers 5, 11 and 17, a sliding window elsewhere


@pytest.fixture(scope="module")
def traces(gemma3):
    return {name: gemma3.trace(text) for name, text in TEXTS.items()}


@pytest.fixture(scope="module")
def eager_maps(gemma3_eager, traces):
    """Each text's attention maps from transformers' eager attention (the base model: no n × vocab logits)."""
    maps = {}
    for name, trace in traces.items():
        with torch.inference_mode():
            out = gemma3_eager.model(torch.tensor([trace.token_ids]), output_attentions=True)
        maps[name] = [a[0] for a in out.attentions]  # 18 × (H, n, n)
    return maps


def test_long_text_outgrows_the_window(traces):
    assert traces["long"].n_tokens > WINDOW + 100


def test_chinese_tokens_are_whole_words(traces):
    trace = traces["chinese"]
    assert trace.tokens[0] == "<bos>" and "".join(trace.tokens[1:]) == TEXTS["chinese"]
    for word in ("大规模", "语言", "模型", "是一种", "机器学习"):
        assert word in trace.tokens


@pytest.mark.parametrize("name", TEXTS)
def test_maps_match_eager_on_sliding_and_global_layers(gemma3, traces, eager_maps, name):
    trace, ref = traces[name], eager_maps[name]
    assert trace.n_layers == 18 and trace.n_heads == 4 and trace.n_kv_heads == 1 and trace.mask == "sliding"
    for layer in range(trace.n_layers):
        ours = trace.attentions(layer)
        # p = exp(s − lse) with |s| ≤ ~50 here; both sides start from float32 hidden states that went through up to
        # 18 layers summed in different orders (fused kernel vs eager matmuls), which moves p by a few 1e-6.
        assert (ours - ref[layer]).abs().max().item() <= 1e-5, layer
        # Masked cells are exactly 0 on both sides: the window's edge is the same key as in transformers' mask.
        assert torch.equal(ours == 0, ref[layer] == 0), layer


@pytest.mark.parametrize("name", TEXTS)
def test_logits_match_sdpa(gemma3, gemma3_sdpa, traces, name):
    trace = traces[name]
    n = trace.n_tokens
    positions = torch.tensor(sorted({0, n // 3, WINDOW - 1, WINDOW, n - 2, n - 1} & set(range(n))))
    ours = gemma3.unembed(trace.final_hidden[positions]).float()  # only these rows: 1 MiB of logits per position
    with torch.inference_mode():
        ref = gemma3_sdpa(torch.tensor([trace.token_ids]), logits_to_keep=positions).logits[0]
    assert ours.shape == ref.shape == (len(positions), 262144)
    # |logit| reaches ~45: float32 rounding of the 640-long unembedding dot products and of the final hidden state
    # gives differences of order 1e-4 at that magnitude.
    assert (ours - ref).abs().max().item() <= 1e-3


@pytest.mark.parametrize(
    "T, past, kept",  # new queries; tokens seen before them; how many of those the sliding cache still holds
    [(10, 0, 0), (3, 7, 7), (1, 20, 3), (2, 20, 3), (6, 2, 2)],
)
def test_sliding_allowed_is_transformers_sliding_window(T, past, kept):
    """Bottom-right alignment also fits a sliding-window cache, which keeps only the last window − 1 keys."""
    from transformers.masking_utils import sdpa_mask, sliding_window_causal_mask_function

    window, S = 4, kept + T
    theirs = sdpa_mask(batch_size=1, q_length=T, kv_length=S, q_offset=past, kv_offset=past - kept,
                       mask_function=sliding_window_causal_mask_function(window), allow_is_causal_skip=False)
    assert torch.equal(sliding_allowed(T, S, window), theirs[0, 0])


def test_sliding_layers_record_a_window_not_a_matrix(gemma3, traces):
    trace = traces["long"]
    for layer, (record, kind) in enumerate(zip(trace.records, gemma3.config.layer_types)):
        assert record.allowed is None, layer  # no (T, S) bool matrix is kept for any layer
        if kind == "sliding_attention":
            assert record.mask_kind == "sliding" and record.window == WINDOW, layer
        else:
            assert record.mask_kind == "causal" and record.window is None, layer
    assert sum(r.mask_kind == "sliding" for r in trace.records) == 15


def test_window_is_visible_in_the_rebuilt_maps(traces):
    trace = traces["long"]
    n = trace.n_tokens
    for head in range(trace.n_heads):
        sliding = trace.attention(SLIDING, head)
        for i in range(WINDOW, n):
            assert sliding[i, : i - WINDOW + 1].abs().max().item() == 0.0  # keys ≥ 512 back: masked
            assert sliding[i, i - WINDOW + 1] > 0  # the oldest key inside the window: allowed
        assert torch.allclose(sliding.sum(-1), torch.ones(n), atol=1e-5)  # rows sum to 1 over n fp32 terms
        assert trace.attention(GLOBAL, head).tril(-WINDOW).sum().item() > 0  # global layers see keys ≥ 512 back
    assert (trace.allowed(SLIDING).sum(-1) == torch.arange(1, n + 1).clamp(max=WINDOW)).all()


def test_causal_override_is_a_what_if_only_past_the_window(gemma3, traces):
    assert traces["long"].mask_is_model_default and traces["english"].mask_is_model_default
    short = gemma3.trace(TEXTS["english"], mask="causal", keep_inputs=False)
    assert short.mask == "causal" and short.mask_is_model_default  # ≤ 512 tokens: the window cuts nothing
    long = gemma3.trace(TEXTS["long"], mask="causal", keep_inputs=False, max_tokens=WINDOW + 40)
    assert long.mask == "causal" and not long.mask_is_model_default
    assert all(r.mask_kind == "causal" and r.window is None for r in long.records)
    assert long.attention(SLIDING, 0)[-1, : long.n_tokens - WINDOW].sum().item() > 0  # the window is gone


@pytest.mark.parametrize("layer", [SLIDING, GLOBAL])
def test_projections_reproduce_recorded_qkv_with_qk_norm_and_rope(gemma3, traces, layer):
    trace = traces["long"]
    cfg = gemma3.config
    proj = layer_projections(gemma3, layer)
    parts = proj.project(trace.x(layer))
    record = trace.record(layer)
    # Same float32 operations on the same x as the attention module (640-long dot products, then norm and RoPE):
    # equal to within a few ulps of |q|, |k| ≤ ~60 (rtol 1e-5 allows ~80 ulps).
    for name in ("q", "k", "v"):
        torch.testing.assert_close(parts[name], getattr(record, name), rtol=1e-5, atol=1e-5)

    # QK-norm, Gemma's form: x / √(mean(x²) + eps) · (1 + w), per head, before RoPE.
    assert proj.norm_offset == 1.0 and proj.norm_eps == cfg.rms_norm_eps
    attn = gemma3.attention_modules[layer]
    for raw, pre, norm in (("q_raw", "q_pre", attn.q_norm), ("k_raw", "k_pre", attn.k_norm)):
        x = parts[raw]
        textbook = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * (1 + norm.weight.float())
        torch.testing.assert_close(parts[pre], textbook, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        q_linear = attn.q_proj(trace.x(layer))[:, : proj.head_dim]  # head 0 of the module's own projection
    torch.testing.assert_close(parts["q_raw"][0], q_linear, rtol=1e-5, atol=1e-5)

    # RoPE with this layer type's base (10,000 on sliding layers, 1,000,000 on global ones), rotate-half layout.
    base = cfg.rope_parameters[cfg.layer_types[layer]]["rope_theta"]
    assert base == (10_000.0 if layer == SLIDING else 1_000_000.0)
    D = proj.head_dim
    inv_freq = 1.0 / base ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
    angles = torch.arange(trace.n_tokens, dtype=torch.float32)[:, None] * inv_freq  # (n, D/2)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    for pre, post in (("q_pre", "q"), ("k_pre", "k")):
        x = parts[pre]
        rotated = x * cos + torch.cat([-x[..., D // 2 :], x[..., : D // 2]], -1) * sin
        # Both sides form the angle p·θ as one float32 product and take torch's cos/sin of it, so they differ only
        # in how the final multiply-adds round: a few ulps of |q|, |k| ≤ ~60.
        torch.testing.assert_close(parts[post], rotated, rtol=1e-5, atol=1e-5)
    assert proj.scale == cfg.query_pre_attn_scalar**-0.5


def test_greedy_generation_matches_transformers(gemma3, gemma3_sdpa):
    prompt = "The capital of France is"
    ours = generate(gemma3, prompt, max_new_tokens=8, temperature=0.0)
    ids = torch.tensor([gemma3.encode(prompt).token_ids])
    with torch.inference_mode():
        ref = gemma3_sdpa.generate(ids, do_sample=False, max_new_tokens=8)[0, ids.shape[1] :]
    assert ours.token_ids == ref.tolist()  # FIELD_NOTES: " the capital of the country of France. It is the largest"


def test_stepping_over_a_full_sliding_cache_matches_the_trace(gemma3, traces):
    """The last token fed as a decoding step, with the sliding layers' cache holding only 511 earlier keys, gets
    the same attention and next-token logits as the whole text traced at once."""
    trace = traces["long"]
    ids = trace.token_ids
    prompt = TEXTS["long"][:-1]  # the text without its final '.', which is one token
    stepper = Stepper(gemma3, prompt, max_new_tokens=2)
    assert stepper.prompt.token_ids == ids[:-1]
    stepper.choose(ids[-1])
    step = stepper.pending
    assert step.context_length == trace.n_tokens
    for layer in range(trace.n_layers):
        # the same rebuild exp(q·k·scale − lse) on q/k from a cached vs an uncached run: a few 1e-6 apart
        assert (step.attentions(layer) - trace.attentions(layer)[:, -1]).abs().max().item() <= 1e-5, layer
    ref = gemma3.unembed(trace.final_hidden[-1]).float()  # the trace's own logits, checked against sdpa above
    assert (step.logits - ref).abs().max().item() <= 1e-3  # as in test_logits_match_sdpa


def test_tokenizer_fast_path_keeps_the_tokenizer(tmp_path):
    """The conversion cache's tokenizer rewrite (plain Rust loading, merges as "a b" strings) changes nothing, and
    is skipped where a token contains a space (the string form would be ambiguous)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    corpus = ["the cat sat on the mat", "a dog and a cat", "the dog sat"] * 20
    for name, vocab_extra in (("plain", []), ("spaced", ["a b"])):
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<s>"]))
        if vocab_extra:  # a vocabulary token with a space in it
            data = json.loads(tok.to_str())
            data["model"]["vocab"][vocab_extra[0]] = len(data["model"]["vocab"])
            tok = Tokenizer.from_str(json.dumps(data))
        folder = tmp_path / name
        original = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>")
        original.save_pretrained(folder)
        _load_tokenizer_fast(folder, original)
        merges = json.loads((folder / "tokenizer.json").read_text())["model"]["merges"]
        assert all(isinstance(m, str) for m in merges) == (name == "plain")
        reloaded = AutoTokenizer.from_pretrained(folder)
        for text in ("the cat sat", "a dog on the mat", "unknown words"):
            assert reloaded(text)["input_ids"] == original(text)["input_ids"]
            assert reloaded.tokenize(text) == original.tokenize(text)
