"""The from-scratch attention against independent references, the tutorial variant's measured effects, and the
kernel sweep.

References: transformers' own *eager* attention (a separately loaded model; its attention modules' inputs and
outputs captured with hooks), ``torch.nn.MultiheadAttention`` and ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

import explorer
from explorer.from_scratch import kernels, checks as scratch_checks
from explorer.analysis import stats
from explorer.capture.tokens import Encoded
from explorer.capture.projections import layer_projections
from explorer.capture.recorder import causal_allowed
from explorer.from_scratch.scratch import (
    TUTORIAL_FILL,
    Departures,
    MultiHeadAttention,
    Rotary,
    TutorialAttention,
    attention_core,
    tutorial_variant,
)

from bounds import (
    attention_bound,
    attention_output_bound,
    entropy_bound,
    f32_dot_bound,
    probs_bound,
)
from tiny_tokenizer import word_tokenizer

pytestmark = pytest.mark.numeric

TEXT = "The quick brown fox jumps over the lazy dog, and then the dog sleeps again. 大规模语言模型正在改变世界。"
NO_GPU = "No CUDA GPU is visible to PyTorch on this machine: the CPU↔CUDA agreement was not measured here."


def eager_layer_io(hf: torch.nn.Module, attn_modules: list[torch.nn.Module], ids: list[int],
                   extra: dict[int, torch.nn.Module] | None = None) -> tuple[list, list, list, dict]:
    """Run transformers' eager model; return each attention module's input x and output, its maps, and the
    outputs of ``extra`` modules (layer -> module)."""
    inputs, outputs, extra_out = {}, {}, {}
    hooks = []
    for i, module in enumerate(attn_modules):
        hooks.append(module.register_forward_pre_hook(
            lambda m, a, kw, i=i: inputs.__setitem__(i, kw.get("hidden_states", a[0] if a else None)[0]),
            with_kwargs=True))
        hooks.append(module.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out[0][0])))
    for i, module in (extra or {}).items():
        hooks.append(module.register_forward_hook(lambda m, a, out, i=i: extra_out.__setitem__(i, out[0])))
    try:
        with torch.inference_mode():
            maps = hf(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    finally:
        for h in hooks:
            h.remove()
    n = len(attn_modules)
    return [inputs[i] for i in range(n)], [outputs[i] for i in range(n)], [m[0] for m in maps], extra_out


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def output_bound(model, trace, layer: int, reference: torch.Tensor, after_wo: bool = True) -> float:
    """The from-scratch attention output against ``reference`` (the model's): V over d_model terms, then W_o over
    H·D when it is applied (see bounds.attention_output_bound)."""
    summed = model.config.hidden_size + (trace.n_heads * trace.head_dim if after_wo else 0)
    return attention_output_bound(attention_bound(trace, layer), trace.n_tokens, summed, float(reference.abs().max()))


def assert_parity(model, trace, results) -> None:
    """Each layer of scratch_checks.parity within the float32 bounds of the model's own computation."""
    for r in results:
        assert r.probs <= attention_bound(trace, r.layer), r
        assert r.qkv <= f32_dot_bound(model.config.hidden_size, r.qkv_scale), r  # x @ W over d_model terms
        summed = model.config.hidden_size + (trace.n_heads * trace.head_dim if r.compared_at == "after W_o" else 0)
        bound = attention_output_bound(attention_bound(trace, r.layer), trace.n_tokens, summed, r.output_scale)
        assert r.output <= bound, r


def score_size(q: torch.Tensor, k: torch.Tensor, scale: float, allowed: torch.Tensor | None = None) -> float:
    """The largest |q·k·scale| among allowed pairs; q (…, H, T, D), k (…, H, S, D)."""
    scores = (q @ k.transpose(-1, -2)) * scale
    return float((scores if allowed is None else scores.masked_fill(~allowed, 0)).abs().max())


# ---- item 1: parity with the models ----------------------------------------------------------------------------------
def test_smollm2_every_layer_matches_eager_attention(smollm2, smollm2_eager):
    ids = smollm2.encode(TEXT).token_ids
    layers = smollm2_eager.model.layers
    xs, outs, maps, _ = eager_layer_io(smollm2_eager, [layer.self_attn for layer in layers], ids)
    allowed = causal_allowed(len(ids), len(ids))
    trace = smollm2.trace(TEXT)  # our run of the same text: the size of each layer's scores, for the bounds
    for layer in range(len(layers)):
        module = MultiHeadAttention.from_model(smollm2, layer)
        assert isinstance(module.rope, Rotary) and (module.n_heads, module.n_kv_heads, module.head_dim) == (9, 3, 64)
        with torch.inference_mode():
            ours = module(xs[layer], allowed=allowed)
        assert max_diff(ours.out, outs[layer]) <= output_bound(smollm2, trace, layer, outs[layer]), layer
        assert max_diff(ours.probs, maps[layer]) <= attention_bound(trace, layer), layer


def test_minilm_every_layer_matches_eager_attention(minilm, minilm_eager):
    ids = minilm.encode(TEXT).token_ids
    blocks = minilm_eager.encoder.layer
    dense = {i: block.attention.output.dense for i, block in enumerate(blocks)}
    xs, outs, maps, after_wo = eager_layer_io(minilm_eager, [b.attention.self for b in blocks], ids, extra=dense)
    trace = minilm.trace(TEXT)
    for layer in range(len(blocks)):
        module = MultiHeadAttention.from_model(minilm, layer)
        assert module.rope is None and (module.n_heads, module.head_dim) == (12, 32)
        with torch.inference_mode():
            ours = module(xs[layer], allowed=None)  # an encoder: every key allowed
        # BertSelfAttention stops before W_o; W_o lives in BertSelfOutput.dense
        assert max_diff(ours.concat, outs[layer]) <= output_bound(minilm, trace, layer, outs[layer], after_wo=False)
        assert max_diff(ours.out, after_wo[layer]) <= output_bound(minilm, trace, layer, after_wo[layer])
        assert max_diff(ours.probs, maps[layer]) <= attention_bound(trace, layer)


@pytest.mark.parametrize("name", ["smollm2", "minilm"])
def test_parity_against_the_models_own_module_output(name, request):
    """What the page shows: the engine's module outputs (hooked during a trace) vs the from-scratch module."""
    model = request.getfixturevalue(name)
    results = scratch_checks.parity(model, model.encode(TEXT))
    assert [r.layer for r in results] == list(range(model.n_layers))
    assert_parity(model, model.trace(TEXT), results)
    assert ("after W_o" if name == "smollm2" else "before W_o") in results[0].compared_at


def test_parity_follows_a_mask_override(minilm):
    """Under a what-if causal mask, the from-scratch module uses the mask the trace ran with."""
    results = scratch_checks.parity(minilm, minilm.encode(TEXT), mask="causal", layers=[0, 5])
    assert [r.layer for r in results] == [0, 5]
    assert_parity(minilm, minilm.trace(TEXT, mask="causal"), results)


TINY = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=4)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(  # q/k/v biases, GQA, RoPE
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64)),
}


