"""Words (trace.words) and attention by word (Clark et al.'s rule), on the three embedded models.

References: pure-Python jieba 0.42.1 (the segmenter rjieba binds, in its original implementation) for the words of
Chinese text; a hand-computed (W, W) map for the aggregation; the token maps themselves for every by-word reader.
"""

from __future__ import annotations

import jieba
import pytest
import rjieba
import torch

from explorer.analysis.rollout import mixing_matrix, trace_rollout, word_rollout
from explorer.analysis.stats import TEXT_STATISTICS
from explorer.analysis.word_stats import word_statistics
from explorer.capture.word_trace import WordTrace, by_unit
from explorer.capture.words import Word, by_word, char_words, segment, spans_from_labels
from explorer.errors import ExplorerError

from bounds import EPS32, attention_bound, f32_dot_bound

ENGLISH = "The cat sat on the mat."
CHINESE = "我们今天去公园散步。"  # Gemma 3 cuts 散步 in two; SmolLM2 cuts every character into byte pieces
MIXED = "GPT-3 是一个自回归模型"
SPLIT_BY_GEMMA = "猫坐在垫子上。"  # Gemma 3's token 子上 crosses jieba's 垫子 | 上
TEXTS = (ENGLISH, CHINESE, MIXED)
HAN_TEXTS = (CHINESE, SPLIT_BY_GEMMA, "大规模语言模型是一种机器学习模型。", "注意力机制很重要，他在北京工作。")


def jieba_words(text: str) -> list[str]:
    """jieba's own segmentation, whitespace dropped (words never hold it)."""
    return [w for w in jieba.lcut(text) if not w.isspace()]


def text_words(trace) -> list[str]:
    """The words of a trace that cover text (special tokens' words left out)."""
    return [w.text for w in trace.words() if any(e > s for s, e in trace.offsets[w.start : w.end])]


@pytest.fixture(scope="module")
def traces(smollm2, minilm):
    return {(name, text): model.trace(text) for name, model in (("smollm2", smollm2), ("minilm", minilm))
            for text in TEXTS + (SPLIT_BY_GEMMA,)}


@pytest.fixture(scope="module")
def gemma_traces(gemma3):
    return {text: gemma3.trace(text) for text in TEXTS + (SPLIT_BY_GEMMA,)}


# ---- the segmenter --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", HAN_TEXTS)
def test_rjieba_cuts_han_text_as_jieba_does(text):
    assert rjieba.cut(text) == jieba.lcut(text)


def test_rjieba_and_jieba_differ_outside_han_text_so_only_han_runs_go_to_it():
    # rjieba keeps "GPT-3" whole where jieba cuts it; words never ask the segmenter about anything but Han runs.
    assert rjieba.cut(MIXED)[0] == "GPT-3" and jieba.lcut(MIXED)[:3] == ["GPT", "-", "3"]
    ids = char_words(MIXED)
    words = [MIXED[ids.index(w) : len(ids) - ids[::-1].index(w)] for w in sorted(set(ids) - {-1})]
    assert words == jieba_words(MIXED)


def test_apostrophes_inside_a_word_and_runs_of_one_mark():
    ids = char_words("don't stop...")
    groups = [sorted(i for i, w in enumerate(ids) if w == g) for g in sorted(set(ids) - {-1})]
    assert ["".join("don't stop..."[i] for i in g) for g in groups] == ["don't", "stop", "..."]


# ---- words of real traces -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smollm2", "minilm"])
@pytest.mark.parametrize("text", TEXTS)
def test_words_are_jiebas_words(traces, name, text):
    assert text_words(traces[name, text]) == jieba_words(text)


@pytest.mark.parametrize("text", TEXTS)
def test_gemma3_words_are_jiebas_words(gemma_traces, text):
    assert text_words(gemma_traces[text]) == jieba_words(text)


def test_a_token_across_a_word_boundary_joins_the_words(traces, gemma_traces):
    # SmolLM2's pieces never cross jieba's boundaries here; Gemma 3's token 子上 does, so 垫子 + 上 is one word there.
    assert text_words(traces["smollm2", SPLIT_BY_GEMMA]) == jieba_words(SPLIT_BY_GEMMA) == ["猫", "坐在", "垫子", "上", "。"]
    gemma = gemma_traces[SPLIT_BY_GEMMA]
    assert text_words(gemma) == ["猫", "坐在", "垫子上", "。"]
    word = next(w for w in gemma.words() if w.text == "垫子上")
    assert [gemma.tokens[i] for i in range(word.start, word.end)] == ["垫", "子上"]


def test_words_cover_the_tokens_in_order(traces, gemma_traces):
    for trace in [*traces.values(), *gemma_traces.values()]:
        words = trace.words()
        assert words[0].start == 0 and words[-1].end == trace.n_tokens
        assert all(a.end == b.start and a.start < a.end for a, b in zip(words, words[1:]))


