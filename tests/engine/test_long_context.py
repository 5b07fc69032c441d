"""Long texts (issue 14, part 2): x rebuilt from the hidden states instead of kept twice, logits only where asked,
exact windows of a head's map and the top keys of one query. Small n here; the 8k memory figures are in
benchmarks/bench_long_context.py."""

from __future__ import annotations

import pytest
import torch

from explorer.capture import trace as trace_module
from explorer.capture.recorder import AttentionRecord, sliding_allowed
from explorer.capture.trace import Trace
from explorer.errors import ExplorerError

TEXT = "Attention lets every token look back at the others. " * 6
EPS32 = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def trace(smollm2):
    return smollm2.trace(TEXT)


def _hooked_input(model, layer: int) -> torch.Tensor:
    """The attention module's input, seen by a plain forward pre-hook on a fresh forward pass: the reference."""
    seen = {}

    def hook(module, args, kwargs):
        seen["x"] = kwargs.get("hidden_states", args[0] if args else None)[0].clone()

    handle = model.attention_modules[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            model.base(input_ids=torch.tensor([TEXT_IDS[model.name]]), use_cache=False)
    finally:
        handle.remove()
    return seen["x"]


TEXT_IDS: dict[str, list[int]] = {}


@pytest.mark.parametrize("name", ["smollm2", "minilm"])
def test_x_is_rebuilt_not_kept_and_equals_the_module_input(name, request):
    model = request.getfixturevalue(name)
    trace = model.trace(TEXT)
    TEXT_IDS[name] = trace.token_ids
    assert all(r.x is None for r in trace.records)  # the norm (Llama) or identity (BERT) was found for every layer
    for layer in (0, trace.n_layers // 2, trace.n_layers - 1):
        # The same module on the same hidden state, shapes and threads: deterministic kernels, so bit-for-bit.
        assert torch.equal(trace.x(layer), _hooked_input(model, layer).float())


def test_nbytes_counts_x_once(smollm2, trace):
    size = lambda t: t.numel() * t.element_size()  # noqa: E731
    expected = sum(size(h) for h in trace.hidden_states)
    expected += sum(size(r.q) + size(r.k) + size(r.v) + size(r.lse) for r in trace.records)
    assert trace.nbytes() == expected
    kept = smollm2.trace(TEXT, keep_inputs=False)
    assert kept.nbytes() == expected and not kept.has_x(0)
    with pytest.raises(ExplorerError):
        kept.x(0)


def test_logits_at_equals_the_lm_head_rows(smollm2, trace):
    positions = [0, 5, trace.n_tokens - 1]
    with torch.inference_mode():
        reference = smollm2.hf(input_ids=torch.tensor([trace.token_ids])).logits[0, positions]  # (3, vocab)
    got = trace.logits_at(positions)
    # The unembedding on 3 rows vs all rows: one dot product of d = 576 terms each, summed in another order at most:
    # ε32·√d·max|logit| per entry.
    bound = EPS32 * 576**0.5 * float(reference.abs().max())
    assert got.shape == reference.shape
    assert float((got - reference).abs().max()) <= bound
    assert torch.equal(trace.logits_at(slice(2, 4)), trace.logits_at([2, 3]))
    with pytest.raises(ExplorerError):
        trace.logits_at([trace.n_tokens])


def test_logits_of_every_position_refused_above_the_limit(smollm2, monkeypatch):
    fresh = smollm2.trace(TEXT)
    monkeypatch.setattr(trace_module, "LOGITS_LIMIT_BYTES", fresh.n_tokens * smollm2.vocab_size * 4 - 1)
    with pytest.raises(ExplorerError, match="logits_at"):
        fresh.logits
    assert fresh.logits_at([1]).shape == (1, smollm2.vocab_size)  # the few rows a page needs still work


@pytest.mark.parametrize("queries,keys", [(slice(10, 40), slice(3, 30)), (slice(None), slice(0, 1)), (slice(50, 51), slice(None))])
def test_attention_window_equals_the_full_map_block(trace, queries, keys):
    layer, head = trace.n_layers - 2, 4
    full = trace.attention(layer, head)[queries, keys]
    got = trace.attention_window(layer, head, queries, keys)
    assert got.shape == full.shape
    assert torch.allclose(got, full, rtol=_block_rtol(trace, layer, head), atol=1e-7)


def _block_rtol(trace, layer: int, head: int) -> float:
    """Same formula on a sub-block: each score is one dot product of head_dim terms, perhaps summed in another order
    (ε32·√D·max|q|·|k|·scale), and exp(s − lse) turns that into the same relative error of p."""
    r = trace.record(layer)
    max_score = float((r.q[head].norm(dim=-1).max() * r.k[head // r.group_size].norm(dim=-1).max()) * r.scale)
    return EPS32 * trace.head_dim**0.5 * max_score


def test_window_rejects_empty_ranges(trace):
    with pytest.raises(ExplorerError):
        trace.attention_window(0, 0, slice(5, 5))
    with pytest.raises(ExplorerError):
        trace.top_keys(0, 0, trace.n_tokens)


def test_top_keys_are_the_heaviest_of_the_row(trace):
    layer, head, query = trace.n_layers - 1, 1, trace.n_tokens - 1
    positions, weights = trace.top_keys(layer, head, query, k=5)
    row = trace.attention(layer, head)[query]
    reference = row.topk(5)
    assert torch.equal(positions, reference.indices)
    assert torch.allclose(weights, reference.values, rtol=_block_rtol(trace, layer, head), atol=1e-7)
    assert trace.top_keys(layer, head, 0, k=5)[0].tolist() == [0]  # query 0 sees only itself


@pytest.mark.parametrize("kind", ["sliding", "bidirectional"])
def test_window_of_synthetic_records_matches_softmax(kind):
    """Sliding (Gemma 3's local layers, kept as one int) and bidirectional records against a plain masked softmax."""
    torch.manual_seed(0)
    H, T, D, window = 2, 40, 8, 7
    q, k, v = torch.randn(H, T, D), torch.randn(1, T, D), torch.randn(1, T, D)
    allowed = sliding_allowed(T, T, window) if kind == "sliding" else torch.ones(T, T, dtype=torch.bool)
    scores = (q @ k.transpose(-1, -2) * D**-0.5).masked_fill(~allowed, float("-inf"))  # (H, T, T)
    reference = torch.softmax(scores, dim=-1)
    record = AttentionRecord(0, q, k, v, torch.logsumexp(scores, -1), D**-0.5, kind, None,
                             window=window if kind == "sliding" else None)
    trace = Trace(TEXT, ["t"] * T, list(range(T)), [record], kind, True, "synthetic")
    got = trace.attention_window(0, 1, slice(20, 35), slice(5, 30))
    # float32 softmax vs exp(s − lse) of the same scores: a few ulps of p.
    assert torch.allclose(got, reference[1, 20:35, 5:30], rtol=8 * EPS32, atol=1e-7)


# ---- figures and the GPU check script ---------------------------------------------------------------------------
def test_window_heatmap_shows_exact_cells_labelled_by_position(trace):
    from explorer.figures.long_context import MAX_WINDOW, top_keys_chart, window_heatmap

    probs = trace.attention_window(3, 0, slice(20, 50), slice(10, 40)).numpy()
    fig = window_heatmap(probs, trace.tokens, 20, 10, title="w")
    z = fig.data[0].z
    assert z.shape == probs.shape and (z == probs).all()  # no block means: the cells themselves
    assert fig.data[0].y[0].startswith("20\u2002") and fig.data[0].x[0].startswith("10\u2002")  # text positions
    with pytest.raises(ValueError):
        window_heatmap(torch.zeros(MAX_WINDOW + 1, 2).numpy(), ["t"] * (MAX_WINDOW + 1), 0, 0, title="w")
    positions, weights = trace.top_keys(3, 0, 40, k=4)
    bars = top_keys_chart(positions.tolist(), weights.tolist(), trace.tokens, 40)
    assert list(bars.data[0].x) == pytest.approx(weights.tolist())
    assert [y.split("\u2002")[0] for y in bars.data[0].y] == [str(p) for p in positions.tolist()]


def test_gpu_check_without_cuda_and_its_table(monkeypatch, capsys):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "gpu_check.py")
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main() == 0
    assert capsys.readouterr().out.strip() == gpu_check.NO_CUDA
    text = gpu_check.table([("capture overhead, n = 4096", "1.04×", "medians"), ("CUDA tests", "pass", "3 passed")])
    assert text.splitlines() == ["| check | result | note |", "|---|---|---|",
                                 "| capture overhead, n = 4096 | 1.04× | medians |", "| CUDA tests | pass | 3 passed |"]
