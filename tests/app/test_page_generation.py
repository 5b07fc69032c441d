"""The Generation page driven through Streamlit's AppTest: its numbers are the engine's."""

from __future__ import annotations

import html

import pytest
import torch
from apptest_helpers import assert_clean, chart_data, decode, open_page
from bounds import EPS32, attention_bound, f32_dot_bound, model_bound
from streamlit.testing.v1 import AppTest

from explorer.ui import generation as ui_generation
from explorer.escape import md_escape
from explorer.figures.generation import candidate_label
from explorer.decoding.fill_mask import fill_mask
from explorer.decoding.generation import Stepper
from explorer.capture.tokens import Encoded

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")
PAGE = "pages/generation.py"
KNOBS = dict(temperature=0.8, top_k=50, top_p=0.9)  # the page's defaults


@pytest.fixture()
def page() -> AppTest:
    return open_page(PAGE)


def _generated_html(at: AppTest) -> str:
    return next(h.proto.body for h in at.get("html") if "ae-generated-text" in h.proto.body)


def _stage_chart(at: AppTest) -> list[dict]:
    return chart_data(at, "gen_stages")


def _status(at: AppTest) -> str:
    return next(c.value for c in at.caption if "new tokens" in c.value)


def _pick_box(at: AppTest):
    return next(s for s in at.selectbox if s.label == "Pick a candidate")


def _engine(smollm2) -> Stepper:
    return Stepper(smollm2, ui_generation.DEFAULT_PROMPT, seed=0, max_new_tokens=64, **KNOBS)


def _probs_bound(model, step) -> float:
    """The page ran the model in its own script thread, whose float32 sums may go in another order: its logits are
    within model_bound of ours, its probabilities within 2·Δz (softmax), and renormalised ones within twice that."""
    return 4 * model_bound(model, float(step.logits.abs().max()))


def test_sample_back_pick_reset(page, smollm2):
    engine = _engine(smollm2)
    # The stage chart shows the engine's first distribution: softmax panel = the model's own probabilities.
    softmax_bars = _stage_chart(page)[0]
    raw = engine.pending.stages[0].probs
    top = raw.argsort(descending=True)[:12].tolist()
    bound = _probs_bound(smollm2, engine.pending)
    assert softmax_bars["x"][:12] == pytest.approx([float(raw[i]) for i in top], abs=bound)

    page.button(key="gen_sample").click().run()
    assert_clean(page)
    first = engine.step()
    assert page.session_state[ui_generation.STEPPER].generated_ids == [first.token_id]
    assert html.escape(first.token) in _generated_html(page)
    assert _status(page).startswith("1 of at most 64")
    top_p_panel = _stage_chart(page)[-2]  # the top-p panel's kept bars: the engine's final distribution
    pending = engine.pending
    ids = pending.stages[0].probs.argsort(descending=True)[:12].tolist()
    bound = _probs_bound(smollm2, pending)
    assert top_p_panel["x"][:12] == pytest.approx([float(pending.probs[i]) for i in ids], abs=bound)

    page.button(key="gen_back").click().run()
    assert _status(page).startswith("0 of at most")

    box = _pick_box(page)
    assert box.options[2].startswith(f"'{smollm2.decode_token(top[2])}'")  # the third candidate, as shown
    box.set_value(top[2]).run()
    page.button(key="gen_pick").click().run()
    assert_clean(page)
    stepper = page.session_state[ui_generation.STEPPER]
    assert stepper.generated_ids == [top[2]] and stepper.steps[-1].how == "picked"
    assert html.escape(smollm2.decode_token(top[2])) in _generated_html(page)

    page.button(key="gen_reset").click().run()
    assert _status(page).startswith("0 of at most") and page.session_state[ui_generation.STEPPER].steps == []


def test_auto_run_and_greedy(page, smollm2):
    page.number_input(key="gen_auto_n").set_value(3).run()
    page.button(key="gen_auto").click().run()
    assert not page.exception
    engine = _engine(smollm2)
    expected = [s.token_id for s in engine.run(3)]
    assert page.session_state[ui_generation.STEPPER].generated_ids == expected
    page.button(key="gen_greedy").click().run()
    greedy = engine.step(greedy=True)
    assert page.session_state[ui_generation.STEPPER].generated_ids == expected + [greedy.token_id]
    assert _status(page).startswith("4 of at most")


def test_tokens_are_escaped_and_errors_are_messages(page):
    page.text_area(key="gen_prompt").input('<img src=x onerror="alert(1)"> **bold**').run()
    page.button(key="gen_greedy").click().run()
    body = _generated_html(page)
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body and "<img" not in body
    page.text_area(key="gen_prompt").input("   ").run()
    assert not page.exception
    assert any("empty" in e.value for e in page.error)


def test_attention_view_shows_the_engine_row(page, smollm2):
    page.button(key="gen_sample").click().run()
    page.number_input(key="gen_layer").set_value(17).run()
    page.number_input(key="gen_head").set_value(4).run()
    engine = _engine(smollm2)
    engine.step()
    bars = chart_data(page, "gen_attention")[0]
    row = engine.pending.attention(17, 4)
    assert len(bars["x"]) == engine.pending.context_length
    context = engine.context_ids
    trace = smollm2.trace_ids(Encoded("", context, [""] * len(context)), keep_inputs=False)  # for the bound
    assert decode(bars["y"]).tolist() == pytest.approx(row.tolist(), abs=attention_bound(trace, 17))
    page.radio(key="gen_attn_view").set_value("all heads of the layer").run()
    heat = chart_data(page, "gen_attention")[0]
    assert heat["type"] == "heatmap" and len(heat["y"]) == 9


def test_fill_mask_beside_next_token(page, tiny_bert_mlm_dir):
    import explorer

    page.text_input(key="gen_mlm").input(str(tiny_bert_mlm_dir)).run()
    page.button(key="gen_fill").click().run()
    assert_clean(page)
    table = next(d.value for d in page.dataframe if "[MASK] =" in d.value.columns)
    model = explorer.load(str(tiny_bert_mlm_dir), device="cpu")
    result = fill_mask(model, ui_generation.DEFAULT_MASKED, top=8)
    expected = result.predictions[0].candidates
    with torch.inference_mode():
        logits = model.hf(torch.tensor([result.token_ids])).logits[0, result.predictions[0].position]
    # p moves by p·|Δz − Δlse| (the page's run rounds apart from ours), the normaliser sums the vocabulary
    rel = 2 * model_bound(model, float(logits.abs().max())) + f32_dot_bound(model.config.vocab_size, 1.0) + EPS32
    assert table["probability"].tolist() == pytest.approx([c.prob for c in expected], rel=rel)
    assert table["[MASK] ="].tolist() == [candidate_label(c.token) for c in expected]


def test_encoder_model_says_what_works():
    page = open_page(PAGE, model_choice="minilm")
    infos = " ".join(i.value for i in page.info)  # Markdown: the engine's messages arrive escaped (they quote names)
    assert md_escape("encoder without a language-model head") in infos and md_escape("no masked-LM head") in infos
    assert md_escape("bert-base-uncased") in infos