def test_byte_pieces_stay_in_their_word(traces, gemma_traces):
    smol = traces["smollm2", CHINESE]
    pieces = {w.text: [smol.tokens[i] for i in range(w.start, w.end)] for w in smol.words()}
    assert pieces["散步"] == ["散", "…散", "步", "…步"]  # two characters, two byte pieces each
    for w in smol.words():  # no word starts on a continuation piece
        assert not smol.tokens[w.start].startswith("…")
    gemma = gemma_traces[CHINESE]
    assert {w.text: w.n_pieces for w in gemma.words()}["散步"] == 2  # 散, 步: two whole-character tokens


def test_special_tokens_are_words_of_their_own(traces, gemma_traces):
    bert = traces["minilm", ENGLISH].words()
    assert (bert[0].text, bert[0].n_pieces, bert[-1].text, bert[-1].n_pieces) == ("[CLS]", 1, "[SEP]", 1)
    gemma = gemma_traces[ENGLISH].words()
    assert (gemma[0].text, gemma[0].n_pieces) == ("<bos>", 1)


def test_wordpiece_continuations_join_their_word(minilm):
    trace = minilm.trace("Unbelievably, tokenization works!")
    words = {w.text: [trace.tokens[i] for i in range(w.start, w.end)] for w in trace.words()}
    assert words["tokenization"] == ["token", "ization"]  # '##ization' in the tokenizer's own spelling
    assert minilm.raw_tokens(trace.token_ids)[trace.tokens.index("ization")] == "##ization"


@pytest.mark.parametrize("text", TEXTS)
def test_all_three_models_give_the_same_words(traces, gemma_traces, text):
    assert text_words(traces["smollm2", text]) == text_words(traces["minilm", text]) == text_words(gemma_traces[text])


def test_words_of_a_cut_trace_cover_the_kept_tokens(smollm2):
    trace = smollm2.trace(CHINESE, max_tokens=5)
    assert trace.words()[-1].end == 5 and len(trace.offsets) == 5


def test_without_offsets_the_labels_are_laid_end_to_end():
    text, spans = spans_from_labels(["猫", "…猫", "…猫", "坐", "在"], [False] * 5)
    assert text == "猫坐在" and spans == [(0, 1), (0, 1), (0, 1), (1, 2), (2, 3)]
    words = segment(text, spans, ["猫", "…猫", "…猫", "坐", "在"])
    assert [(w.start, w.end, w.text) for w in words] == [(0, 3, "猫"), (3, 5, "坐在")]


