"""The one exception type the engine raises for problems a user can fix."""

from __future__ import annotations

from .i18n import _


class ExplorerError(Exception):
    """A problem with the user's request (model name, device, text, knob), with a message written for them.

    The app shows ``str(error)`` as is, so the message must say what went wrong and what to do instead.
    """


def check_layer_head(layer: int, n_layers: int, head: int | None = None, n_heads: int | None = None) -> None:
    """Raise the one message every per-layer (and per-head) API gives for an index outside the model."""
    if not 0 <= layer < n_layers:
        raise ExplorerError(
            _("Layer {layer} is out of range: this model has layers 0–{last}.").format(layer=layer, last=n_layers - 1)
        )
    if head is not None and not 0 <= head < n_heads:
        raise ExplorerError(
            _("Head {head} is out of range: this model has heads 0–{last}.").format(head=head, last=n_heads - 1)
        )


def check_heads(heads: slice, n_heads: int) -> slice:
    """``heads`` as a plain slice start:stop of 0…n_heads−1, or the one message every head-range API gives for an
    empty or strided range."""
    start, stop, step = heads.indices(n_heads)
    if step != 1 or stop <= start:
        raise ExplorerError(_("Choose a non-empty range of heads within 0–{last}.").format(last=n_heads - 1))
    return slice(start, stop)


class InstrumentationError(ExplorerError):
    """The model does not route attention through ``transformers``' attention interface, or asks for a
    feature (softcap, attention sinks, position bias) that the recording attention does not implement."""
