"""One key for every cached analysis: a trace's (and a model's) fingerprint. Two different traces never share a
cached result, a fresh trace of the same input finds the one it should, and a trace that is not the sidebar's (here:
the sidebar's text under a mask the sidebar did not choose) is shown its own numbers, not the sidebar trace's."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import explorer
from explorer.capture.word_trace import WordTrace
from explorer.ui.caching import cached

from bounds import attention_bound

TEXT = "The cat sat on the mat."


@pytest.fixture(scope="module")
def tiny_models(tiny_bert_mlm_dir) -> dict[str, explorer.Model]:
    """One tiny BERT in float32 and in bfloat16: the same weights, two computations."""
    return {dtype: explorer.load(str(tiny_bert_mlm_dir), device="cpu", dtype=dtype) for dtype in ("float32", "bfloat16")}


@pytest.fixture(scope="module")
def variants(smollm2, minilm, tiny_models) -> dict[str, explorer.Trace]:
    """Traces that differ in one thing each from ``base``."""
    return {
        "base": smollm2.trace(TEXT),
        "another text": smollm2.trace(TEXT + " It slept."),
        "another mask": smollm2.trace(TEXT, mask="bidirectional"),
        "cut shorter": smollm2.trace(TEXT, max_tokens=4),
        "a head zeroed": smollm2.trace(TEXT, ablate=[(3, 1)]),
        "a head mean-ablated": smollm2.trace(TEXT, ablate=[(3, 1)], ablation="mean"),
        "another model": minilm.trace(TEXT),
        "tiny float32": tiny_models["float32"].trace(TEXT),
        "tiny bfloat16": tiny_models["bfloat16"].trace(TEXT),
    }


def test_different_traces_have_different_fingerprints(smollm2, variants):
    prints = {name: trace.fingerprint for name, trace in variants.items()}
    assert len(set(prints.values())) == len(prints), prints
    assert smollm2.trace(TEXT).fingerprint == prints["base"]  # a fresh trace of the same input: the same entry


def test_different_models_have_different_fingerprints(smollm2, minilm, tiny_models):
    prints = [smollm2.fingerprint, minilm.fingerprint, tiny_models["float32"].fingerprint,
              tiny_models["bfloat16"].fingerprint]
    assert len(set(prints)) == len(prints), prints


def test_a_cached_function_keeps_one_entry_per_trace(variants):
    """Through the one cache helper, each trace gets its own result (its last query's row of layer 0, head 0), and
    asking again is a hit."""
    computed = []

    @cached(max_entries=32)
    def last_row(trace: explorer.Trace) -> np.ndarray:
        computed.append(trace.fingerprint)
        return trace.attention(0, 0)[-1].numpy()

    for _round in range(2):
        for name, trace in variants.items():
            np.testing.assert_array_equal(last_row(trace), trace.attention(0, 0)[-1].numpy(), err_msg=name)
    assert computed == [trace.fingerprint for trace in variants.values()]  # each computed once, in the first round


def test_a_trace_and_its_word_view_never_share_an_entry(smollm2):
    """The sidebar's "tokens | words" switch: one trace seen by token and by word hashes apart (the word view as its
    token trace's fingerprint and its unit), so a word map is never handed a token map, nor the other way round."""
    trace = smollm2.trace("猫坐在垫子上。")  # Chinese characters as byte pieces: fewer words than tokens
    words = WordTrace(trace)
    assert words.n_tokens < trace.n_tokens

    @cached(max_entries=4)
    def first_map(view) -> np.ndarray:
        return view.attention(0, 0).numpy()

    for _round in range(2):
        np.testing.assert_array_equal(first_map(trace), trace.attention(0, 0).numpy())
        np.testing.assert_array_equal(first_map(words), trace.attention(0, 0, by="word").numpy())
        np.testing.assert_array_equal(first_map(WordTrace(trace)), trace.attention(0, 0, by="word").numpy())


def _two_masks_page():
    """A page that draws one head of the sidebar's text under both masks (the sidebar's mask stays "model")."""
    import streamlit as st

    from explorer.ui import maps, resources

    model = resources.model_for("minilm", "cpu")
    for mask in ("causal", "bidirectional"):
        trace = resources.trace_for(model, "The cat sat on the mat.", mask)
        st.session_state[mask] = (maps.head_map(trace, 2, 5).values, trace)


def test_a_trace_that_is_not_the_sidebars_gets_its_own_maps():
    """The key used to read the sidebar's mask, not the trace's: both traces here were keyed alike, and the
    bidirectional one was shown the causal one's map."""
    at = AppTest.from_function(_two_masks_page, default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    for mask in ("causal", "bidirectional"):
        shown, trace = at.session_state[mask]
        reference = trace.attention(2, 5).numpy()
        np.testing.assert_allclose(shown, reference, rtol=0, atol=attention_bound(trace, 2), err_msg=mask)
    causal, bidirectional = at.session_state["causal"][0], at.session_state["bidirectional"][0]
    assert np.abs(np.triu(bidirectional, 1)).max() > 0.05 and np.abs(np.triu(causal, 1)).max() == 0
