"""Step-by-step generation on the real SmolLM2: tokens, logits and attention rows against transformers' own."""

from __future__ import annotations

import pytest
import torch

import explorer
from explorer import ExplorerError
from explorer.decoding.fill_mask import fill_mask
from explorer.decoding.generation import Stepper
from explorer.capture.tokens import Encoded

from bounds import attention_bound, f32_dot_bound, model_bound

PROMPT = "Once upon a time, in a small village,"
SAMPLING = dict(temperature=0.8, top_k=50, top_p=0.9)


def _reference_logits(reference, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return reference(torch.tensor([ids])).logits[0, -1]


def _logits_bound(model, reference: torch.Tensor) -> float:
    """A step (one query against the KV cache) and a full forward sum in other orders in every layer."""
    return model_bound(model, float(reference.abs().max()))


def test_greedy_matches_transformers_generate(smollm2, smollm2_sdpa):
    steps = explorer.generate(smollm2, PROMPT, max_new_tokens=32, temperature=0)
    assert len(steps) == 32 and steps.stop_reason == "max_new_tokens"
    ids = torch.tensor([steps.prompt.token_ids])
    assert steps.prompt.token_ids == smollm2.encode(PROMPT).token_ids  # tokenised like model.trace
    with torch.inference_mode():
        sdpa = smollm2_sdpa.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=32)
    assert steps.token_ids == sdpa[0, ids.shape[1]:].tolist()
    assert all(s.how == "greedy" and s.p_chosen == 1.0 for s in steps)
    assert steps.text == smollm2.tokenizer._hf.decode(steps.token_ids)  # the raw tokenizer: the reference
    assert "".join(s.token for s in steps) == steps.text  # the per-token pieces add up to the text


def test_seeded_run_repeats_exactly(smollm2):
    a = explorer.generate(smollm2, PROMPT, max_new_tokens=8, seed=1234, **SAMPLING)
    b = explorer.generate(smollm2, PROMPT, max_new_tokens=8, seed=1234, **SAMPLING)
    assert a.token_ids == b.token_ids
    assert all(torch.equal(x.probs, y.probs) and x.u == y.u for x, y in zip(a, b))
    hot = dict(temperature=1.5, top_k=0, top_p=1.0)  # high entropy: two seeds practically never agree
    assert explorer.generate(smollm2, PROMPT, max_new_tokens=6, seed=1, **hot).token_ids != \
        explorer.generate(smollm2, PROMPT, max_new_tokens=6, seed=2, **hot).token_ids


@pytest.mark.numeric
def test_steps_reuse_the_cache_and_match_a_full_forward(smollm2, smollm2_sdpa):
    """Each step feeds one token (O(context)); its logits equal a fresh full forward over the same context."""
    fed: list[int] = []
    hook = smollm2.hf.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        stepper = Stepper(smollm2, PROMPT, seed=5, **SAMPLING)
        for _ in range(4):
            stepper.step()
        stepper.pending  # noqa: B018 - computes the next distribution
    finally:
        hook.remove()
    n_prompt = len(stepper.prompt.token_ids)
    assert fed == [n_prompt] + [1] * 4
    assert stepper._cache.get_seq_length() == n_prompt + 4
    for step in stepper.steps[::2] + [stepper.pending]:
        reference = _reference_logits(smollm2_sdpa, stepper.context_ids[: step.context_length])
        assert (step.logits - reference).abs().max().item() <= _logits_bound(smollm2, reference)
        assert step.p_chosen is None or step.p_chosen > 0  # sampled tokens come from the kept set


