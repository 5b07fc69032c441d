"""The one exception type the engine raises for problems a user can fix."""

from __future__ import annotations


class ExplorerError(Exception):
    """A problem with the user's request (model name, device, text, knob), with a message written for them.

    The app shows ``str(error)`` as is, so the message must say what went wrong and what to do instead.
    """


def check_layer_head(layer: int, n_layers: int, head: int | None = None, n_heads: int | None = None) -> None:
    """Raise the one message every per-layer (and per-head) API gives for an index outside the model."""
    if not 0 <= layer < n_layers:
        raise ExplorerError(f"Layer {layer} is out of range: this model has layers 0–{n_layers - 1}.")
    if head is not None and not 0 <= head < n_heads:
        raise ExplorerError(f"Head {head} is out of range: this model has heads 0–{n_heads - 1}.")


class InstrumentationError(ExplorerError):
    """The model does not route attention through ``transformers``' attention interface, or asks for a
    feature (softcap, attention sinks, position bias) that the recording attention does not implement."""
