"""The one exception type the engine raises for problems a user can fix."""

from __future__ import annotations


class ExplorerError(Exception):
    """A problem with the user's request (model name, device, text, knob), with a message written for them.

    The app shows ``str(error)`` as is, so the message must say what went wrong and what to do instead.
    """


class InstrumentationError(ExplorerError):
    """The model does not route attention through ``transformers``' attention interface, or asks for a
    feature (softcap, attention sinks, position bias) that the recording attention does not implement."""
