"""The app's views in a notebook: each function returns the plotly figure a page draws, from the same builder called
the same way, so a notebook and the app never disagree. No Streamlit: a figure shows inline in Jupyter, VS Code
and Colab. ``notebooks/quickstart.ipynb`` walks through all of them.

    >>> from explorer.figures import notebook as nb
    >>> trace = model.trace("The cat sat on the mat.")
    >>> nb.head(trace, 17, 3)            # Attention heads → One head
    >>> nb.layer(trace, 17)              # Attention heads → Heads of one layer
    >>> nb.overview(trace)               # Attention heads → All layers × heads
    >>> nb.walkthrough(formula_steps(model, trace, 17, 3, query=5), trace.tokens)["probs"]   # Q, K, V
    >>> nb.stages(model, explorer.generate(model, "The capital of France is", 3)[0])       # Generation
    >>> nb.loss_comparison(trace, ablated)   # per-token loss before and after an intervention

Only figures live here, built by each page's own figure module (:mod:`explorer.figures.heads`, ``.qkv``,
``.generation``, ``.intervene``). The numbers a notebook prints come from the engine, exported by :mod:`explorer`:
``explorer.sink_shares``, ``explorer.next_token_loss``, ``explorer.device_agreement``, ``explorer.formula_steps``,
``explorer.induction_probe``, ``explorer.Stepper``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from ..analysis.downsample import BlockMeans
from ..analysis.agreement import check_same_tokens
from ..analysis.loss import next_token_loss
from ..analysis.overview import layer_overview, model_overview
from ..capture.model import Model
from ..capture.tokens import unique_labels
from ..capture.trace import Trace
from ..decoding.generation import Step
from ..from_scratch.walkthrough import FormulaSteps, token_window
from . import generation as fg, heads as fh, qkv as fq
from .intervene import loss_chart

WINDOW = 32  # tokens shown around the query in the walk-through's charts (the Q, K, V page's default)
CANDIDATES = 12  # candidate tokens in the generation stages (the Generation page's count)


def _kv_heads(trace: Trace) -> list[int] | None:
    """Each query head's key/value head under GQA (the pages label heads "head 4 · kv 1"), else None."""
    return [trace.kv_head(h) for h in range(trace.n_heads)] if trace.n_kv_heads < trace.n_heads else None


# ---- Attention heads ----------------------------------------------------------------------------------------
def head(trace: Trace, layer: int, head: int, *, hide_sink: bool = False) -> go.Figure:
    """One head's query × key map, token 0's column (the usual sink) outlined."""
    shown = _maps(trace, layer, fh.MAX_CELLS, hide_sink, heads=slice(head, head + 1))
    return fh.head_heatmap(shown[0], trace.tokens, layer=layer, head=head, kv_heads=_kv_heads(trace),
                           sink_hidden=hide_sink)


def layer(trace: Trace, layer: int, *, head: int | None = None, hide_sink: bool = False) -> go.Figure:
    """Every head of one layer as small multiples on one colour scale; ``head`` is framed."""
    return fh.layer_small_multiples(_maps(trace, layer, fh.SMALL_CELLS, hide_sink), trace.tokens, layer=layer,
                                    kv_heads=_kv_heads(trace), selected_head=head, sink_hidden=hide_sink)


def overview(trace: Trace, *, selected: tuple[int, int] | None = None, hide_sink: bool = False) -> go.Figure:
    """Every layer × head as thumbnails (BertViz's model view); ``selected`` = (layer, head) is framed."""
    layers = model_overview(trace, cells=(fh.THUMB_CELLS,), transform=fh.hide_sink if hide_sink else None)
    thumbs = np.stack([one.blocks[fh.THUMB_CELLS].values for one in layers])  # (L, H, c, c)
    return fh.model_view_grid(thumbs, kv_heads=_kv_heads(trace), selected=selected,
                              tokens_per_cell=layers[0].blocks[fh.THUMB_CELLS].row_step, n_tokens=trace.n_tokens,
                              sink_hidden=hide_sink)


def _maps(trace: Trace, layer: int, cells: int, hide_sink: bool, heads: slice = slice(None)) -> BlockMeans:
    """The pages' view of a layer's maps: exact up to ``cells`` tokens, else block means, read a block of queries
    at a time (a long text's layer is never held whole)."""
    return layer_overview(trace, layer, cells=(cells,), heads=heads,
                          transform=fh.hide_sink if hide_sink else None).blocks[cells]