@pytest.mark.numeric
def test_attention_rows_equal_the_last_row_of_a_trace_and_of_eager(smollm2, smollm2_eager):
    steps = explorer.generate(smollm2, PROMPT, max_new_tokens=4, seed=3, **SAMPLING)
    for step in steps:
        context = steps.prompt.token_ids + steps.token_ids[: step.index]
        assert step.rows.shape == (30, 9, len(context))
        trace = smollm2.trace_ids(Encoded("", context, [""] * len(context)), keep_inputs=False)
        with torch.inference_mode():
            eager = smollm2_eager(torch.tensor([context]), output_attentions=True).attentions
        for layer in range(trace.n_layers):
            bound = attention_bound(trace, layer)  # the step's KV-cache run rounds apart from both references
            # a row sum adds n roundings to its probabilities' own (relative) error
            assert (step.rows[layer].sum(-1) - 1).abs().max().item() <= bound + f32_dot_bound(len(context), 1.0)
            assert (trace.attentions(layer)[:, -1] - step.attentions(layer)).abs().max().item() <= bound
            assert (eager[layer][0, :, -1] - step.attentions(layer)).abs().max().item() <= bound
        assert torch.equal(step.attention(17, 4), step.rows[17, 4])


@pytest.mark.numeric
def test_back_choose_reset(smollm2, smollm2_sdpa):
    stepper = Stepper(smollm2, PROMPT, seed=11, **SAMPLING)
    first = [stepper.step().token_id for _ in range(3)]
    stepper.pending  # noqa: B018
    undone = stepper.back()
    assert undone.token_id == first[-1] and len(stepper.steps) == 2
    assert stepper._cache.get_seq_length() == len(stepper.prompt.token_ids) + 2  # cropped, not recomputed
    assert torch.equal(stepper.pending.logits, undone.logits) and stepper.pending.token_id is None
    assert stepper.step().token_id == first[-1]  # the same seed redraws the same token at the same step
    stepper.back()
    stepper.back()
    # Pick a token the knobs would never sample; the next step must see exactly that context.
    unlikely = int(torch.argsort(stepper.pending.logits)[100])
    chosen = stepper.choose(unlikely)
    assert chosen.how == "picked" and chosen.p_chosen == 0.0 and chosen.p_model > 0
    after = stepper.pending
    assert stepper.context_ids == stepper.prompt.token_ids + [first[0], unlikely]
    reference = _reference_logits(smollm2_sdpa, stepper.context_ids)
    assert (after.logits - reference).abs().max().item() <= _logits_bound(smollm2, reference)
    fed: list[int] = []
    hook = smollm2.hf.register_forward_pre_hook(lambda *args, **kwargs: fed.append(1), with_kwargs=True)
    try:
        stepper.reset()
    finally:
        hook.remove()
    assert fed == [] and stepper._cache.get_seq_length() == len(stepper.prompt.token_ids)  # undone, not re-run
    assert stepper.steps == [] and stepper.back() is None
    assert stepper.step().token_id == first[0]
    with pytest.raises(ExplorerError, match="vocabulary"):
        stepper.choose(10**9)


def test_knobs_apply_to_the_pending_step_only(smollm2):
    stepper = Stepper(smollm2, PROMPT, seed=0, temperature=1.0, top_k=0, top_p=1.0)
    chosen = stepper.step()
    stepper.set_knobs(0.5, 5, 0.5)
    assert chosen.knobs.top_k == 0 and stepper.pending.knobs.top_k == 5
    assert stepper.pending.stages[-1].n_kept <= 5
    with pytest.raises(ExplorerError, match="top-p"):
        stepper.set_knobs(0.5, 5, 2.0)


def test_end_of_text_and_caps(smollm2):
    """Greedy 'The capital of France is' ends with the end-of-sequence token well within 40 tokens."""
    stepper = Stepper(smollm2, "The capital of France is", temperature=0, max_new_tokens=40)
    while not stepper.done:
        stepper.step()
    assert stepper.stop_reason == "eos" and stepper.steps[-1].token_id in stepper.eos_ids
    assert stepper.steps[0].token == " Paris"
    with pytest.raises(ExplorerError, match="end-of-sequence"):
        stepper.step()
    stepper.back()
    assert not stepper.done and stepper.pending is not None
    short = Stepper(smollm2, PROMPT, max_new_tokens=2, seed=0)
    short.run(5)
    assert len(short.steps) == 2 and short.stop_reason == "max_new_tokens"
    assert short.stop_message == "This run has reached its limit of 2 new tokens."  # the app's status line too
    with pytest.raises(ExplorerError, match="limit of 2"):
        short.step()
    assert Stepper(smollm2, PROMPT, max_new_tokens=2).stop_message is None  # still going