@pytest.mark.parametrize("arch", TINY)
def test_tiny_architectures_match_their_own_attention(arch, tmp_path):
    """GPT-2 (fused c_attn, learned positions) and Qwen2 (q/k/v biases + GQA + RoPE), random weights."""
    torch.manual_seed(0)
    hf = TINY[arch]().eval()
    hf.config.architectures = [type(hf).__name__]
    hf.save_pretrained(tmp_path)
    word_tokenizer(tmp_path, hf.config.vocab_size)
    model = explorer.load(str(tmp_path), device="cpu")
    ids = [5, 17, 99, 23, 5, 17, 64, 8]  # token ids directly: the architecture, not the tokenizer, is under test
    encoded = Encoded("", ids, [f"w{i}" for i in ids])
    results = scratch_checks.parity(model, encoded)
    assert len(results) == 2
    assert_parity(model, model.trace_ids(encoded), results)
    module = MultiHeadAttention.from_model(model, 1)
    assert (module.b_q is not None) and (module.b_o is not None) == (arch == "gpt2")
    assert module.n_kv_heads == (2 if arch == "qwen2" else 4)
    assert isinstance(module.rope, Rotary) if arch == "qwen2" else module.rope is None
    assert module.n_parameters() == sum(p.numel() for p in model.attention_modules[1].parameters())


