"""Multi-head attention from scratch, in plain torch, and a widely circulated tutorial variant of it.

:class:`MultiHeadAttention` is the textbook computation, one step a line:

    q_h = x W_q^h,  k_h = x W_k^h,  v_h = x W_v^h          (a separate projection per head)
    head_h = softmax(q_h k_hᵀ / √d_k + M) v_h                (M = 0 where allowed, −∞ where masked)
    out = concat(head_1 … head_H) W_o

Loaded with a real layer's weights (:meth:`MultiHeadAttention.from_model`, built on
:func:`explorer.capture.projections.layer_projections`, including RoPE and grouped-query attention for the Llama family) and
given that layer's input from a trace, it reproduces the model's own attention output (see
:mod:`explorer.from_scratch.checks`).

:class:`TutorialAttention` is the same module with the three departures of a much-copied "transformer from scratch"
tutorial, each switchable (:class:`Departures`): scores scaled by √(embedding size) instead of √d_k, one small
d_k × d_k projection shared by every head, and masked scores filled with −1e20 instead of −∞.

Shapes: T queries, S keys (S = T here), d = d_model, H query heads, H_kv key/value heads, D = d_k = head_dim.
Everything runs on whatever device the weights are on (CPU or CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..i18n import _
from ..errors import ExplorerError
from ..capture.model import Model
from ..capture.projections import LayerProjections, RopeFn, layer_projections
from ..capture.gqa import repeat_kv

NEG_INF = float("-inf")
TUTORIAL_FILL = -1e20  # the tutorial's ``energy.masked_fill(mask == 0, float("-1e20"))``


def attention_core(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, allowed: torch.Tensor | None = None,
    fill: float = NEG_INF,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ·scale + M) v, written out. Materialises the full (…, H, T, S) score matrix on purpose.

    q (…, H, T, D); k, v (…, H, S, D), one key/value head per query head; ``allowed`` (T, S) bool or None (all
    allowed). Masked scores are set to ``fill`` (−∞ in the textbook). Returns (heads (…, H, T, D), probs (…, H, T, S)).
    """
    scores = q @ k.transpose(-2, -1)  # (…, H, T, D) @ (…, H, D, S) -> (…, H, T, S): every query · every key
    scores = scores * scale  # (…, H, T, S): ÷ √d_k keeps the scores' spread independent of d_k
    if allowed is not None:
        scores = scores.masked_fill(~allowed, fill)  # (…, H, T, S): + M, i.e. fill where the mask forbids
    probs = torch.softmax(scores, dim=-1)  # (…, H, T, S): each query's row sums to 1
    heads = probs @ v  # (…, H, T, S) @ (…, H, S, D) -> (…, H, T, D): weighted average of values
    return heads, probs


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(…, D) → (…, D): [x1, x2] ↦ [−x2, x1], the 90° turn of each (x_i, x_{i+D/2}) pair."""
    x1, x2 = x.chunk(2, dim=-1)  # (…, D/2) each
    return torch.cat([-x2, x1], dim=-1)  # (…, D)


class Rotary(nn.Module):
    """Rotary position embedding in the rotate-half form (Llama): x' = x·cos(pθ) + rotate_half(x)·sin(pθ).

    Rotating q at position i and k at position j by their positions makes q'·k' depend on i − j only.
    ``inv_freq`` (D/2,) holds the frequencies θ_m = base^(−2m/D) (times any scaling the model applies).
    """

    def __init__(self, inv_freq: torch.Tensor, attention_scaling: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("inv_freq", inv_freq.detach().float().clone(), persistent=False)  # (D/2,)
        self.attention_scaling = float(attention_scaling)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # (T, D/2): position × frequency
        angles = torch.cat([angles, angles], dim=-1)  # (T, D): the two halves of a head share angles
        cos = (angles.cos() * self.attention_scaling).to(q.dtype)  # (T, D)
        sin = (angles.sin() * self.attention_scaling).to(q.dtype)  # (T, D)
        q_rot = q * cos + rotate_half(q) * sin  # (…, H, T, D)
        k_rot = k * cos + rotate_half(k) * sin  # (…, H_kv, T, D)
        return q_rot, k_rot


@dataclass
class AttentionOutput:
    """Everything one forward computed. q (…, H, T, D) and k, v (…, H_kv, T, D) as scored (after RoPE);
    probs (…, H, T, T); heads (…, H, T, D) before W_o; concat (…, T, H·D); out (…, T, d)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    probs: torch.Tensor
    heads: torch.Tensor
    concat: torch.Tensor
    out: torch.Tensor


