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

What a notebook needs is exported here (the quickstart imports nothing deeper): the numbers (``head_stats``,
``sink_shares``, ``next_token_loss``, ``device_agreement``, ``induction_probe``, ``formula_steps``), step-by-step
generation (``generate``, ``Stepper``), and the figures in :mod:`explorer.figures.notebook`.
"""

from .analysis.agreement import device_agreement
from .analysis.loss import next_token_loss
from .analysis.attribution import Attribution, attribute
from .analysis.deletion import DeletionCurve, deletion_curve
from .analysis.qk_attribution import QKAttribution, qk_attribution
from .analysis.stats import head_stats, induction_probe, sink_shares
from .capture.devices import cuda_available, resolve_device
from .capture.embedded import DEFAULT_MODEL, EMBEDDED
from .capture.intervention import PatchResult
from .capture.loading import load
from .capture.model import Model
from .capture.tokens import Encoded
from .capture.trace import LayerView, Trace
from .decoding.generation import Stepper, generate
from .errors import ExplorerError, InstrumentationError
from .from_scratch.walkthrough import formula_steps

__all__ = [
    "Attribution",
    "DeletionCurve",
    "attribute",
    "deletion_curve",
    "DEFAULT_MODEL",
    "EMBEDDED",
    "Encoded",
    "ExplorerError",
    "InstrumentationError",
    "LayerView",
    "Model",
    "PatchResult",
    "QKAttribution",
    "Stepper",
    "Trace",
    "cuda_available",
    "device_agreement",
    "formula_steps",
    "generate",
    "head_stats",
    "induction_probe",
    "load",
    "next_token_loss",
    "qk_attribution",
    "resolve_device",
    "sink_shares",
]
