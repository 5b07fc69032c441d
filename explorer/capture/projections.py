"""The weights of one attention layer in one shape for every architecture: W_q, W_k, W_v, W_o (+ biases, RoPE).

The Q/K/V walk-through and the from-scratch attention both start from a layer's input x and these weights, so
they need the same per-architecture knowledge in one place. Weights use ``nn.Linear``'s layout (out, in):
``q = x @ w_q.T + b_q``. Supported: the Llama family (Llama, Qwen2/3, Mistral, SmolLM, Gemma 3: ``q_proj``… + RoPE
+ GQA, with QK-norm for Qwen3 and Gemma 3), BERT-style encoders (``query``/``key``/``value``) and GPT-2 (fused
``c_attn`` Conv1D).
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from ..errors import ExplorerError, check_layer_head
from ..i18n import _, join

if TYPE_CHECKING:  # only for annotations: the model wrapper imports the intervention hooks, which use this module
    from .model import Model

# (q, k, positions) -> (q, k), each (heads, T, D): the model's own rotary embedding
RopeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LayerProjections:
    """One attention layer's parameters (float32, on the model's device) and how it shapes heads."""

    layer: int
    w_q: torch.Tensor  # (H·D, d_model)
    w_k: torch.Tensor  # (H_kv·D, d_model)
    w_v: torch.Tensor  # (H_kv·D, d_model)
    w_o: torch.Tensor  # (d_model, H·D)
    b_q: torch.Tensor | None
    b_k: torch.Tensor | None
    b_v: torch.Tensor | None
    b_o: torch.Tensor | None
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scale: float
    rope: RopeFn | None = None
    q_norm: torch.nn.Module | None = None  # per-head RMSNorm before RoPE (Qwen3, Gemma 3)
    k_norm: torch.nn.Module | None = None
    # The QK-norm's formula, y = x / √(mean(x²) + eps) · (offset + w): offset 0 for Qwen3, 1 for Gemma 3 (whose
    # weights are stored centred on 0). None when the layer has no QK-norm, or one of neither form.
    norm_offset: float | None = None
    norm_eps: float | None = None
    # Does the attention module's own output already include W_o? (False for BERT: its output dense lives in the
    # parent block, so the module returns the concatenated heads.) Tells a caller where to compare with the module.
    output_in_module: bool = True

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    def project(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x (T, d_model) → per-head ``q_raw``, ``k_raw`` (x·W, before any QK-norm), ``q_pre``, ``k_pre`` (before
        RoPE: after the QK-norm where the model has one, else the same as q_raw/k_raw), ``q``, ``k`` (as scored)
        and ``v``.

        Shapes: q (H, T, D); k, v (H_kv, T, D).
        """
        T = x.shape[0]
        x = x.to(self.w_q)
        q = _heads(_linear(x, self.w_q, self.b_q), self.n_heads, self.head_dim)
        k = _heads(_linear(x, self.w_k, self.b_k), self.n_kv_heads, self.head_dim)
        v = _heads(_linear(x, self.w_v, self.b_v), self.n_kv_heads, self.head_dim)
        q_raw, k_raw = q, k
        with torch.inference_mode():
            if self.q_norm is not None:
                q = self.q_norm(q)
            if self.k_norm is not None:
                k = self.k_norm(k)
        q_pre, k_pre = q, k
        if self.rope is not None:
            pos = positions if positions is not None else torch.arange(T, device=x.device)
            q, k = self.rope(q, k, pos)
        return {"q_raw": q_raw, "k_raw": k_raw, "q_pre": q_pre, "k_pre": k_pre, "q": q, "k": k, "v": v}

    def output(self, heads_out: torch.Tensor) -> torch.Tensor:
        """Concatenate head outputs (H, T, D) → (T, H·D) and apply W_o: the layer's attention output (T, d_model)."""
        H, T, D = heads_out.shape
        return _linear(heads_out.transpose(0, 1).reshape(T, H * D), self.w_o, self.b_o)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = x @ w.T
    return y + b if b is not None else y


def _heads(y: torch.Tensor, n: int, d: int) -> torch.Tensor:
    return y.view(y.shape[0], n, d).transpose(0, 1)  # (T, n·d) → (n, T, d)


def _param(module: torch.nn.Module | None, name: str = "weight") -> torch.Tensor | None:
    t = getattr(module, name, None) if module is not None else None
    return t.detach().float() if isinstance(t, torch.Tensor) else None