def _weight(*shape: int, init: bool = True) -> nn.Parameter:
    """A frozen parameter (inference only): GPT-2's N(0, 0.02²) init, or left empty when real weights will follow."""
    data = torch.randn(*shape) * 0.02 if init else torch.empty(*shape)
    return nn.Parameter(data, requires_grad=False)


class MultiHeadAttention(nn.Module):
    """The textbook multi-head attention (with grouped-query attention when ``n_kv_heads < n_heads``).

    Parameters are stored per head, so that "a separate projection per head" is literally what the code does:
    ``w_q`` (H, d, D) is H matrices of shape d × D. ``w_o`` (H·D, d) reads the concatenated heads.
    """

    def __init__(
        self, d_model: int, n_heads: int, head_dim: int, n_kv_heads: int | None = None, *,
        biases: tuple[str, ...] = (), scale: float | None = None, rope: nn.Module | RopeFn | None = None,
        q_norm: nn.Module | None = None, k_norm: nn.Module | None = None, init: bool = True,
    ) -> None:
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if n_heads % n_kv_heads:
            raise ExplorerError(
                _("{n_heads} query heads cannot be split evenly over {n_kv_heads} key/value heads.").format(
                    n_heads=n_heads, n_kv_heads=n_kv_heads
                )
            )
        self.d_model, self.n_heads, self.n_kv_heads, self.head_dim = d_model, n_heads, n_kv_heads, head_dim
        self.scale = head_dim**-0.5 if scale is None else float(scale)  # 1/√d_k
        self.w_q = _weight(n_heads, d_model, head_dim, init=init)  # (H, d, D): one query projection per head
        self.w_k = _weight(n_kv_heads, d_model, head_dim, init=init)  # (H_kv, d, D): one key projection per kv head
        self.w_v = _weight(n_kv_heads, d_model, head_dim, init=init)  # (H_kv, d, D)
        self.w_o = _weight(n_heads * head_dim, d_model, init=init)  # (H·D, d): mixes the concatenated heads back to d
        self.b_q = _weight(n_heads, 1, head_dim, init=init) if "q" in biases else None  # (H, 1, D): over tokens
        self.b_k = _weight(n_kv_heads, 1, head_dim, init=init) if "k" in biases else None
        self.b_v = _weight(n_kv_heads, 1, head_dim, init=init) if "v" in biases else None
        self.b_o = _weight(d_model, init=init) if "o" in biases else None
        self.rope = rope
        self.q_norm, self.k_norm = q_norm, k_norm  # per-head RMSNorm before RoPE (Qwen3); None elsewhere

    @property
    def group_size(self) -> int:
        """How many query heads share one key/value head (1 without GQA)."""
        return self.n_heads // self.n_kv_heads

    # ---- the computation -------------------------------------------------------------------------------------
    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (…, T, d) → raw q (…, H, T, D), k, v (…, H_kv, T, D): each head's own projection, no RoPE yet."""
        xh = x.unsqueeze(-3)  # (…, 1, T, d): one copy of the tokens, broadcast over heads
        q = xh @ self.w_q  # (…, 1, T, d) @ (H, d, D) -> (…, H, T, D)
        k = xh @ self.w_k  # (…, H_kv, T, D)
        v = xh @ self.w_v  # (…, H_kv, T, D)
        q = q + self.b_q if self.b_q is not None else q  # (…, H, T, D)
        k = k + self.b_k if self.b_k is not None else k  # (…, H_kv, T, D)
        v = v + self.b_v if self.b_v is not None else v  # (…, H_kv, T, D)
        return q, k, v

    def score_scale(self) -> float:
        """The factor the scores are multiplied by: 1/√d_k."""
        return self.scale

    def mask_fill(self) -> float:
        """What masked scores are set to before the softmax: −∞, so they get exactly zero weight."""
        return NEG_INF

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor | None = None, positions: torch.Tensor | None = None
    ) -> AttentionOutput:
        """x (…, T, d) → :class:`AttentionOutput`. ``allowed`` (T, T) bool (None: every key allowed);
        ``positions`` (T,) for RoPE (default 0…T−1)."""
        T = x.shape[-2]
        q, k, v = self.project(x)  # (…, H, T, D), (…, H_kv, T, D), (…, H_kv, T, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # (…, H, T, D), (…, H_kv, T, D): RMS-normalised per head
        if self.rope is not None:
            pos = torch.arange(T, device=x.device) if positions is None else positions  # (T,)
            q, k = self.rope(q, k, pos)  # same shapes: each vector turned by angles set by its position
        g = q.shape[-3] // k.shape[-3]  # query heads per key/value head (GQA); 1 for plain multi-head
        k_per_q = repeat_kv(k, g)  # (…, H, T, D): heads h·g … h·g+g−1 read kv head h
        v_per_q = repeat_kv(v, g)  # (…, H, T, D)
        heads, probs = attention_core(q, k_per_q, v_per_q, self.score_scale(), allowed, self.mask_fill())
        concat = heads.transpose(-3, -2).flatten(-2)  # (…, H, T, D) -> (…, T, H, D) -> (…, T, H·D)
        out = concat @ self.w_o  # (…, T, H·D) @ (H·D, d) -> (…, T, d)
        out = out + self.b_o if self.b_o is not None else out  # (…, T, d)
        return AttentionOutput(q, k, v, probs, heads, concat, out)

    # ---- loading a real layer ------------------------------------------------------------------------------
    @classmethod
    def from_projections(cls, proj: LayerProjections, rope: nn.Module | RopeFn | None = None) -> "MultiHeadAttention":
        """Copy a layer's weights (``nn.Linear`` layout (out, in)) into per-head slices."""
        H, H_kv, D = proj.n_heads, proj.n_kv_heads, proj.head_dim
        d = proj.w_q.shape[1]
        biases = tuple(name for name, b in zip("qkvo", (proj.b_q, proj.b_k, proj.b_v, proj.b_o)) if b is not None)
        module = cls(d, H, D, H_kv, biases=biases, scale=proj.scale, rope=rope if rope is not None else proj.rope,
                     q_norm=proj.q_norm, k_norm=proj.k_norm, init=False)
        per_head = lambda w, n: w.reshape(n, D, d).transpose(1, 2)  # noqa: E731 - (n·D, d) -> (n, d, D)
        with torch.no_grad():
            module.w_q = nn.Parameter(per_head(proj.w_q, H).contiguous(), requires_grad=False)  # (H, d, D)
            module.w_k = nn.Parameter(per_head(proj.w_k, H_kv).contiguous(), requires_grad=False)  # (H_kv, d, D)
            module.w_v = nn.Parameter(per_head(proj.w_v, H_kv).contiguous(), requires_grad=False)  # (H_kv, d, D)
            module.w_o = nn.Parameter(proj.w_o.T.contiguous(), requires_grad=False)  # (d, H·D) -> (H·D, d)
            for name, b, n in (("b_q", proj.b_q, H), ("b_k", proj.b_k, H_kv), ("b_v", proj.b_v, H_kv)):
                if b is not None:
                    setattr(module, name, nn.Parameter(b.reshape(n, 1, D).clone(), requires_grad=False))
            if proj.b_o is not None:
                module.b_o = nn.Parameter(proj.b_o.clone(), requires_grad=False)
        return module.to(proj.w_q.device)

    @classmethod
    def from_model(cls, model: Model, layer: int) -> "MultiHeadAttention":
        """The textbook module holding ``layer``'s real weights, with a from-scratch RoPE where the model uses one."""
        proj = layer_projections(model, layer)
        return cls.from_projections(proj, rope=rotary_for(model, proj))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def rotary_for(model: Model, proj: LayerProjections) -> nn.Module | RopeFn | None:
    """A from-scratch :class:`Rotary` with the model's own frequencies, checked against the model's rotary function.

    Rotary variants that the rotate-half form does not cover (partial or interleaved rotations) fail the check; the
    model's own function (``proj.rope``) is then used instead, so the result stays exact.
    """
    if proj.rope is None:
        return None
    source = getattr(model.base, "rotary_emb", None)
    inv_freq = getattr(source, "inv_freq", None)
    if not isinstance(inv_freq, torch.Tensor) or 2 * inv_freq.numel() != proj.head_dim:
        return proj.rope
    rotary = Rotary(inv_freq, getattr(source, "attention_scaling", 1.0)).to(proj.w_q.device)
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 9, proj.head_dim, generator=gen).to(proj.w_q.device)
    positions = torch.tensor([0, 1, 2, 7, 100, 1000, 4000, 8191], device=proj.w_q.device)
    probe = probe[:, : positions.numel()]
    mine, theirs = rotary(probe, probe, positions), proj.rope(probe, probe, positions)
    if all(torch.allclose(a, b, atol=1e-5, rtol=1e-5) for a, b in zip(mine, theirs)):
        return rotary
    return proj.rope


