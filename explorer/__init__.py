"""Attention Explorer's engine: load a real model, trace a text, read back exactly what attention computed.

    >>> import explorer
    >>> model = explorer.load("smollm2", device="cpu")
    >>> trace = model.trace("The cat sat on the mat.")
    >>> trace.attention(layer=3, head=0).sum(-1)   # rows sum to 1

The engine is grouped by what it does, lower groups never importing higher ones:
``capture/`` (load a model, record its attention, trace, intervene) → ``analysis/`` (head statistics, lens, rollout,
geometry, mask effects, export) and ``decoding/`` (step-by-step generation, sampling, fill-mask) → ``from_scratch/``
(textbook attention, the Q/K/V walk-through, kernels) → ``figures/`` (pure plotly builders). No Streamlit in any of
them: the app (``app.py``, ``pages/``, ``explorer/ui/``) is built on top.
"""

from .analysis.qk_attribution import QKAttribution, qk_attribution
from .analysis.stats import head_stats
from .capture.devices import cuda_available, resolve_device
from .capture.embedded import DEFAULT_MODEL, EMBEDDED
from .capture.intervention import PatchResult
from .capture.loading import load
from .capture.model import Model
from .capture.tokens import Encoded
from .capture.trace import LayerView, Trace
from .decoding.generation import generate
from .errors import ExplorerError, InstrumentationError

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "Encoded",
    "ExplorerError",
    "InstrumentationError",
    "LayerView",
    "Model",
    "PatchResult",
    "QKAttribution",
    "Trace",
    "cuda_available",
    "generate",
    "head_stats",
    "load",
    "qk_attribution",
    "resolve_device",
]