def _llama(model: Model, layer: int, attn: torch.nn.Module) -> LayerProjections:
    """Llama family (Llama, Qwen2/3, Mistral, SmolLM, Gemma 3): separate q/k/v/o ``nn.Linear``s, RoPE, GQA, and a
    per-head QK-norm where the model has one (Qwen3: w; Gemma 3: 1 + w, told apart by :func:`rms_norm_form`)."""
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    offset, eps = rms_norm_form(q_norm) if q_norm is not None else (None, None)
    if k_norm is not None and rms_norm_form(k_norm) != (offset, eps):
        offset, eps = None, None
    q, k, v, o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
    return LayerProjections(
        layer=layer, w_q=_param(q), w_k=_param(k), w_v=_param(v), w_o=_param(o),
        b_q=_param(q, "bias"), b_k=_param(k, "bias"), b_v=_param(v, "bias"), b_o=_param(o, "bias"),
        n_heads=model.n_heads, n_kv_heads=model.n_kv_heads, head_dim=model.head_dim, scale=float(attn.scaling),
        rope=_rope_for(model, attn), q_norm=q_norm, k_norm=k_norm, norm_offset=offset, norm_eps=eps,
    )


def _llama_output(model: Model, layer: int, attn: torch.nn.Module) -> torch.nn.Module:
    return attn.o_proj


def _bert(model: Model, layer: int, attn: torch.nn.Module) -> LayerProjections:
    """BERT-style encoders: query/key/value ``nn.Linear``s; the output dense lives in the parent block."""
    out = _bert_output(model, layer, attn)
    return LayerProjections(
        layer=layer, w_q=_param(attn.query), w_k=_param(attn.key), w_v=_param(attn.value), w_o=_param(out),
        b_q=_param(attn.query, "bias"), b_k=_param(attn.key, "bias"), b_v=_param(attn.value, "bias"),
        b_o=_param(out, "bias"), n_heads=model.n_heads, n_kv_heads=model.n_heads, head_dim=model.head_dim,
        scale=float(getattr(attn, "scaling", model.head_dim**-0.5)), output_in_module=False,
    )


def _bert_output(model: Model, layer: int, attn: torch.nn.Module) -> torch.nn.Module:
    return model.base.encoder.layer[layer].attention.output.dense


def _gpt2(model: Model, layer: int, attn: torch.nn.Module) -> LayerProjections:
    """GPT-2: one Conv1D (in, 3·out) for q, k, v; Conv1D stores its weights transposed to nn.Linear's."""
    d = model.config.hidden_size
    w = attn.c_attn.weight.detach().float().T  # (3d, d): q, k, v stacked
    b = attn.c_attn.bias.detach().float()  # (3d,)
    scale = model.head_dim**-0.5 if getattr(attn, "scale_attn_weights", True) else 1.0
    if getattr(attn, "scale_attn_by_inverse_layer_idx", False):
        scale /= float(layer + 1)
    return LayerProjections(
        layer=layer, w_q=w[:d], w_k=w[d : 2 * d], w_v=w[2 * d :], w_o=attn.c_proj.weight.detach().float().T,
        b_q=b[:d], b_k=b[d : 2 * d], b_v=b[2 * d :], b_o=attn.c_proj.bias.detach().float(),
        n_heads=model.n_heads, n_kv_heads=model.n_heads, head_dim=model.head_dim, scale=scale,
    )


def _gpt2_output(model: Model, layer: int, attn: torch.nn.Module) -> torch.nn.Module:
    return attn.c_proj


@dataclass(frozen=True)
class BlockLayout:
    """Where one block's norms sit around its attention and MLP: what a frozen-norm split of the residual stream
    (:mod:`explorer.analysis.qk_attribution`) must carry its parts through.

    Pre-norm (Llama, GPT-2, Gemma 3): ``h' = h + A(attn(input_norm(h))) + mlp(…)``, A = ``attn_out_norm`` (Gemma 3's
    norm on the attention output before the add) or the identity. Post-norm (BERT): ``a = attn_add_norm(h + attn(h))``,
    ``h' = mlp_add_norm(a + mlp(a))``: every earlier part passes through both norms.
    """

    post_norm: bool
    input_norm: torch.nn.Module | None = None  # pre-norm: the norm that makes the attention input x from h
    attn_out_norm: torch.nn.Module | None = None
    attn_add_norm: torch.nn.Module | None = None  # post-norm only, with the two below
    mlp: Callable[[torch.Tensor], torch.Tensor] | None = None  # a ↦ the MLP's output before the add
    mlp_add_norm: torch.nn.Module | None = None


