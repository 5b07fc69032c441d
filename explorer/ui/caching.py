"""The one way the app caches what it computes from a trace or a model: ``st.cache_data`` keyed by fingerprints.

A cached function takes the :class:`~explorer.Trace` and :class:`~explorer.Model` it reads as ordinary arguments;
Streamlit hashes each by its ``fingerprint`` (model, device, dtype, token ids, the mask each layer ran with, the
ablated heads) instead of pickling GiBs of tensors. A trace seen by word
(:class:`~explorer.capture.word_trace.WordTrace`) hashes as its token trace's fingerprint and its unit, so the token
and word views of one trace never share an entry. So a trace that is not the sidebar's (another text, another mask,
another model, an ablated run) can never be handed another trace's result.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import streamlit as st

from ..capture.model import Model
from ..capture.trace import Trace
from ..capture.word_trace import WordTrace

F = TypeVar("F", bound=Callable)

HASH_FUNCS = {
    Trace: lambda trace: trace.fingerprint,
    WordTrace: lambda trace: (trace.tokens_trace.fingerprint, trace.unit),
    Model: lambda model: model.fingerprint,
}


def cached(max_entries: int) -> Callable[[F], F]:
    """``st.cache_data`` for analyses: no spinner (pages show their own progress), at most ``max_entries`` results,
    traces and models keyed by their fingerprints. Every other argument must be small and hashable by Streamlit."""
    return st.cache_data(show_spinner=False, max_entries=max_entries, hash_funcs=HASH_FUNCS)


def unit_key(trace: Trace | WordTrace) -> tuple[str, str]:
    """A trace seen by token or by word as a plain key (its token trace's fingerprint and the unit of its maps), for
    code that keys by hand; :func:`cached` functions take the trace itself and need none."""
    tokens = trace.tokens_trace if isinstance(trace, WordTrace) else trace
    return (tokens.fingerprint, trace.unit)
