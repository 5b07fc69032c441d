"""A Trace: everything one forward pass of one text used in its attention, with exact maps rebuilt on demand.

Holding every map of a 30-layer, 9-head model at n = 4096 would take ~18 GiB; the trace holds Q/K/V and the
log-sum-exp of each score row instead (~0.5 GiB) and rebuilds a head's map with one matmul when asked.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..i18n import _
from ..errors import ExplorerError, check_layer_head
from .recorder import AttentionRecord, attention_probs

Mask = Literal["causal", "bidirectional", "sliding", "custom"]


@dataclass
class Trace:
    """The attention of one text through one model.

    Attributes:
        text: the input text. ``tokens``: one readable string per token. ``token_ids``: the ids the model ran on.
        mask: the mask that ran (``"causal"`` or ``"bidirectional"``; ``"sliding"`` when some layers see only a
            window of recent keys, as in Gemma 3: each record's ``mask_kind`` and ``window`` say which; else
            ``"custom"``).
        mask_is_model_default: False when an override made some layer's mask differ from the model's own (the
            computation is then a what-if); an override equal to the model's own mask leaves it True.
        hidden_states: the residual stream, ``n_layers + 1`` tensors (n, d_model), embeddings first.
        final_hidden: the model's last hidden state (after its final norm), which the unembedding reads.
    """

    text: str
    tokens: list[str]
    token_ids: list[int]
    records: list[AttentionRecord]
    mask: Mask
    mask_is_model_default: bool
    model_name: str
    truncated_from: int | None = None
    hidden_states: tuple[torch.Tensor, ...] = ()
    final_hidden: torch.Tensor | None = None
    ablated: tuple[tuple[int, int], ...] = ()  # (layer, head) pairs switched off in this run (Model.trace's ablate)
    ablation: str | None = None  # how they were: "zero" or "mean"; None when nothing was ablated
    # The model's unembedding, held weakly: a cached trace must not keep a GiB-sized model alive after it is unloaded.
    _unembed: weakref.WeakMethod | None = field(default=None, repr=False)
    _logits: torch.Tensor | None = field(default=None, repr=False)

    # ---- sizes -------------------------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def n_layers(self) -> int:
        return len(self.records)

    @property
    def n_heads(self) -> int:
        return self.records[0].n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.records[0].n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.records[0].q.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.records[0].q.device

    # ---- GQA ---------------------------------------------------------------------------------------------
    def kv_head(self, head: int) -> int:
        """The key/value head that query head ``head`` reads (GQA: several query heads share one)."""
        self._check(0, head)
        return head // self.records[0].group_size

    def heads_sharing_kv(self, kv_head: int) -> list[int]:
        g = self.records[0].group_size
        return list(range(kv_head * g, (kv_head + 1) * g))

    # ---- per-head tensors (float32, CPU) -----------------------------------------------------------------
    def record(self, layer: int) -> AttentionRecord:
        self._check(layer, 0)
        return self.records[layer]

    def attention(self, layer: int, head: int) -> torch.Tensor:
        """The exact (n, n) attention probabilities of one head; row i is query i. Rows sum to 1."""
        self._check(layer, head)
        r = self.records[layer]
        kv = head // r.group_size
        p = attention_probs(r.q[head : head + 1], r.k[kv : kv + 1], r.lse[head : head + 1], r.scale, r.mask_kind, r.allowed, r.window)
        return p[0].float().cpu()

    def attentions(self, layer: int) -> torch.Tensor:
        """All heads of one layer: (H, n, n)."""
        r = self.record(layer)
        return attention_probs(r.q, r.k, r.lse, r.scale, r.mask_kind, r.allowed, r.window).float().cpu()

    def q(self, layer: int, head: int) -> torch.Tensor:
        """(n, head_dim): the query vectors used in the scores (after RoPE where the model uses it)."""
        self._check(layer, head)
        return self.records[layer].q[head].float().cpu()

    def k(self, layer: int, head: int) -> torch.Tensor:
        """(n, head_dim): the keys query head ``head`` is scored against (its shared KV head under GQA)."""
        self._check(layer, head)
        return self.records[layer].k[self.kv_head(head)].float().cpu()

    def v(self, layer: int, head: int) -> torch.Tensor:
        self._check(layer, head)
        return self.records[layer].v[self.kv_head(head)].float().cpu()

    def scale(self, layer: int) -> float:
        return self.record(layer).scale

    def lse(self, layer: int, head: int) -> torch.Tensor:
        """(n,) log-sum-exp of each scaled, masked score row: the softmax normaliser in log space."""
        self._check(layer, head)
        return self.records[layer].lse[head].float().cpu()

    def allowed(self, layer: int = 0) -> torch.Tensor:
        """(n, n) bool: which (query, key) pairs the mask allowed."""
        return self.record(layer).allowed_matrix().cpu()

    def x(self, layer: int) -> torch.Tensor:
        """(n, d_model): the attention module's input at ``layer`` (the normed hidden state it projects)."""
        r = self.record(layer)
        if r.x is None:
            raise ExplorerError(_("This trace did not keep attention inputs."))
        return r.x.float().cpu()

    def head_output(self, layer: int, head: int) -> torch.Tensor:
        """(n, head_dim): Σ_j p_ij v_j for one head, before the output projection."""
        return self.attention(layer, head) @ self.v(layer, head)

    # ---- outputs -----------------------------------------------------------------------------------------
    @property
    def logits(self) -> torch.Tensor | None:
        """(n, vocab) next-token logits for language models (computed on first use), None for encoders.

        Raises ExplorerError when they were not computed before the model that made the trace was unloaded.
        """
        if self._unembed is None:
            return None
        if self._logits is None:
            unembed = self._unembed()
            if unembed is None:
                raise ExplorerError(
                    _("The model '{model}' that made this trace is no longer loaded, so its logits cannot be "
                      "computed. Trace the text again.").format(model=self.model_name)
                )
            self._logits = unembed(self.final_hidden).float().cpu()
        return self._logits

    @property
    def model_alive(self) -> bool:
        """Is the model that made this trace still loaded? (A cache may drop traces whose model is gone.)"""
        return self._unembed is None or self._unembed() is not None

    def _check(self, layer: int, head: int) -> None:
        check_layer_head(layer, self.n_layers, head, self.n_heads)

    def nbytes(self) -> int:
        """Approximate memory held by the trace's tensors (for cache accounting)."""
        total = sum(t.numel() * t.element_size() for t in self.hidden_states)
        for r in self.records:
            for t in (r.q, r.k, r.v, r.lse, r.x, r.allowed):
                if t is not None:
                    total += t.numel() * t.element_size()
        if self._logits is not None:
            total += self._logits.numel() * self._logits.element_size()
        return total
