"""The pages other than Home and the heads page on a text as long as the app's cap (1,024 tokens by default): no
error, nothing sent over 1.5 MB, block means said to be block means, and each refusal at long lengths a clear message
that keeps the page working. A page's numbers are checked by its own tests and the streamed computations by
tests/engine/test_long_pages.py; the 8,192-token survey is benchmarks/long_pages_survey.py (minutes a page on two cores).
"""

from __future__ import annotations

import pytest
from apptest_helpers import assert_clean, open_page
from texts import LONG_TEXT

from explorer.ui import analysis as ua, scratch as us, state
import explorer
import explorer.ui.generation as ui_generation

pytestmark = pytest.mark.usefixtures("navigation_like_a_server")
BUDGET = 1_500_000  # bytes of one element on the wire (issue 14)


def largest_elements(at) -> dict[str, int]:
    """Protobuf size of every chart and table the run sent, by key."""
    return {f"{kind} {el.proto.id.rsplit('-', 1)[-1]}": el.proto.ByteSize()
            for kind in ("plotly_chart", "dataframe") for el in at.get(kind)}


def assert_within_budget(at) -> None:
    assert_clean(at)
    sizes = largest_elements(at)
    assert sizes and max(sizes.values()) <= BUDGET, sizes


@pytest.fixture(scope="module")
def long_state():
    assert state.settings().max_tokens == 1024  # the default cap: these tests run at it
    return dict(model_choice="smollm2", text=LONG_TEXT)


def spec(at, index: int) -> str:
    return at.get("plotly_chart")[index].proto.spec


def test_rollout_on_a_long_text_is_labelled_block_means(long_state):
    at = open_page("pages/analysis.py", analysis_section="Rollout", **long_state)
    assert_within_budget(at)
    assert "downsampled" in spec(at, 0) and "block" in spec(at, 0)  # the title and the hover say what a cell is
    assert any(c.value.startswith("Long text (1,024 tokens): each cell is the exact mean") for c in at.caption)


def test_export_and_geometry_on_a_long_text(long_state, monkeypatch):
    at = open_page("pages/analysis.py", analysis_section="Export", **long_state)
    assert_within_budget(at)
    assert "This head's map as CSV (layer 0, head 0)" in [b.label for b in at.get("download_button")]
    monkeypatch.setattr(ua, "CSV_MAX_TOKENS", 512)  # a text over the CSV limit: a message, the .npz still offered
    at.run()
    assert_within_budget(at)
    labels = [b.label for b in at.get("download_button")]
    assert not any("CSV" in label for label in labels) and "The whole trace as .npz" in labels
    assert any(c.value.startswith("No CSV of this map: 1,024 × 1,024 cells") for c in at.caption)
    at = open_page("pages/analysis.py", analysis_section="Q/K geometry", **long_state)
    assert_within_budget(at)


@pytest.mark.parametrize("mode", ["texts", "masks", "models"])
def test_compare_on_a_long_text(long_state, mode):
    at = open_page("pages/compare.py", compare_mode=mode, compare_text_b=LONG_TEXT.replace("Tuesday", "Monday"),
                   **long_state)
    assert_within_budget(at)
    charts = at.get("plotly_chart")
    assert len(charts) in ((2, 3) if mode == "models" else (3,))  # two tokenizers: a difference only if as long
    assert all("downsampled" in c.proto.spec for c in charts)
    if mode != "models":
        assert len(at.metric) == 3  # largest, mean, most changed: from every cell, not the block means


def test_scratch_cuts_a_text_longer_than_it_can_hold(long_state, monkeypatch):
    monkeypatch.setattr(us, "SCRATCH_MAX_TOKENS", 256)
    at = open_page("pages/scratch.py", scratch_tab="The tutorial variant", **long_state)
    assert_within_budget(at)
    assert any(i.value.startswith("The text has") and "this page works on the first 256" in i.value for i in at.info)
    assert not any("AE_MAX_TOKENS" in i.value for i in at.info)  # one notice, the page's own


def test_generation_leaves_room_for_new_tokens_in_the_context(long_state, monkeypatch):
    context = 1000  # as if SmolLM2's context were shorter than the 1,024-token prompt: it would be full at once
    monkeypatch.setattr(explorer.Model, "max_positions", property(lambda model: context))
    at = open_page("pages/generation.py", model_choice="smollm2", gen_prompt=LONG_TEXT)
    assert_within_budget(at)
    steps = state.settings().max_generation_steps
    assert any(f"generation continues from the first {context - steps:,}" in i.value for i in at.info)
    at.button(key="gen_sample").click().run()
    assert_within_budget(at)
    assert len(at.session_state[ui_generation.STEPPER].steps) == 1


def test_generation_with_a_full_context_says_so(monkeypatch):
    """A prompt that fills the context (the model's own limit, under the page's cut) shows why, not an error."""
    monkeypatch.setattr(explorer.Model, "max_positions", property(lambda model: 8))
    monkeypatch.setattr(ui_generation, "prompt_limit", lambda model, steps, cap: cap)  # no room left on purpose
    at = open_page("pages/generation.py", model_choice="smollm2", gen_prompt=LONG_TEXT[:200])
    assert_clean(at)
    assert any("The context is full" in i.value for i in at.info)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_intervene_on_a_long_text(long_state, ablation):
    at = open_page("pages/intervene.py", intervene_heads=[(17, 3)], intervene_source="text",
                   intervene_ablation=ablation, intervene_continue=2, **long_state)
    assert_within_budget(at)
    assert len(at.get("plotly_chart")) == 4  # loss, next tokens, the head's map before and after
    assert len(at.code) == 2  # both continuations
