"""Attention Explorer's engine: load a real model, trace a text, read back exactly what attention computed.

    >>> import explorer
    >>> model = explorer.load("smollm2", device="cpu")
    >>> trace = model.trace("The cat sat on the mat.")
    >>> trace.attention(layer=3, head=0).sum(-1)   # rows sum to 1

No Streamlit here: the app (``app.py``, ``pages/``, ``explorer/ui*``) is built on top.
"""

from .capture.devices import cuda_available, resolve_device
from .capture.embedded import DEFAULT_MODEL, EMBEDDED
from .errors import ExplorerError, InstrumentationError
from .capture.loading import load
from .capture.model import Encoded, Model
from .capture.trace import Trace

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "Encoded",
    "ExplorerError",
    "InstrumentationError",
    "Model",
    "Trace",
    "cuda_available",
    "load",
    "resolve_device",
]