def test_rotary_from_scratch_equals_the_models_own(smollm2):
    proj = layer_projections(smollm2, 4)
    rotary = MultiHeadAttention.from_model(smollm2, 4).rope
    q, k = torch.randn(9, 50, 64), torch.randn(3, 50, 64)
    positions = torch.arange(4000, 4050)
    # Both turn each pair by the same float32 angle: a·cos − b·sin, two terms of size ≤ |a| + |b|, rounded apart
    bound = f32_dot_bound(2, 2 * max(float(q.abs().max()), float(k.abs().max())))
    for mine, theirs in zip(rotary(q, k, positions), proj.rope(q, k, positions)):
        assert max_diff(mine, theirs) <= bound


def test_textbook_matches_torch_multihead_attention():
    """A tiny random layer against torch.nn.MultiheadAttention given the same weights (bias on, causal)."""
    torch.manual_seed(0)
    d, H, T = 24, 4, 7
    reference = torch.nn.MultiheadAttention(d, H, bias=True, batch_first=True).eval()
    ours = MultiHeadAttention(d, H, d // H, biases=("q", "k", "v", "o"))
    w_q, w_k, w_v = reference.in_proj_weight.detach().chunk(3)
    b_q, b_k, b_v = reference.in_proj_bias.detach().chunk(3)
    with torch.no_grad():
        for name, w, b in (("q", w_q, b_q), ("k", w_k, b_k), ("v", w_v, b_v)):
            getattr(ours, f"w_{name}").copy_(w.reshape(H, d // H, d).transpose(1, 2))
            getattr(ours, f"b_{name}").copy_(b.reshape(H, 1, d // H))
        ours.w_o.copy_(reference.out_proj.weight.T)
        ours.b_o.copy_(reference.out_proj.bias)
    x = torch.randn(2, T, d)
    allowed = causal_allowed(T, T)
    with torch.inference_mode():
        expected, weights = reference(x, x, x, attn_mask=~allowed, average_attn_weights=False)
        got = ours(x, allowed=allowed)
    assert got.out.shape == (2, T, d) and got.probs.shape == (2, H, T, T)
    p_bound = probs_bound(d // H, T, score_size(got.q, got.k, ours.scale, allowed))
    out_bound = attention_output_bound(p_bound, T, 2 * d, float(expected.abs().max()))  # V and W_o: d terms each
    torch.testing.assert_close(got.out, expected, atol=out_bound, rtol=0)
    torch.testing.assert_close(got.probs, weights, atol=p_bound, rtol=0)


def test_attention_core_matches_sdpa_and_gqa_groups():
    torch.manual_seed(1)
    q, k, v = torch.randn(6, 10, 8), torch.randn(2, 10, 8), torch.randn(2, 10, 8)
    allowed = causal_allowed(10, 10)
    module = MultiHeadAttention(16, 6, 8, n_kv_heads=2)
    assert module.group_size == 3
    kr, vr = k.repeat_interleave(3, 0), v.repeat_interleave(3, 0)
    out, probs = attention_core(q, kr, vr, 8**-0.5, allowed)
    p_bound = probs_bound(8, 10, score_size(q, kr, 8**-0.5, allowed))
    bound = attention_output_bound(p_bound, 10, 0, float(v.abs().max()))  # no projections here
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, kr, vr, is_causal=True), atol=bound, rtol=0)
    assert torch.equal(probs[..., ~allowed], torch.zeros_like(probs[..., ~allowed]))
    assert torch.equal(probs[0], torch.softmax((q[0] @ k[0].T * 8**-0.5).masked_fill(~allowed, -math.inf), -1))


# ---- item 2: the tutorial variant ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_layer(smollm2):
    trace = smollm2.trace(TEXT)
    textbook, ours = scratch_checks.textbook_output_for(smollm2, trace, 7)
    record = trace.record(7)
    return textbook, ours, trace.x(7), record.allowed_matrix()


def test_variant_without_departures_is_the_textbook(smollm2_layer):
    textbook, ours, x, allowed = smollm2_layer
    variant = tutorial_variant(textbook, Departures(), x)
    with torch.inference_mode():
        assert torch.equal(variant(x, allowed).out, ours.out)


@pytest.mark.parametrize("name", ["smollm2", "minilm"])
def test_embed_scale_flattens_every_head_on_real_text(name, request):
    model = request.getfixturevalue(name)
    trace = model.trace(TEXT)
    for layer in (0, model.n_layers // 2, model.n_layers - 1):
        textbook, ours = scratch_checks.textbook_output_for(model, trace, layer)
        record = trace.record(layer)
        variant = tutorial_variant(textbook, Departures(embed_scale=True), trace.x(layer))
        assert variant.score_scale() == model.config.hidden_size**-0.5  # the same float64 expression
        assert textbook.score_scale() == pytest.approx(trace.head_dim**-0.5, rel=1e-15)  # the model's, in float64
        with torch.inference_mode():
            theirs = variant(trace.x(layer), record.allowed_matrix())
        correct, flatter = stats.entropy(ours.probs), stats.entropy(theirs.probs)
        assert correct.shape == (model.n_heads,)
        # each entropy is within entropy_bound of its exact value (the flatter one has smaller scores)
        h_bound = entropy_bound(attention_bound(trace, layer), trace.n_tokens)
        assert bool((flatter >= correct - 2 * h_bound).all()), (layer, correct, flatter)
        assert float(flatter.mean()) > float(correct.mean())
        # the entropy itself, against a direct computation from the trace's exact maps
        maps = trace.attentions(layer).double()
        direct = -(maps * torch.where(maps > 0, maps.log(), torch.zeros_like(maps))).sum(-1).mean(-1)
        torch.testing.assert_close(correct.double(), direct, atol=h_bound, rtol=0)


def test_parameter_counts_are_exact(smollm2, minilm):
    for model, D, biases in ((smollm2, 64, False), (minilm, 32, True)):
        textbook = MultiHeadAttention.from_model(model, 1)
        shared = TutorialAttention(textbook, Departures(shared_projection=True))
        counts = scratch_checks.parameter_counts(textbook, shared)
        hf = list(model.attention_modules[1].parameters())
        if model is minilm:  # BERT keeps W_o in the next block (its LayerNorm is not attention)
            hf += list(model.base.encoder.layer[1].attention.output.dense.parameters())
        assert counts.textbook == sum(p.numel() for p in hf)
        d = model.config.hidden_size
        assert counts.output == d * d + (d if biases else 0)
        assert counts.qkv_tutorial == 3 * D * D + (3 * D if biases else 0)
        assert counts.tutorial == counts.qkv_tutorial + counts.output
    # SmolLM2 by hand: q, o 576×576; k, v 576×192 (3 kv heads × 64); tutorial: 3·64² + 576².
    assert scratch_checks.parameter_counts(
        MultiHeadAttention.from_model(smollm2, 0),
        TutorialAttention(MultiHeadAttention.from_model(smollm2, 0), Departures(shared_projection=True)),
    ) == scratch_checks.ParameterCounts(884_736, 344_064, 552_960, 12_288, 331_776)


RIDGE = inspect.signature(TutorialAttention.fit_shared_projection).parameters["ridge"].default


def fit_error(slices: torch.Tensor) -> float:
    """The fitted shared matrix's error, relative to its norm. The ridge λ = RIDGE·mean(σ²) shrinks the solution
    along each singular direction by λ/(σ² + λ) ≤ RIDGE·cond²; float32 targets (x_h @ W over D terms) move it by
    cond times their own relative error."""
    cond = float(torch.linalg.cond(slices.double()))
    return RIDGE * cond**2 + cond * f32_dot_bound(slices.shape[-1], 1.0)


def test_shared_fit_recovers_a_layer_that_really_is_shared():
    """If every head's matrix is one shared matrix applied to its own slice, the fit finds it and the outputs agree."""
    torch.manual_seed(2)
    d, H, D, T = 32, 4, 8, 40
    textbook = MultiHeadAttention(d, H, D)
    shared = {name: torch.randn(D, D) * 0.3 for name in "qkv"}
    with torch.no_grad():
        for name, w in shared.items():
            per_head = torch.zeros(H, d, D)
            for h in range(H):
                per_head[h, h * D : (h + 1) * D] = w  # head h reads only its slice, with the shared matrix
            getattr(textbook, f"w_{name}").copy_(per_head)
    x = torch.randn(T, d)
    variant = tutorial_variant(textbook, Departures(shared_projection=True), x)
    delta = fit_error(variant.head_slices(x).reshape(-1, D))
    assert all(r > 1 - delta**2 for r in variant.fit.r2.values())  # 1 − R² = ‖y − ŷ‖² / ‖y − ȳ‖²
    torch.testing.assert_close(variant.shared_q, shared["q"], atol=delta * float(shared["q"].norm()), rtol=0)
    allowed = causal_allowed(T, T)
    with torch.inference_mode():
        mine, theirs = variant(x, allowed), textbook(x, allowed)
    # q, k, v off by δ (relative) move the scores by 2δ·|s|, p by twice that (s and lse), the output by δ more (v);
    # on top, the two modules round apart as any two evaluations of the layer do.
    scores = score_size(theirs.q, theirs.k, textbook.scale, allowed)
    size = float(theirs.out.abs().max())
    bound = (4 * scores + 1) * delta * size + attention_output_bound(probs_bound(D, T, scores), T, 2 * d, size)
    torch.testing.assert_close(mine.out, theirs.out, atol=bound, rtol=0)


def test_shared_fit_on_real_layer_is_the_least_squares_optimum(smollm2_layer):
    textbook, _, x, allowed = smollm2_layer
    variant = tutorial_variant(textbook, Departures(shared_projection=True), x)
    slices = variant.head_slices(x).reshape(-1, 64).double()
    target = textbook.project(x)[0].reshape(-1, 64).double()
    best = torch.linalg.lstsq(slices, target).solution
    # the same float64 targets: only the ridge's shrinkage, and the cast of the solution to float32
    cond = float(torch.linalg.cond(slices))
    bound = RIDGE * cond**2 * float(best.norm()) + f32_dot_bound(1, float(best.abs().max()))
    torch.testing.assert_close(variant.shared_q.double(), best, atol=bound, rtol=0)
    assert 0 < variant.fit.r2["q"] < 1
    with torch.inference_mode():
        probs = variant(x, allowed).probs
    assert probs.shape == (9, x.shape[0], x.shape[0])
    assert 0 <= scratch_checks.head_diversity(probs) <= 1


def test_head_diversity_is_zero_for_identical_heads_and_one_for_disjoint():
    same = torch.softmax(torch.randn(1, 5, 5), -1).expand(3, 5, 5)
    assert scratch_checks.head_diversity(same) == 0.0  # |p − p| is exactly 0
    eye = torch.eye(4)
    disjoint = torch.stack([eye, eye.roll(1, 1)])
    assert scratch_checks.head_diversity(disjoint) == 1.0  # ½·(1 + 1) in every row, exactly


def test_mask_fill_is_exact_in_float32_and_overflows_in_float16(smollm2_layer):
    textbook, ours, _, allowed = smollm2_layer
    table = {(f.dtype, f.fill): f for f in scratch_checks.mask_fill_table(ours, textbook.scale, allowed)}
    for fill in scratch_checks.MASK_FILLS:
        assert table[("float32", fill)].max_abs_diff == 0.0
    assert table[("float16", "−1e20 (tutorial)")].error and "overflow" in table[("float16", "−1e20 (tutorial)")].error
    assert table[("float16", "dtype's lowest finite")].max_abs_diff == 0.0
    assert table[("float32", "−∞ (textbook)")].padding_row == "NaN"
    assert table[("float32", "−1e20 (tutorial)")].padding_row == "uniform"
    # directly: the tutorial's fill in float32 gives the same softmax as −∞, and cannot be written into float16
    scores = torch.randn(4, 4)
    mask = ~causal_allowed(4, 4)
    assert torch.equal(torch.softmax(scores.masked_fill(mask, TUTORIAL_FILL), -1),
                       torch.softmax(scores.masked_fill(mask, -math.inf), -1))
    with pytest.raises(RuntimeError, match="overflow"):
        scores.half().masked_fill(mask, TUTORIAL_FILL)


# ---- item 3: kernels and devices -------------------------------------------------------------------------------------
def test_every_kernel_gives_the_same_numbers_on_cpu():
    shape = kernels.Shape(n_heads=3, head_dim=16, causal=True)
    rows, missing = kernels.sweep("cpu", shape, lengths=[64, 128], repeats=1, measure_memory=False)
    methods = {r.method for r in rows}
    assert {kernels.SCRATCH, kernels.SDPA_DEFAULT, "SDPA math", kernels.RECORDER} <= methods
    assert methods | {m.method for m in missing} == set(kernels.all_methods())
    bounds = {}
    for n in (64, 128):  # each method against the textbook, on the sweep's own seeded inputs
        q, k, v = kernels.make_inputs(n, shape, "cpu")
        p_bound = probs_bound(shape.head_dim, n, score_size(q, k, shape.head_dim**-0.5, causal_allowed(n, n)))
        bounds[n] = attention_output_bound(p_bound, n, 0, float(v.abs().max()))
    for row in rows:
        assert row.seconds > 0 and row.dtype == "float32"
        assert row.max_abs_diff <= bounds[row.n], row
    # the sweep's reference is the textbook: compare it once more against a direct computation
    q, k, v = kernels.make_inputs(64, shape, "cpu")
    scores = (q @ k.transpose(-1, -2) / 4).masked_fill(~causal_allowed(64, 64), -math.inf)
    # × 0.25 and ÷ 4 are the same exact operation, and the rest runs the same ops in the same order
    assert torch.equal(attention_core(q, k, v, 0.25, causal_allowed(64, 64))[0], scores.softmax(-1) @ v)


def test_fused_kernels_do_not_allocate_the_n_by_n_matrix():
    shape = kernels.Shape(n_heads=4, head_dim=32, causal=True)
    n = 512
    matrix = shape.n_heads * n * n * 4  # bytes of one (H, n, n) float32 matrix
    q, k, v = kernels.make_inputs(n, shape, "cpu")
    cpu = torch.device("cpu")
    scratch_peak = kernels.peak_memory(kernels._method_fn(kernels.SCRATCH, q, k, v, shape), cpu)
    fused_peak = kernels.peak_memory(kernels._method_fn(kernels.SDPA_DEFAULT, q, k, v, shape), cpu)
    assert scratch_peak >= 2 * matrix  # scores and probabilities alive together
    assert fused_peak < matrix / 4
    assert fused_peak >= q.numel() * 4  # it still writes its (H, n, D) output


def test_scratch_module_runs_on_cuda_with_the_same_numbers(smollm2):
    if not torch.cuda.is_available():
        pytest.skip(NO_GPU)
    trace = smollm2.trace(TEXT)
    gpu = explorer.load("smollm2", device="cuda")
    for layer in (0, 17, 29):
        cpu_out = scratch_checks.run_scratch(MultiHeadAttention.from_model(smollm2, layer), trace, layer)
        gpu_module = MultiHeadAttention.from_model(gpu, layer)
        assert gpu_module.w_q.device.type == "cuda"
        record = trace.record(layer)
        with torch.inference_mode():
            gpu_out = gpu_module(trace.x(layer).cuda(), allowed=record.allowed_matrix().cuda())
        assert max_diff(gpu_out.out.cpu(), cpu_out.out) <= output_bound(smollm2, trace, layer, cpu_out.out)
        assert max_diff(gpu_out.probs.cpu(), cpu_out.probs) <= attention_bound(trace, layer)
    gpu_results = scratch_checks.parity(gpu, gpu.encode(TEXT), layers=[0, 29])
    assert_parity(gpu, gpu.trace(TEXT), gpu_results)


def test_kernels_agree_between_cpu_and_cuda():
    if not torch.cuda.is_available():
        pytest.skip(NO_GPU)
    shape = kernels.Shape()
    agreement = kernels.device_agreement(256, shape)
    assert kernels.SCRATCH in agreement and kernels.SDPA_DEFAULT in agreement
    q, k, v = kernels.make_inputs(256, shape, "cpu")
    p_bound = probs_bound(shape.head_dim, 256, score_size(q, k, shape.head_dim**-0.5, causal_allowed(256, 256)))
    bound = attention_output_bound(p_bound, 256, 0, float(v.abs().max()))
    assert all(diff <= bound for diff in agreement.values()), agreement