def _llama_block(model: Model, layer: int, attn: torch.nn.Module) -> BlockLayout:
    block = model.base.layers[layer]
    # Gemma 2/3 name their pre-MLP norm pre_feedforward_layernorm, and post_attention_layernorm normalises the
    # attention output before the add; in Llama post_attention_layernorm *is* the pre-MLP norm.
    sandwich = isinstance(getattr(block, "pre_feedforward_layernorm", None), torch.nn.Module)
    return BlockLayout(post_norm=False, input_norm=block.input_layernorm,
                       attn_out_norm=block.post_attention_layernorm if sandwich else None)


def _bert_block(model: Model, layer: int, attn: torch.nn.Module) -> BlockLayout:
    block = model.base.encoder.layer[layer]
    return BlockLayout(post_norm=True, attn_add_norm=block.attention.output.LayerNorm,
                       mlp=lambda a: block.output.dense(block.intermediate(a)), mlp_add_norm=block.output.LayerNorm)


def _gpt2_block(model: Model, layer: int, attn: torch.nn.Module) -> BlockLayout:
    return BlockLayout(post_norm=False, input_norm=model.base.h[layer].ln_1)


@dataclass(frozen=True)
class Architecture:
    """What the engine knows of one family's attention module: how to read its weights, where W_o is applied,
    and where its block's norms sit."""

    family: str
    projections: Callable[[Model, int, torch.nn.Module], LayerProjections]
    output: Callable[[Model, int, torch.nn.Module], torch.nn.Module]
    block: Callable[[Model, int, torch.nn.Module], BlockLayout]


#: The attention module's attribute signature → its family, like transformers' ``AttentionInterface`` registry:
#: the first entry whose attributes the module has wins. A new family is one builder pair and one entry here.
ARCHITECTURES: dict[tuple[str, ...], Architecture] = {
    ("q_proj", "k_proj", "v_proj", "o_proj"): Architecture("Llama family", _llama, _llama_output, _llama_block),
    ("query", "key", "value"): Architecture("BERT", _bert, _bert_output, _bert_block),
    ("c_attn", "c_proj"): Architecture("GPT-2", _gpt2, _gpt2_output, _gpt2_block),
}


def _architecture(model: Model, layer: int) -> tuple[torch.nn.Module, Architecture]:
    """Layer ``layer``'s attention module and its registry entry, or an ExplorerError listing what is supported."""
    check_layer_head(layer, model.n_layers)
    attn = model.attention_modules[layer]
    for signature, arch in ARCHITECTURES.items():
        if all(isinstance(getattr(attn, name, None), torch.nn.Module) for name in signature):
            return attn, arch
    supported = join(f"{arch.family} ({'/'.join(sig)})" for sig, arch in ARCHITECTURES.items())
    raise ExplorerError(
        _("Attention Explorer does not know where {module} keeps its Q/K/V and output weights "
          "(supported: {supported}).").format(module=type(attn).__name__, supported=supported)
    )


def layer_projections(model: Model, layer: int) -> LayerProjections:
    """The projections of ``layer`` of a loaded model, or an ExplorerError naming what is not supported."""
    attn, arch = _architecture(model, layer)
    return arch.projections(model, layer, attn)


def output_projection(model: Model, layer: int) -> torch.nn.Module:
    """The module that applies W_o in ``layer``. Its input is the concatenated head outputs (…, T, H·D), head h
    at [h·D, (h+1)·D): where a head is ablated or patched (:mod:`explorer.capture.intervention`)."""
    attn, arch = _architecture(model, layer)
    return arch.output(model, layer, attn)


def block_layout(model: Model, layer: int) -> BlockLayout:
    """Where ``layer``'s block keeps its norms, or an ExplorerError when its family or layout is unknown."""
    attn, arch = _architecture(model, layer)
    try:
        return arch.block(model, layer, attn)
    except (AttributeError, IndexError, TypeError) as exc:  # a family member laid out differently
        raise ExplorerError(
            _("Attention Explorer does not know how the norms of {module}'s blocks are arranged, so it cannot split "
              "its residual stream.").format(module=type(attn).__name__)
        ) from exc