# ---- the aggregation rule -------------------------------------------------------------------------------------------
def test_by_word_against_a_hand_computed_map():
    a = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                      [0.5, 0.5, 0.0, 0.0],
                      [0.2, 0.3, 0.5, 0.0],
                      [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    words = [Word(0, 1, "a"), Word(1, 3, "bc"), Word(3, 4, "d")]
    # to a word: the sum of its keys' columns; from a word: the mean of its queries' rows
    expected = torch.tensor([[1.0, 0.0, 0.0],
                             [(0.5 + 0.2) / 2, (0.5 + 0.0 + 0.3 + 0.5) / 2, 0.0],
                             [0.1, 0.2 + 0.3, 0.4]], dtype=torch.float64)
    got = by_word(a, words)
    assert torch.allclose(got, expected, rtol=0, atol=4 * torch.finfo(torch.float64).eps)
    assert torch.allclose(got.sum(-1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)
    stacked = by_word(torch.stack([a, a.flip(0)]), words)  # (H, n, n) → (H, W, W), head by head
    assert torch.equal(stacked[0], got) and torch.equal(stacked[1], by_word(a.flip(0), words))


def test_by_word_refuses_words_that_do_not_cover_the_tokens():
    with pytest.raises(ExplorerError):
        by_word(torch.eye(3), [Word(0, 1, "a"), Word(2, 3, "c")])
    with pytest.raises(ExplorerError):
        by_word(torch.eye(3), [Word(0, 2, "a")])


@pytest.mark.numeric
@pytest.mark.parametrize("key", [("smollm2", CHINESE), ("minilm", MIXED)])
def test_word_rows_sum_to_one_and_equal_the_rule(traces, key):
    trace = traces[key]
    n = trace.n_tokens
    for layer in (0, trace.n_layers - 1):
        for head in range(trace.n_heads):
            tokens = trace.attention(layer, head)
            words = trace.attention(layer, head, by="word")
            token_error = float((tokens.double().sum(-1) - 1).abs().max())
            assert float((words.double().sum(-1) - 1).abs().max()) <= token_error + f32_dot_bound(n, 1.0)
            assert torch.allclose(words, by_word(tokens.double(), trace.words()).float(), rtol=0,
                                  atol=f32_dot_bound(n, 1.0))


@pytest.mark.numeric
def test_gemma3_word_rows_sum_to_one(gemma_traces):
    trace = gemma_traces[CHINESE]
    words = trace.attention(5, 0, by="word")
    assert words.shape == (len(trace.words()),) * 2
    token_error = float((trace.attention(5, 0).double().sum(-1) - 1).abs().max())
    assert float((words.double().sum(-1) - 1).abs().max()) <= token_error + f32_dot_bound(trace.n_tokens, 1.0)


def test_attention_refuses_an_unknown_unit(traces):
    with pytest.raises(ExplorerError):
        traces["smollm2", ENGLISH].attention(0, 0, by="character")


# ---- the word view of a trace, rollout and statistics ------------------------------------------------------------------
@pytest.mark.numeric
def test_word_trace_readers_equal_the_rule(traces):
    trace = traces["smollm2", MIXED]
    view = WordTrace(trace)
    n, W = trace.n_tokens, len(trace.words())
    # The word view reads rows through attention_window, another evaluation of the same p than attentions': they
    # agree within attention_bound (relative to p, so a word's sum of pieces too), plus the rounding of the sums.
    bound = attention_bound(trace, 7) + f32_dot_bound(n, 1.0)
    expected = by_word(trace.attentions(7).double(), trace.words())  # (H, W, W)
    blocks = list(view.row_blocks(7, max_bytes=8 * trace.n_heads * n * 4))  # whole words of ≤ 4 token rows a block
    assert blocks[0][0].start == 0 and blocks[-1][0].stop == W and len(blocks) > 1
    assert all(a[0].stop == b[0].start for a, b in zip(blocks, blocks[1:]))
    for rows, _keys, _p in blocks:
        words = trace.words()[rows]
        assert len(words) == 1 or words[-1].end - words[0].start <= 4
    assert torch.allclose(torch.cat([b[2] for b in blocks], dim=1).double(), expected, rtol=0, atol=bound)
    assert torch.allclose(view.attention_window(7, 4, queries=slice(2, 5), keys=slice(0, 3)).double(),
                          expected[4, 2:5, 0:3], rtol=0, atol=bound)
    positions, weights = view.top_keys(7, 4, query=W - 1, k=3)
    assert torch.allclose(weights.double(), expected[4, W - 1].sort(descending=True).values[:3], rtol=0, atol=bound)
    assert view.tokens == [w.text for w in trace.words()] and view.n_tokens == W
    assert (view.n_layers, view.n_heads, view.text) == (trace.n_layers, trace.n_heads, trace.text)
    assert by_unit(view, "tokens") is trace and by_unit(trace, "words").n_tokens == W


@pytest.mark.numeric
def test_word_rollout_aggregates_the_token_rollout(traces):
    trace = traces["smollm2", CHINESE]
    rolled = word_rollout(trace)
    assert torch.allclose(rolled, by_word(trace_rollout(trace), trace.words()), rtol=0, atol=0)
    assert torch.allclose(rolled.sum(-1), torch.ones(rolled.shape[0], dtype=torch.float64), rtol=0,
                          atol=trace.n_layers * f32_dot_bound(trace.n_tokens, 1.0))
    # Rolling out the word maps instead is another quantity (why word_rollout aggregates R): it differs here, over
    # the first three layers (after all 30, both have put nearly everything on the first token, the sink).
    view, last = WordTrace(trace), 2
    of_words = None
    for layer in range(last + 1):
        mixed = mixing_matrix(view.attentions(layer))
        of_words = mixed if of_words is None else mixed @ of_words
    early = word_rollout(trace, last_layer=last)
    assert float((of_words - early).abs().max()) > 1e3 * last * f32_dot_bound(trace.n_tokens, 1.0)


@pytest.mark.numeric
def test_word_statistics_against_the_word_maps(traces):
    trace = traces["smollm2", CHINESE]
    values = word_statistics(trace)
    assert set(values) == {"entropy", "previous_word", "first_word", "self"} and len(TEXT_STATISTICS) == 4
    layer, head = 3, 2
    a = trace.attention(layer, head, by="word").double()  # (W, W)
    W = a.shape[0]
    by_hand = {
        "previous_word": sum(float(a[w, w - 1]) for w in range(1, W)) / (W - 1),
        "first_word": sum(float(a[w, 0]) for w in range(1, W)) / (W - 1),
        "self": sum(float(a[w, w]) for w in range(W)) / W,
        "entropy": float(-(a * a.clamp(min=1e-300).log()).sum(-1).mean()),
    }
    for name, expected in by_hand.items():
        assert abs(values[name][layer, head] - expected) <= f32_dot_bound(trace.n_tokens, 1.0) + 8 * EPS32, name
