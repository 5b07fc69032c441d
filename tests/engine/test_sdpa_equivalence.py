"""The instrumented model equals transformers' own SDPA model wherever transformers can call it: padded batches,
static caches, fully masked rows, every attention back end; and a trace tells the truth about its mask.

The references are the same weights loaded with ``attn_implementation="sdpa"`` (or ``"eager"`` for maps).
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

import explorer
from explorer import ExplorerError, InstrumentationError
from explorer.capture.devices import tf32_enabled
from explorer.capture.recorder import (
    Recorder,
    _aligned_bias,
    _fused_attention,
    _math_attention,
    attention_probs,
    recording,
)

from tiny_tokenizer import word_tokenizer

PROMPTS = ["The capital of France is", "Hi"]  # of different lengths, so the second row is left-padded
VOCAB = 128
PAD = 3  # tiny_tokenizer's [PAD]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, longest): each row right-aligned after pad_id, as padding_side="left"."""
    n = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (n - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _smollm2_batch(smollm2) -> tuple[torch.Tensor, torch.Tensor, int]:
    pad = smollm2.tokenizer.pad_id
    pad = min(smollm2.eos_ids) if pad is None else pad
    ids, mask = _left_padded([smollm2.encode(p).token_ids for p in PROMPTS], pad)
    assert (mask == 0).any()  # the batch really is padded
    return ids, mask, pad


def _greedy(hf, ids, mask, pad, **kwargs) -> list[list[int]]:
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=8, pad_token_id=pad, **kwargs)
    return out[:, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def sdpa_greedy(smollm2, smollm2_sdpa) -> dict[str, list[list[int]]]:
    """The SDPA model's greedy continuations (dynamic cache) of the first prompt alone and of the padded batch."""
    ids, mask, pad = _smollm2_batch(smollm2)
    alone = torch.tensor([smollm2.encode(PROMPTS[0]).token_ids])
    return {
        "alone": _greedy(smollm2_sdpa, alone, torch.ones_like(alone), pad),
        "batch": _greedy(smollm2_sdpa, ids, mask, pad),
    }


# ---- padded batches ------------------------------------------------------------------------------------------
def test_left_padded_batch_logits_match_sdpa(smollm2, smollm2_sdpa):
    ids, mask, _ = _smollm2_batch(smollm2)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers a left-padded row: from its first token
    with torch.inference_mode():
        ours = smollm2.hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        ref = smollm2_sdpa(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    assert not ours.isnan().any()
    # Every row and position, padding included (a fully masked query gives 0 attention output in both). The same
    # kernels on the same inputs (measured 0.0); 1e-4 is the float32 bound test_parity uses for these logits.
    assert (ours - ref).abs().max().item() <= 1e-4
    # Each row equals that prompt run alone, unpadded: the padded row uses its own mask.
    for row, prompt in enumerate(PROMPTS):
        alone_ids = torch.tensor([smollm2.encode(prompt).token_ids])
        with torch.inference_mode():
            alone = smollm2_sdpa(input_ids=alone_ids).logits[0]
        # The same sums over more (masked, zero-weight) keys, blocked differently: float32 reordering through 30
        # layers (measured 2e-5 to 6e-5 here); 1e-3 is 3e-5 relative to logits of ~30, the old bug was 0.2 to 20.
        assert (ours[row, -alone.shape[0]:] - alone).abs().max().item() <= 1e-3


def test_left_padded_greedy_generate_matches_sdpa(smollm2, sdpa_greedy):
    ids, mask, pad = _smollm2_batch(smollm2)
    assert _greedy(smollm2.hf, ids, mask, pad) == sdpa_greedy["batch"]
    assert sdpa_greedy["batch"][0] == sdpa_greedy["alone"][0]  # the reference itself: padding changes nothing


def test_left_padded_output_attentions_match_eager(smollm2, smollm2_eager):
    """attention_probs rebuilds each batch item's maps with its own mask; a padded query attends to nothing."""
    ids, mask, _ = _smollm2_batch(smollm2)
    with torch.inference_mode():
        ours = smollm2.hf(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
        ref = smollm2_eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    real = mask.bool()  # (B, T): queries that are tokens, not padding
    for layer in (0, 15, 29):
        assert not ours[layer].isnan().any()
        # Eager softmax over ≤ 8 keys in float32: |Δp| ≤ a few ulps of 1, as in test_parity.
        diff = (ours[layer] - ref[layer]).abs().amax(dim=(1, 3))  # (B, T): worst over heads and keys
        assert diff[real].max().item() <= 1e-5
        # Eager spreads a padded query evenly (softmax of equal finfo.min scores); here it attends to nothing.
        assert ours[layer].permute(0, 2, 1, 3)[~real].abs().max().item() == 0.0


# ---- static cache -------------------------------------------------------------------------------------------
def test_static_cache_generate_matches_sdpa(smollm2, sdpa_greedy):
    """Static-cache prefill comes with no mask and S = max_cache_len: transformers' rule is causal from the top-left
    (the slots past the prompt are empty), not bottom-right aligned over the empty slots."""
    ids, mask, pad = _smollm2_batch(smollm2)
    alone = torch.tensor([smollm2.encode(PROMPTS[0]).token_ids])
    static = _greedy(smollm2.hf, alone, torch.ones_like(alone), pad, cache_implementation="static")
    assert static == sdpa_greedy["alone"]
    # A padded batch's prefill does get a mask, over the empty slots too.
    assert _greedy(smollm2.hf, ids, mask, pad, cache_implementation="static") == sdpa_greedy["batch"]


# ---- fully masked rows ----------------------------------------------------------------------------------------
def test_fully_masked_row_gives_zero_in_the_exact_maths():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))  # (B, H, T, D)
    allowed = torch.ones(4, 4, dtype=torch.bool).tril()
    allowed[0] = False  # query 0 may see no key (a padded query under left padding)
    bias = torch.zeros(4, 4).masked_fill(~allowed, float("-inf"))
    scale = 8**-0.5
    out, lse = _math_attention(q, k, v, scale, False, bias)
    probs = attention_probs(q, k, lse, scale, "custom", allowed)
    assert not out.isnan().any() and not probs.isnan().any()
    assert out[:, :, 0].abs().max().item() == 0.0 and probs[:, :, 0].abs().max().item() == 0.0
    # The other rows are the textbook softmax: float32 over 4 keys, a few ulps of 1.
    scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    textbook = torch.softmax(scores[:, :, 1:], dim=-1)
    assert (probs[:, :, 1:] - textbook).abs().max().item() <= 1e-6
    assert (out[:, :, 1:] - textbook @ v).abs().max().item() <= 1e-6


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_llama")
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(folder)
    word_tokenizer(folder, VOCAB)
    return folder


def test_padded_batch_on_the_exact_maths_path_has_no_nan(tiny_llama_dir):
    """float64 on the CPU takes the exact-maths fall-back (the fused CPU kernel runs float32 here)."""
    model = explorer.load(str(tiny_llama_dir), device="cpu")
    model.hf.to(torch.float64)
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa", dtype=torch.float64).eval()
    # The padded row first: applying item 0's mask to every item (the old bug) would also spread its NaN.
    ids, mask = _left_padded([[40, 41], [5, 17, 99, 23, 64, 8]], PAD)
    with torch.inference_mode():
        ours = model.hf(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        theirs = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert not any(h.isnan().any() for h in ours.hidden_states)
    assert not any(a.isnan().any() for a in ours.attentions)
    # float64 through 2 tiny layers: rounding ~1e-16·√64 per op; 1e-10 leaves room and still catches any real error.
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        assert (a - b).abs().max().item() <= 1e-10
    assert (ours.logits - theirs.logits).abs().max().item() <= 1e-10


def test_mask_override_refuses_batches_and_caches(tiny_llama_dir):
    """An override replaces the model's mask with a plain pattern over one whole sequence (Model.trace); with
    padding or a cache it would drop the padding or misalign, so it raises instead of answering wrongly."""
    model = explorer.load(str(tiny_llama_dir), device="cpu")
    ids, mask = _left_padded([[5, 17, 99, 23], [40, 41]], PAD)
    with pytest.raises(InstrumentationError, match="one"), torch.inference_mode():
        with recording(Recorder(mask_override="causal")):
            model.hf(input_ids=ids, attention_mask=mask)


# ---- mask reporting ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sliding(tmp_path_factory):
    """A tiny Mistral whose own mask is a sliding window of 4 keys, and the same weights through eager attention."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_mistral")
    config = MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, sliding_window=4)
    model = MistralForCausalLM(config).eval()
    model.config.architectures = ["MistralForCausalLM"]
    model.save_pretrained(folder)
    word_tokenizer(folder, VOCAB)
    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    return explorer.load(str(folder), device="cpu"), eager


TEXT = " ".join(f"w{i}" for i in (5, 17, 99, 23, 5, 17, 64, 8, 120, 33, 5))


def test_sliding_window_override_is_reported_as_a_what_if(sliding):
    model, eager = sliding
    own = model.trace(TEXT)
    with torch.inference_mode():
        ref = eager(torch.tensor([own.token_ids]), output_attentions=True).attentions
    for layer, maps in enumerate(ref):  # the window is really in force (float32 softmax over ≤ 4 keys)
        assert (own.attentions(layer) - maps[0]).abs().max().item() <= 1e-5
    # Recorded by its size (Mistral's window as Gemma 3's), not as a (T, S) matrix per layer.
    assert own.mask == "sliding" and own.mask_is_model_default
    assert all(r.window == 4 and r.allowed is None for r in own.records)
    causal = model.trace(TEXT, mask="causal")  # drops the window: a different computation
    assert causal.mask == "causal" and not causal.mask_is_model_default
    assert causal.attention(0, 0)[-1, 0].item() > 0  # the last query now sees the first key
    # Within the window the causal override is the model's own computation, and says so.
    short = model.trace("w5 w17 w99")
    assert model.trace("w5 w17 w99", mask="causal").mask_is_model_default
    assert torch.equal(short.attentions(1), model.trace("w5 w17 w99", mask="causal").attentions(1))


# ---- CUDA back ends -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("S", [5, 16, 19, 33])
def test_aligned_bias_keeps_values_and_aligns_rows(S):
    bias = torch.randn(2, 1, 3, S)  # (B, 1, T, S)
    aligned = _aligned_bias(bias)
    assert aligned.shape == bias.shape and torch.equal(aligned, bias)
    # The memory-efficient kernel needs every stride but the last a multiple of 16 elements, the last 1.
    assert aligned.stride(-1) == 1 and all(s % 16 == 0 for s in aligned.stride()[:-1])


def test_tf32_enabled_reports_the_matmul_setting():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert not tf32_enabled()
        torch.backends.cuda.matmul.allow_tf32 = True
        assert tf32_enabled()
        torch.set_float32_matmul_precision("highest")
        torch.set_float32_matmul_precision("high")
        assert tf32_enabled()
    finally:
        torch.set_float32_matmul_precision(before)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("S", [19, 32])
def test_cuda_fused_with_a_padded_mask_matches_exact_maths(dtype, S):
    """A custom mask whose key length is not a multiple of 16 runs the fused kernel with an aligned bias."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, S, 64, device="cuda", dtype=dtype) for _ in range(3))
    allowed = torch.ones(2, S, S, dtype=torch.bool, device="cuda").tril()
    allowed[1, :, :3] = False  # item 1 left-padded by 3
    allowed[1, :3] = False
    out, lse = _fused_attention(q, k, v, 64**-0.5, "custom", allowed)
    bias = torch.zeros(2, 1, S, S, device="cuda", dtype=dtype).masked_fill(~allowed[:, None], float("-inf"))
    ref_out, ref_lse = _math_attention(q, k, v, 64**-0.5, False, bias)
    # fp32: softmax-weighted sums of ≤ S values |v| ≤ 4, ~1e-7·√S·4 ≈ 3e-6. fp16: each side rounds its float32
    # result to fp16 once; at |out| < 4 an ulp is 2⁻⁹ ≈ 2e-3, so two ulps cover the accumulation order too.
    tol = 1e-5 if dtype == torch.float32 else 4e-3
    assert not out.isnan().any()
    assert (out.float() - ref_out.float()).abs().max().item() <= tol
    assert out[1, :, :3].abs().max().item() == 0.0  # padded queries: output 0
    live = allowed.any(-1)[:, None].expand_as(lse)
    # lse is float32 on both sides from the same products: |lse| ≈ log S + 1 ≈ 4, ~1e-7·√S relative, 1e-4 is ample.
    assert (lse[live] - ref_lse[live]).abs().max().item() <= 1e-4


# ---- a trace does not keep its model alive ---------------------------------------------------------------------
def test_trace_does_not_keep_its_model_alive(tiny_llama_dir):
    model = explorer.load(str(tiny_llama_dir), device="cpu")
    trace = model.trace(TEXT)
    with torch.inference_mode():
        ref = model.hf(torch.tensor([trace.token_ids])).logits[0]
    again = model.trace(TEXT)
    # The same LM head on the same hidden states: float32, 32-long dot products, ~1e-7·√32 relative.
    assert (trace.logits - ref).abs().max().item() <= 1e-5
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # the traces did not keep it (a model can be GiBs; the trace cache counts only traces)
    assert trace.logits is not None  # computed while the model lived, kept
    with pytest.raises(ExplorerError, match="no longer loaded"):
        again.logits  # noqa: B018
    assert math.isfinite(trace.logits.sum().item())