def test_chat_template_only_when_asked(smollm2, smollm2_sdpa):
    plain = Stepper(smollm2, "What is the capital of France?", temperature=0, max_new_tokens=5)
    chat = Stepper(smollm2, "What is the capital of France?", temperature=0, max_new_tokens=5, chat=True)
    assert plain.prompt.token_ids == smollm2.encode("What is the capital of France?").token_ids
    assert chat.prompt.token_ids == smollm2.encode("What is the capital of France?", chat=True).token_ids
    assert "<|im_start|>" in chat.prompt.text and "<|im_start|>" not in plain.prompt.text
    chat.run(5)
    ids = torch.tensor([chat.prompt.token_ids])
    with torch.inference_mode():
        ref = smollm2_sdpa.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=5)
    assert chat.generated_ids == ref[0, ids.shape[1]:].tolist()[: len(chat.steps)]


def test_bad_arguments_are_clear_errors(smollm2, minilm):
    with pytest.raises(ExplorerError, match="encoder"):
        Stepper(minilm, "Hello")
    with pytest.raises(ExplorerError, match="empty"):
        Stepper(smollm2, "   ")
    with pytest.raises(ExplorerError, match="Temperature"):
        explorer.generate(smollm2, "Hello", temperature=-1)
    with pytest.raises(ExplorerError, match="max_new_tokens"):
        Stepper(smollm2, "Hello", max_new_tokens=0)
    with pytest.raises(ExplorerError, match="seed"):
        Stepper(smollm2, "Hello", seed=-3)


# ---- GPT vs BERT: fill-mask -------------------------------------------------------------------------------------
@pytest.mark.numeric
def test_fill_mask_matches_eager_masked_lm(tiny_bert_mlm_dir):
    from transformers import BertForMaskedLM

    model = explorer.load(str(tiny_bert_mlm_dir), device="cpu")
    assert model.kind == "masked-lm"
    result = fill_mask(model, "The capital of France is [MASK] and the capital of Spain is [MASK].", top=5)
    assert len(result.predictions) == 2
    reference = BertForMaskedLM.from_pretrained(tiny_bert_mlm_dir, attn_implementation="eager").eval()
    with torch.inference_mode():
        out = reference(torch.tensor([result.token_ids]), output_attentions=True)
    trace = model.trace_ids(Encoded("", result.token_ids, [""] * len(result.token_ids)), keep_inputs=False)
    for prediction in result.predictions:
        assert result.token_ids[prediction.position] == model.tokenizer._hf.mask_token_id
        logits = out.logits[0, prediction.position]
        expected = torch.softmax(logits, -1)
        # The logits round apart through the model; a softmax moves by p·|Δz − Δlse| ≤ 2·p·max|Δz|, and its
        # normaliser sums the whole vocabulary.
        dz = model_bound(model, float(logits.abs().max()))
        bound = 2 * float(expected.max()) * (dz + f32_dot_bound(model.config.vocab_size, 1.0))
        assert (prediction.probs - expected).abs().max().item() <= bound
        top = torch.topk(expected, 5)
        assert [c.token_id for c in prediction.candidates] == top.indices.tolist()
        assert [c.prob for c in prediction.candidates] == pytest.approx(top.values.tolist(), abs=bound)
        for layer in range(model.n_layers):  # the mask sees both sides: its row spans the whole sentence
            row = out.attentions[layer][0, :, prediction.position]
            assert (prediction.rows[layer] - row).abs().max() <= attention_bound(trace, layer)


def test_fill_mask_says_which_models_work(smollm2, minilm, tiny_bert_mlm_dir):
    with pytest.raises(ExplorerError, match="no masked-LM head.*bert-base-uncased"):
        fill_mask(minilm, "The capital of France is [MASK].")
    with pytest.raises(ExplorerError, match="causal language model"):
        fill_mask(smollm2, "The capital of France is [MASK].")
    model = explorer.load(str(tiny_bert_mlm_dir), device="cpu")
    with pytest.raises(ExplorerError, match=r"\[MASK\]"):
        fill_mask(model, "No mask here.")