@dataclass(frozen=True)
class NormForm:
    """A norm as ``y = c(x) · rsqrt(mean(c(x)²) + eps) · weight + bias``, c centring x (LayerNorm) or not (RMSNorm).

    With the scale ``rsqrt(…)`` frozen at its value on a text, the norm is linear in x plus a constant (the bias):
    :meth:`frozen` applies that linear part to one piece of x.
    """

    centre: bool
    weight: torch.Tensor  # (d,): RMSNorm's (offset + w), LayerNorm's γ
    bias: torch.Tensor | None  # (d,): LayerNorm's β
    eps: float

    def inverse_scale(self, x: torch.Tensor) -> torch.Tensor:
        """(…, d) → (…,): the scale the norm multiplies x by, at each position."""
        x = x.float()
        if self.centre:
            x = x - x.mean(-1, keepdim=True)
        return torch.rsqrt(x.pow(2).mean(-1) + self.eps)

    def frozen(self, part: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The norm's linear part on ``part`` (…, U, d) with the scale (U,) frozen; the bias is left out."""
        if self.centre:
            part = part - part.mean(-1, keepdim=True)
        return part * scale[:, None] * self.weight.to(part.device)  # the weights live on the model's device


def norm_form(norm: torch.nn.Module | None) -> NormForm | None:
    """The :class:`NormForm` of an RMSNorm (Llama's w, Gemma's 1 + w) or LayerNorm module; None for no norm
    (None or Identity). An ExplorerError for any other module: it cannot be frozen into a linear map.

    Checked on a probe, like :func:`rms_norm_form`: what the module computes decides, not its class name.
    """
    if norm is None or isinstance(norm, torch.nn.Identity):
        return None
    offset, eps = rms_norm_form(norm)
    if offset is not None:
        return NormForm(False, offset + norm.weight.detach().float(), None, eps)
    if isinstance(norm, torch.nn.LayerNorm) and len(norm.normalized_shape) == 1:
        d = norm.normalized_shape[0]
        weight = _param(norm) if norm.weight is not None else torch.ones(d)
        bias = _param(norm, "bias")
        form = NormForm(True, weight, bias, float(norm.eps))
        probe = torch.randn(3, d, generator=torch.Generator().manual_seed(0)).to(weight.device)  # (3, d)
        with torch.inference_mode():
            out = norm(probe.to(norm.weight.dtype if norm.weight is not None else probe.dtype)).float()
        mine = form.frozen(probe, form.inverse_scale(probe)) + (bias if bias is not None else 0)
        if torch.allclose(out, mine, rtol=1e-5, atol=1e-6):
            return form
    raise ExplorerError(
        _("The norm {module} is neither an RMSNorm nor a LayerNorm, so its scale cannot be frozen.").format(
            module=type(norm).__name__)
    )


def rms_norm_form(norm: torch.nn.Module) -> tuple[float | None, float | None]:
    """(offset, eps) such that ``norm(x) = x / √(mean(x²) + eps) · (offset + weight)``, or (None, None).

    Checked on a probe rather than read off the class: Llama-style RMSNorms scale by w (offset 0), Gemma's by 1 + w
    (offset 1), and the two are told apart by what the module computes.
    """
    weight = getattr(norm, "weight", None)
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or not isinstance(eps, float):
        return None, None
    w = weight.detach().float()
    probe = torch.randn(3, w.numel(), generator=torch.Generator().manual_seed(0)).to(w.device)  # (3, D)
    normed = probe * torch.rsqrt(probe.pow(2).mean(-1, keepdim=True) + eps)
    with torch.inference_mode():
        out = norm(probe.to(weight.dtype)).float()
    for offset in (0.0, 1.0):
        if torch.allclose(out, normed * (offset + w), rtol=1e-5, atol=1e-6):
            return offset, eps
    return None, None


def _rope_for(model: Model, attn: torch.nn.Module) -> RopeFn | None:
    """The model's own rotary embedding, applied exactly as its attention module applies it."""
    rotary = getattr(model.base, "rotary_emb", None)
    apply = getattr(sys.modules.get(type(attn).__module__), "apply_rotary_pos_emb", None)
    if rotary is None or apply is None:
        return None
    # Gemma 3 keeps one set of frequencies per layer type (base 10,000 on sliding layers, 1,000,000 on global ones)
    # and its rotary embedding takes the layer type; single-base models take no such argument.
    layer_type = getattr(attn, "layer_type", None)
    per_type = layer_type is not None and "layer_type" in inspect.signature(rotary.forward).parameters
    extra = (layer_type,) if per_type else ()

    def rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            cos, sin = rotary(q, positions[None, :].to(q.device), *extra)
            q_rot, k_rot = apply(q[None], k[None], cos, sin)
        return q_rot[0], k_rot[0]

    return rope