# ---- the tutorial variant -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Departures:
    """Which of the tutorial's three departures from the textbook are switched on."""

    embed_scale: bool = False  # scores ÷ √(embedding size) instead of ÷ √d_k
    shared_projection: bool = False  # one d_k × d_k projection shared by every head, on each head's slice of x
    large_negative_fill: bool = False  # masked scores filled with −1e20 instead of −∞


@dataclass
class SharedFit:
    """How well one shared d_k × d_k projection can stand in for the real per-head ones: R² per Q, K, V."""

    r2: dict[str, float]


class TutorialAttention(MultiHeadAttention):
    """The tutorial's self-attention: the textbook module with the switched-on :class:`Departures`.

    With ``shared_projection`` the tutorial cuts x (…, T, d) into H slices of D = d / H features and maps every slice
    with the *same* D × D matrices (``shared_q/k/v``); head h therefore only ever sees features h·D … h·D + D − 1,
    and the per-head ``w_q/w_k/w_v`` are gone. The tutorial uses ``nn.Linear(head_dim, head_dim, bias=False)``;
    where the real layer has biases the shared projection gets one too, so that the sharing is the only difference.
    The output projection stays full-size, as in the tutorial. Until :meth:`fit_shared_projection` runs, the
    shared matrices hold a random initialisation.
    """

    def __init__(self, textbook: MultiHeadAttention, departures: Departures) -> None:
        super().__init__(textbook.d_model, textbook.n_heads, textbook.head_dim, textbook.n_kv_heads,
                         scale=textbook.scale, rope=textbook.rope, q_norm=textbook.q_norm, k_norm=textbook.k_norm,
                         init=False)  # every parameter is replaced below
        self.departures = departures
        self.fit: SharedFit | None = None
        self.w_o, self.b_o = textbook.w_o, textbook.b_o  # the tutorial keeps a full output projection
        if not departures.shared_projection:
            for name in ("w_q", "w_k", "w_v", "b_q", "b_k", "b_v"):
                setattr(self, name, getattr(textbook, name))
            return
        H, D = textbook.n_heads, textbook.head_dim
        if H * D != textbook.d_model:
            raise ExplorerError(
                _("The shared projection cuts x into head slices, so it needs H·d_k = d_model; this layer has "
                  "{H}·{D} = {HD} ≠ {d_model}.").format(H=H, D=D, HD=H * D, d_model=textbook.d_model)
            )
        device = textbook.w_o.device
        for name in "qkv":
            setattr(self, f"w_{name}", None)
            setattr(self, f"b_{name}", None)
            setattr(self, f"shared_{name}", _weight(D, D).to(device))  # (D, D): one matrix for every head
            has_bias = getattr(textbook, f"b_{name}") is not None
            setattr(self, f"shared_b_{name}", _weight(D).to(device) if has_bias else None)  # (D,)
        self.n_kv_heads = H  # the tutorial has as many key/value heads as query heads

    def score_scale(self) -> float:
        if self.departures.embed_scale:
            return self.d_model**-0.5  # the tutorial: energy / embed_size ** (1/2)
        return self.scale

    def mask_fill(self) -> float:
        return TUTORIAL_FILL if self.departures.large_negative_fill else NEG_INF

    def head_slices(self, x: torch.Tensor) -> torch.Tensor:
        """x (…, T, d) → (…, H, T, D): head h's slice of the embedding, the only input its shared projection sees."""
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(-3, -2)  # (…, T, H, D) -> (…, H, T, D)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.departures.shared_projection:
            return super().project(x)
        xs = self.head_slices(x)  # (…, H, T, D)
        q = xs @ self.shared_q  # (…, H, T, D) @ (D, D) -> (…, H, T, D): the same matrix for every head
        k = xs @ self.shared_k  # (…, H, T, D): H key heads, no GQA in the tutorial
        v = xs @ self.shared_v  # (…, H, T, D)
        q = q + self.shared_b_q if self.shared_b_q is not None else q  # (…, H, T, D)
        k = k + self.shared_b_k if self.shared_b_k is not None else k
        v = v + self.shared_b_v if self.shared_b_v is not None else v
        return q, k, v

    def fit_shared_projection(self, textbook: MultiHeadAttention, x: torch.Tensor, ridge: float = 1e-6) -> SharedFit:
        """Least-squares shared D × D projections that best reproduce the real heads' raw q, k, v on x (T, d).

        The tutorial layer cannot hold the real weights (it has far fewer), so to run it on real text we give it
        the closest it can get: W = argmin Σ_h ‖x_h W (+ b) − y_h‖² over the heads' slices x_h and the real per-head
        outputs y_h (GQA key/value heads repeated per query head). Returns the R² on x itself (in-sample); use
        :meth:`shared_r2` on other text for an honest, out-of-sample figure.
        """
        if not self.departures.shared_projection:
            raise ExplorerError(_("This variant has no shared projection to fit."))
        slices, targets = self._slices_and_targets(textbook, x)
        for name, y in targets.items():
            bias = getattr(self, f"shared_b_{name}")
            design = torch.cat([slices, torch.ones_like(slices[:, :1])], 1) if bias is not None else slices
            gram = design.T @ design  # (D[+1], D[+1])
            gram = gram + ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
            solution = torch.linalg.solve(gram, design.T @ y)  # (D[+1], D)
            with torch.no_grad():
                getattr(self, f"shared_{name}").copy_(solution[: self.head_dim].to(x.dtype))
                if bias is not None:
                    bias.copy_(solution[self.head_dim].to(x.dtype))
        self.fit = SharedFit(self.shared_r2(textbook, x))
        return self.fit

    def shared_r2(self, textbook: MultiHeadAttention, x: torch.Tensor) -> dict[str, float]:
        """R² of the shared projections against the real heads' raw q, k, v on x: 1 − ‖y − ŷ‖² / ‖y − ȳ‖².
        1 would mean the real heads' matrices were all one matrix applied to their slices."""
        slices, targets = self._slices_and_targets(textbook, x)
        r2 = {}
        for name, y in targets.items():
            bias = getattr(self, f"shared_b_{name}")
            predicted = slices @ getattr(self, f"shared_{name}").double()  # (H·T, D)
            predicted = predicted + bias.double() if bias is not None else predicted
            r2[name] = float(1 - (y - predicted).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-30))
        return r2

    def _slices_and_targets(self, textbook: MultiHeadAttention, x: torch.Tensor):
        """Every head's slice of x stacked (H·T, D), and the real heads' raw q, k, v stacked the same way (float64)."""
        real_q, real_k, real_v = textbook.project(x)  # (H, T, D), (H_kv, T, D), (H_kv, T, D): pre-RoPE
        g = textbook.group_size
        stacked = lambda t: t.reshape(-1, self.head_dim).double()  # noqa: E731 - (H, T, D) -> (H·T, D)
        targets = {"q": stacked(real_q), "k": stacked(repeat_kv(real_k, g)),
                   "v": stacked(repeat_kv(real_v, g))}
        return stacked(self.head_slices(x)), targets


def tutorial_variant(textbook: MultiHeadAttention, departures: Departures, fit_x: torch.Tensor) -> TutorialAttention:
    """The tutorial module for these departures; its shared projection (if switched on) is fitted to the layer on
    ``fit_x`` (T, d), ideally a different text from the one it is then measured on."""
    variant = TutorialAttention(textbook, departures)
    if departures.shared_projection:
        variant.fit_shared_projection(textbook, fit_x)
    return variant
