"""Reference computations and comparisons shared by several test modules (test modules never import one another)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

import explorer

from bounds import EPS32, f32_dot_bound

# The figures sum in float64 and round once to float32, the references likewise (or not at all): the two land at most
# one float32 step apart, a relative EPS32. hide_sink rounds twice (its float32 total, then the quotient).
ONE_ROUNDING = EPS32


def block_rounding(col_step: int) -> float:
    """Relative error of a block mean: float32 sums of ``col_step`` weights ≥ 0 (relative to their sum), then float64
    totals and one float32 rounding of the mean."""
    return f32_dot_bound(col_step, 1.0) + ONE_ROUNDING


def reference_block_mean(matrix: np.ndarray, max_cells: int) -> tuple[np.ndarray, int, int]:
    """Block means of one map written the plain way (pad with NaN, reshape, nanmean): the reference."""
    rows, cols = matrix.shape
    rs, cs = -(-rows // max_cells), -(-cols // max_cells)
    if rs == 1 and cs == 1:
        return matrix, 1, 1
    padded = np.pad(matrix.astype(np.float64), ((0, (-rows) % rs), (0, (-cols) % cs)), constant_values=np.nan)
    blocks = padded.reshape(padded.shape[0] // rs, rs, padded.shape[1] // cs, cs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN block is NaN, as intended
        return np.nanmean(blocks, axis=(1, 3)).astype(np.float32), rs, cs


def assert_same_trace(a: explorer.Trace, b: explorer.Trace) -> None:
    """Bit-for-bit equality of everything a trace recorded."""
    assert a.tokens == b.tokens and a.token_ids == b.token_ids and a.mask == b.mask
    for ra, rb in zip(a.records, b.records, strict=True):
        for name in ("q", "k", "v", "lse"):
            assert torch.equal(getattr(ra, name), getattr(rb, name)), (ra.layer, name)
        assert torch.equal(a.x(ra.layer), b.x(rb.layer)), (ra.layer, "x")  # kept, or rebuilt from the hidden state
    for ha, hb in zip(a.hidden_states, b.hidden_states, strict=True):
        assert torch.equal(ha, hb)
    assert torch.equal(a.final_hidden, b.final_hidden)


# ---- norm-based attention (tests/engine/test_contributions.py, test_token_attribution.py) ----------------------
def _value_and_output(eager):
    """Per layer: (the module whose output holds v, how to cut v (n, H_kv·D) out of it, W_o (d_model, H·D))."""
    base = getattr(eager, "model", None) or getattr(eager, "transformer", None) or eager
    if hasattr(base, "layers"):  # Llama family (SmolLM2, Gemma 3, tiny Llama)
        return [(l.self_attn.v_proj, lambda o: o, l.self_attn.o_proj.weight) for l in base.layers]
    if hasattr(base, "h"):  # GPT-2: c_attn gives q, k, v stacked; Conv1D keeps W transposed
        d = eager.config.n_embd
        return [(b.attn.c_attn, lambda o, d=d: o[..., 2 * d:], b.attn.c_proj.weight.T) for b in base.h]
    return [(l.attention.self.value, lambda o: o, l.attention.output.dense.weight) for l in base.encoder.layer]


def value_norm_reference(eager, ids: list[int]):
    """(attentions per layer (H, n, n), value norms per layer (H, n)) from plain hooks on the stock eager model."""
    parts = _value_and_output(eager)
    values = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, layer=layer, cut=cut: values.__setitem__(layer, cut(out)[0]))
             for layer, (m, cut, _w) in enumerate(parts)]
    try:
        with torch.no_grad():
            out = eager(torch.tensor([ids]), output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    H = eager.config.num_attention_heads
    norms = []
    for layer, (_m, _cut, w_o) in enumerate(parts):
        v = values[layer].detach()  # (n, H_kv·D)
        D = w_o.shape[1] // H
        v = v.view(v.shape[0], -1, D)  # (n, H_kv, D)
        group = H // v.shape[1]
        f = torch.stack([v[:, h // group] @ w_o.detach()[:, h * D:(h + 1) * D].T for h in range(H)])  # (H, n, d)
        norms.append(f.norm(dim=-1))  # (H, n)
    return [a[0] for a in out.attentions], norms, [w.detach() for _m, _c, w in parts]