# ---- Q, K, V --------------------------------------------------------------------------------------------------
def walkthrough(steps: FormulaSteps, tokens: Sequence[str], *, key: int | None = None,
                window: int = WINDOW) -> dict[str, go.Figure]:
    """The Q, K, V page's charts for one query: x, q, k, v, scores, q⊙k, scaled, masked, probs, output (and
    rope, for RoPE models). ``steps`` comes from :func:`explorer.from_scratch.walkthrough.formula_steps`; ``key`` (default: the
    most attended key) is the one taken apart in the q ⊙ k view and coloured in the bars."""
    key = int(steps.probs.argmax()) if key is None else key
    query = steps.query
    start, stop = token_window(steps.n_tokens, query, window)
    labels = unique_labels(tokens)
    shown, query_label, picked = labels[start:stop], labels[query], labels[key]
    allowed = steps.allowed.numpy()[start:stop]
    suffix = " (after RoPE)" if steps.uses_rope else ""

    def vectors(values: torch.Tensor, title: str, name: str) -> go.Figure:
        return fq.vectors_heatmap(values[start:stop].numpy(), shown, title=title, value_name=name,
                                  highlight=query_label)

    def bars(values: torch.Tensor, title: str, name: str, masked: bool = False) -> go.Figure:
        return fq.key_bars(values[start:stop].numpy(), shown, title=title, value_name=name, picked=picked,
                           allowed=allowed if masked else None)

    figures = {
        "x": vectors(steps.x, f"x at layer {steps.layer}", "x"),
        "q": vectors(steps.q, f"Q, head {steps.head}{suffix}", "q"),
        "k": vectors(steps.k, f"K, kv head {steps.kv_head}{suffix}", "k"),
        "v": vectors(steps.v, f"V, kv head {steps.kv_head}", "v"),
        "scores": bars(steps.scores, "q·k", "score"),
        "q⊙k": fq.neuron_view(steps.q[query].numpy(), steps.k[key].numpy(), steps.products(key).numpy(),
                              query_label=query_label, key_label=picked),
        "scaled": bars(steps.scaled, "scaled score", "scaled"),
        "masked": bars(steps.masked, "scaled score + mask", "masked score", masked=True),
        "probs": bars(steps.probs, "attention p", "p", masked=True),
        "output": fq.vector_bars(steps.head_out.numpy(), title=f"o for {query_label}, head {steps.head}",
                                 value_name="o"),
    }
    if steps.uses_rope:  # the chosen query's q and the chosen key's k, before and after the rotation
        figures["rope"] = fq.rope_comparison(
            {"q": steps.q_pre[query].numpy(), "k": steps.k_pre[key].numpy()},
            {"q": steps.q[query].numpy(), "k": steps.k[key].numpy()},
            labels={"q": f"q of {query_label} (position {query})", "k": f"k of {picked} (position {key})"})
    return figures


# ---- Generation -----------------------------------------------------------------------------------------------
def stages(model: Model, step: Step, *, candidates: int = CANDIDATES) -> go.Figure:
    """A generation step's next-token distribution through softmax, ÷T, top-k and top-p; the chosen token (if
    any) in orange. ``step`` is ``stepper.pending``, a chosen ``stepper.steps[i]`` or ``explorer.generate(...)[i]``."""
    ids = fg.top_candidates(step.stages, candidates)
    if step.token_id is not None and step.token_id not in ids:
        ids.append(step.token_id)
    texts = {i: model.decode_token(i) for i in ids}
    return fg.stage_chart(step.stages, texts, ids, chosen=step.token_id)


# ---- interventions ------------------------------------------------------------------------------------------
def loss_comparison(before: Trace, after: Trace, *, names: tuple[str, str] = ("before", "after"),
                    title: str | None = None) -> go.Figure:
    """Per-token loss of two runs of the same tokens, e.g. a clean trace and one with heads ablated."""
    check_same_tokens(before, after)
    return loss_chart(before.tokens, {names[0]: next_token_loss(before), names[1]: next_token_loss(after)},
                      title=title)
