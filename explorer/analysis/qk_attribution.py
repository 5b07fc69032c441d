"""Why does this head look there? One head's score q·k·scale split exactly into parts of the residual stream.

The residual stream entering layer L is a sum: the embeddings, every earlier head's ``W_o^h z_h``, every earlier
MLP's output, and the biases. q and k are not linear in it, only because of the norms on the way (the block's input
norm, Gemma 3's norm on the attention output and its QK-norm, BERT's LayerNorms after every add). **Freezing each
norm's scale** ``rsqrt(mean(x²) + eps)`` (LayerNorm: its mean and std) at the value it had on this text makes every
one of them linear (centring is linear), and RoPE is linear at a fixed position, so

    s = (Σ_a q_a) · (Σ_b k_b) · scale = Σ_a Σ_b q_a · k_b · scale

is exact, to float32 rounding, with q_a the part a of the residual stream at the query pushed through the frozen
norms and W_q (k_b likewise at the key). The frozen scales are the real ones, so the parts add up to the score the
model computed; what the split does *not* say is how the score would change if a part were removed (the scales
would then move). That is the caveat the page states in words. For post-norm encoders (BERT) every part is carried
through each later LayerNorm with its frozen scale, as DecompX (Modarressi et al. 2023) does.

Cost: each earlier head's output is needed at the query and the key only (two rows of its attention, never its
map); with ``baseline="mean"`` at every key the query may see (rows of each earlier head's attention, one head at a
time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..capture.projections import LayerProjections, NormForm, block_layout, layer_projections, norm_form
from ..errors import ExplorerError, check_layer_head
from ..i18n import _

Baseline = Literal["mean"] | None
BASELINES = (None, "mean")
EMBED, BIAS = "embed", "bias"
SPARSE_POSITIONS = 8  # up to this many positions, each earlier head's output is read from single attention rows


@dataclass(frozen=True)
class QKAttribution:
    """One head's score at (query, key), split into residual-stream parts on the query side and the key side.

    ``score``: ``q_query · k_key · scale`` as the model computed it (with ``baseline="mean"``: minus the mean of
    that query's scores over the keys its mask allows). ``pairs``: (query part × key part) DataFrame of
    ``q_a · k_b · scale`` (mean baseline: ``q_a · (k_b(key) − mean k_b) · scale``); ``query_parts`` and
    ``key_parts`` its row and column sums. All three add up to ``parts_total``, which equals ``score`` to float32
    rounding (``error`` = |parts_total − score|). Parts: ``"embed"``, ``"L.H"`` (that earlier head's W_o^h z_h),
    ``"mlpL"``, and ``"bias"`` where the model has biases (LayerNorm's β included).
    """

    layer: int
    head: int
    query: int
    key: int
    baseline: str | None
    score: float
    raw_score: float  # q·k·scale without the baseline
    weight: float  # the attention probability of (query, key)
    query_parts: pd.Series
    key_parts: pd.Series
    pairs: pd.DataFrame
    parts_total: float
    error: float

    def head_grid(self, side: Literal["key", "query"] = "key") -> pd.DataFrame:
        """Each earlier head's part on one side as a (layers before ``layer``) × heads table (NaN-free)."""
        parts = self.key_parts if side == "key" else self.query_parts
        heads = [name for name in parts.index if "." in name]
        n_heads = 1 + max(int(name.split(".")[1]) for name in heads) if heads else 0
        grid = np.zeros((self.layer, n_heads))
        for name in heads:
            l, h = (int(x) for x in name.split("."))
            grid[l, h] = parts[name]
        return pd.DataFrame(grid, index=range(self.layer), columns=range(n_heads))

    def other_parts(self, side: Literal["key", "query"] = "key") -> pd.Series:
        """The parts that are not heads (embed, each MLP, bias), in stream order."""
        parts = self.key_parts if side == "key" else self.query_parts
        return parts[[name for name in parts.index if "." not in name]]


def qk_attribution(trace, layer: int, head: int, query: int, key: int, baseline: Baseline = None,
                   model=None) -> QKAttribution:
    """Split head ``head`` of ``layer``'s score of ``key`` for ``query`` into residual-stream parts (see module).

    ``model``: the Model that made ``trace`` (default: that model, held by the trace). ``baseline="mean"`` asks
    *what made this key stand out from the others*: the score and each key part minus their mean over the keys the
    mask allows the query. Raises ExplorerError for positions out of range, a key the mask hides, an ablated trace,
    or an architecture whose norms cannot be frozen.
    """
    model = trace.source_model() if model is None else model
    check_layer_head(int(layer), trace.n_layers, int(head), trace.n_heads)
    layer, head = int(layer), int(head)
    query, key = _position(query, trace.n_tokens, _("query")), _position(key, trace.n_tokens, _("key"))
    if baseline not in BASELINES:
        raise ExplorerError(_("Unknown baseline '{baseline}'. Use None or 'mean'.").format(baseline=baseline))
    if trace.ablated:
        raise ExplorerError(_("QK attribution splits the residual stream of an ordinary run; this trace has heads "
                              "switched off. Trace the text without ablation."))
    if model.name != trace.model_name or model.n_layers != trace.n_layers:
        raise ExplorerError(_("This trace was made by '{trace}', not by '{model}'.").format(
            trace=trace.model_name, model=model.name))
    if len(trace.hidden_states) <= layer:
        raise ExplorerError(_("This trace did not keep the residual stream of every layer."))
    allowed = trace.allowed_rows(layer, slice(query, query + 1))[0]  # (n,) bool
    if not bool(allowed[key]):
        raise ExplorerError(_("The mask of layer {layer} hides key {key} from query {query}: its score never "
                              "counts. Choose a key the query may see.").format(layer=layer, key=key, query=query))

    keys = allowed.nonzero()[:, 0].tolist() if baseline == "mean" else [key]
    positions = sorted({query, *keys})
    at = {p: i for i, p in enumerate(positions)}
    proj = layer_projections(model, layer)
    names: list[str] = []
    q_parts, k_parts = [], []  # per group: (k, D) at the query; (k, D) at the key (mean baseline: minus the mean)
    key_rows = torch.tensor([at[p] for p in keys])
    key_at = keys.index(key)
    q_side, k_side = _sides(model, trace, layer, head, proj, query, keys)
    for group_names, parts in _residual_groups(model, trace, layer, positions):  # parts (k, U, d)
        q_parts.append(q_side(parts[:, [at[query]]], group_names)[:, 0])  # (k, D)
        k = k_side(parts[:, key_rows], group_names)  # (k, |keys|, D)
        k_parts.append(k[:, key_at] - k.mean(1) if baseline == "mean" else k[:, key_at])
        names += group_names
    qs, ks = torch.cat(q_parts), torch.cat(k_parts)  # (P, D) each
    pairs = (qs.double() @ ks.double().T * proj.scale).numpy()  # (P, P)
    frame = pd.DataFrame(pairs, index=pd.Index(names, name="query part"), columns=pd.Index(names, name="key part"))
    if not pairs[names.index(BIAS)].any() and not pairs[:, names.index(BIAS)].any():
        frame = frame.drop(index=BIAS, columns=BIAS)  # a model without biases has no "bias" part

    q_real, k_real = trace.q(layer, head)[query], trace.k(layer, head)  # (D,), (n, D)
    raw = float(q_real @ k_real[key]) * proj.scale
    score = raw - float((k_real[keys] @ q_real).mean()) * proj.scale if baseline == "mean" else raw
    weight = float(trace.attention_window(layer, head, queries=slice(query, query + 1), keys=slice(key, key + 1)))
    total = float(pairs.sum())
    return QKAttribution(layer, head, query, key, baseline, score, raw, weight, frame.sum(axis=1), frame.sum(axis=0),
                         frame, total, abs(total - score))


def _position(value: object, n: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < n:
        raise ExplorerError(_("The {what} position must be a whole number in 0–{last}.").format(what=what, last=n - 1))
    return int(value)


class _Side:
    """One side of the score (the query's W_q or the key's W_k) at some positions: pushes residual-stream parts at
    layer ``layer``'s input through its frozen input norm, the projection, the frozen QK-norm and RoPE."""

    def __init__(self, proj: LayerProjections, norm: NormForm | None, hidden: torch.Tensor, positions: list[int],
                 w: torch.Tensor, b: torch.Tensor | None, qk_norm: torch.nn.Module | None, is_query: bool):
        self.proj, self.norm, self.w, self.b, self.is_query = proj, norm, w, b, is_query
        self.positions = torch.tensor(positions)
        self.scale = norm.inverse_scale(hidden) if norm is not None else None  # (U,): the real, frozen scale
        self.qk_norm = None
        if qk_norm is not None:
            if proj.norm_offset is None:
                raise ExplorerError(_("The QK-norm of layer {layer} is not an RMSNorm, so its scale cannot be "
                                      "frozen.").format(layer=proj.layer))
            x = norm.frozen(hidden, self.scale) + _bias(norm) if norm is not None else hidden  # (U, d): real x
            raw = _linear(x, w, b)  # (U, D): the real q (or k) before the QK-norm
            weight = proj.norm_offset + qk_norm.weight.detach().float().cpu()  # (D,)
            self.qk_norm = (torch.rsqrt(raw.pow(2).mean(-1) + proj.norm_eps), weight)

    def __call__(self, parts: torch.Tensor, names: list[str]) -> torch.Tensor:
        """parts (k, U, d) of the stream at this side's positions → (k, U, D), as the head scores them."""
        x = self.norm.frozen(parts, self.scale) if self.norm is not None else parts
        y = x @ self.w.T  # (k, U, D)
        if BIAS in names:  # the constants (biases, the norm's β) all go to the one "bias" part
            i = names.index(BIAS)
            if self.norm is not None and self.norm.bias is not None:
                y[i] += self.norm.bias.cpu() @ self.w.T
            if self.b is not None:
                y[i] += self.b
        if self.qk_norm is not None:
            y = y * self.qk_norm[0][:, None] * self.qk_norm[1]
        if self.proj.rope is not None:  # linear at each position: rotate every part by its position's angle
            q, k = self.proj.rope(y, y, self.positions)
            y = q if self.is_query else k
        return y


def _sides(model, trace, layer: int, head: int, proj: LayerProjections, query: int,
           keys: list[int]) -> tuple[_Side, _Side]:
    """The query side at ``query`` and the key side at ``keys`` of head ``head``, checked against the real input."""
    D, kv = proj.head_dim, trace.kv_head(head)
    norm = norm_form(block_layout(model, layer).input_norm)
    hidden = trace.hidden_states[layer].float().cpu()  # (n, d): the real stream
    if trace.has_x(layer):
        rows = torch.tensor([query, *keys])
        x = norm.frozen(hidden[rows], norm.inverse_scale(hidden[rows])) + _bias(norm) if norm is not None else hidden[rows]
        real = trace.x(layer)[rows]
        if not torch.allclose(x, real, rtol=1e-4, atol=1e-4 * float(real.abs().max())):
            raise ExplorerError(_("The input of layer {layer} is not its input norm of the residual stream, so the "
                                  "split would not be exact.").format(layer=layer))
    w_q = proj.w_q.float().cpu().view(proj.n_heads, D, -1)[head]  # (D, d)
    w_k = proj.w_k.float().cpu().view(proj.n_kv_heads, D, -1)[kv]  # (D, d)
    b_q = proj.b_q.float().cpu().view(proj.n_heads, D)[head] if proj.b_q is not None else None  # (D,)
    b_k = proj.b_k.float().cpu().view(proj.n_kv_heads, D)[kv] if proj.b_k is not None else None
    return (_Side(proj, norm, hidden[[query]], [query], w_q, b_q, proj.q_norm, True),
            _Side(proj, norm, hidden[keys], keys, w_k, b_k, proj.k_norm, False))


def _bias(norm: NormForm | None) -> torch.Tensor | int:
    return norm.bias.cpu() if norm is not None and norm.bias is not None else 0


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return x @ w.T + b if b is not None else x @ w.T


def _head_outputs(trace, layer: int, positions: list[int]) -> torch.Tensor:
    """(H, U, D): every head's output z_h = Σ_j p_ij v_j at ``positions`` only, from rows of its attention.

    A few positions (no baseline): one attention row per head and position. Many (the mean baseline): the layer's
    rows a block at a time for all heads at once (Trace.row_blocks: a causal block scores only the keys it may see),
    up to the last position needed."""
    v = torch.stack([trace.v(layer, h) for h in range(trace.n_heads)])  # (H, n, D), GQA heads repeated
    if len(positions) <= SPARSE_POSITIONS:
        return torch.stack([torch.cat([trace.attention_window(layer, h, queries=slice(p, p + 1)) for p in positions])
                            @ v[h] for h in range(trace.n_heads)])  # (H, U, D)
    wanted = torch.zeros(trace.n_tokens, dtype=torch.bool)
    wanted[positions] = True
    out = []
    for rows, cols, probs in trace.row_blocks(layer):  # probs (H, Tq, Sk)
        if rows.start > positions[-1]:
            break
        keep = wanted[rows]  # (Tq,)
        if keep.any():
            out.append(probs[:, keep] @ v[:, cols])  # (H, kept, D)
    return torch.cat(out, dim=1)


def _residual_groups(model, trace, layer: int, positions: list[int]):
    """The parts of the residual stream entering ``layer`` at ``positions``, a group at a time: yields
    ``(names, parts)`` with parts (k, U, d) float32, which add up to ``trace.hidden_states[layer]`` there.

    Pre-norm blocks only add to the stream, so a group is final once made and is yielded at once (memory: one
    layer's heads); post-norm blocks carry every part through each later norm, so their groups come at the end.
    The constants (biases, β) gather in one "bias" group, yielded last.
    """
    index = torch.tensor(positions)
    hidden = [h[index].float().cpu() for h in trace.hidden_states[: layer + 1]]  # (U, d) each
    bias = torch.zeros_like(hidden[0])[None]  # (1, U, d)
    kept: list[tuple[list[str], torch.Tensor]] = []  # post-norm: every group so far, carried through the norms
    post = layer > 0 and block_layout(model, 0).post_norm

    def emit(names: list[str], parts: torch.Tensor):
        if post:
            kept.append((names, parts))
            return []
        return [(names, parts)]

    def through(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Carry every kept group and the bias through ``norm`` frozen at its input ``x`` (U, d); return norm(x)."""
        nonlocal bias
        form = norm_form(norm)
        scale = form.inverse_scale(x)
        for i, (names, parts) in enumerate(kept):
            kept[i] = (names, form.frozen(parts, scale))
        bias = form.frozen(bias, scale) + _bias(form)
        return _run(norm, x)

    yield from emit([EMBED], hidden[0][None])
    for l in range(layer):
        proj, layout = layer_projections(model, l), block_layout(model, l)
        z = _head_outputs(trace, l, positions)  # (H, U, D)
        w_o = proj.w_o.float().cpu().view(-1, proj.n_heads, proj.head_dim)  # (d, H, D)
        heads = torch.einsum("hud,ehd->hue", z, w_o)  # (H, U, d): each head's W_o^h z_h
        b_o = proj.b_o.float().cpu() if proj.b_o is not None else torch.zeros(w_o.shape[0])
        attn = heads.sum(0) + b_o  # (U, d): the attention block's output
        names = [f"{l}.{h}" for h in range(proj.n_heads)]
        if not layout.post_norm:
            if layout.attn_out_norm is not None:  # Gemma 3: a norm on the attention output before the add
                form = norm_form(layout.attn_out_norm)
                scale = form.inverse_scale(attn)
                heads, b_o = form.frozen(heads, scale), form.frozen(b_o[None].expand_as(attn), scale) + _bias(form)
                attn = _run(layout.attn_out_norm, attn)
            bias = bias + b_o
            yield from emit(names, heads)
            yield from emit([f"mlp{l}"], (hidden[l + 1] - hidden[l] - attn)[None])  # the rest of the block's add
        else:
            kept.append((names, heads))
            bias = bias + b_o
            a = through(layout.attn_add_norm, hidden[l] + attn)  # (U, d)
            m = _run(layout.mlp, a, like=layout.mlp_add_norm)  # (U, d)
            kept.append(([f"mlp{l}"], m[None]))
            out = through(layout.mlp_add_norm, a + m)
            if not torch.allclose(out, hidden[l + 1], rtol=1e-4, atol=1e-4 * float(hidden[l + 1].abs().max())):
                raise ExplorerError(_("Layer {layer}'s block does not compute what its norms and MLP compute here, "
                                      "so the split would not be exact.").format(layer=l))
    yield from kept
    yield [BIAS], bias


def _run(module, x: torch.Tensor, like: torch.nn.Module | None = None) -> torch.Tensor:
    """``module(x)`` on the model's device and dtype (those of ``like``'s weights, default the module's), as float32
    on the CPU: the model's own computation of a block's piece at a few positions."""
    param = next(iter((like or module).parameters()))
    with torch.inference_mode():
        return module(x.to(param.device, param.dtype)).float().cpu()


# ---- the worked example ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InductionExample:
    """The strongest induction head on the repeated random-token probe, queried at a token of the repeat and keyed
    at its induction target (the token after its earlier occurrence), split with ``baseline="mean"``."""

    trace: object  # the probe's Trace
    attribution: QKAttribution
    induction: float  # the head's induction score on the probe
    previous_token: np.ndarray  # (n_layers, n_heads): every head's previous-token score on the probe
    period: int

    def top_key_heads(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` earlier heads with the largest key-side parts: name ("L.H"), part, previous-token score."""
        parts = self.attribution.key_parts
        heads = parts[[name for name in parts.index if "." in name]]
        top = heads.reindex(heads.abs().sort_values(ascending=False).index[:k])
        prev = [float(self.previous_token[int(n.split(".")[0]), int(n.split(".")[1])]) for n in top.index]
        return pd.DataFrame({"name": top.index, "part": top.to_numpy(), "previous_token": prev})


def induction_example(model, period: int = 50, seed: int = 0) -> InductionExample:
    """The worked example of the Explain page (see :class:`InductionExample`); the query is the middle token of
    the repeat. Needs a causal model (an encoder sees the whole probe at once, so it has no induction target)."""
    from .stats import induction_probe, induction_scores, text_statistics

    probe = induction_probe(model, period=period, seed=seed)
    trace = model.trace_ids(probe.encoded, keep_inputs=False)
    scores = induction_scores(trace, probe)  # (L, H)
    layer, head = (int(i) for i in np.unravel_index(int(np.argmax(scores)), scores.shape))
    query = probe.start + probe.period + probe.period // 2
    key = query - probe.period + 1  # the token that followed the query's earlier occurrence
    attribution = qk_attribution(trace, layer, head, query, key, baseline="mean", model=model)
    return InductionExample(trace, attribution, float(scores[layer, head]),
                            text_statistics(trace)["previous_token"], probe.period)
