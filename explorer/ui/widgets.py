"""Small widgets every page uses: the error guard, a progress bar for engine passes, a quoted token, the GQA note,
a map's size in its unit (tokens or words) and the word view's note, and the layer/head selectors whose choice is
shared by every page (and kept in the URL)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator

import streamlit as st

from ..capture.tokens import display_label
from ..capture.trace import Trace
from ..capture.word_trace import WordTrace
from ..errors import ExplorerError
from ..escape import md_escape
from ..i18n import _, join, ngettext

log = logging.getLogger("attention_explorer")


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Show a user's mistake as a clear message and anything else as a short error, never as a traceback."""
    try:
        yield
    except ExplorerError as exc:  # a plain sentence that may quote a model name, a path or another library's error
        st.error(md_escape(exc), icon="⚠️")
    except Exception as exc:  # noqa: BLE001 - the page must survive; the log keeps the traceback
        log.exception("unexpected error")
        st.error(_("Something went wrong ({error}). Your text and settings are kept; try another input.").format(
            error=type(exc).__name__))


@contextlib.contextmanager
def progress(text: str, after_s: float = 0.5) -> Iterator[Callable[[float], None]]:
    """A progress bar for work that reports the fraction it has done (engine passes take an ``on_progress``).

    It appears only once the work has run ``after_s`` (a short text's pass ends before a bar could flash) and is
    removed when the work ends. Its element is made here, so inside ``st.cache_data`` a cache hit replays it ending
    empty; a bar made outside a cached function could not be updated from inside it. ``text`` is Markdown: escape
    what it quotes (md_escape)."""
    slot = st.empty()
    start = time.perf_counter()

    def update(done: float) -> None:
        if time.perf_counter() - start >= after_s:
            slot.progress(min(1.0, max(0.0, float(done))), text=text)

    try:
        yield update
    finally:
        slot.empty()


def quoted(token: str) -> str:
    """A token for Markdown (st.markdown, st.caption, …): visible whitespace, escaped, in quotes."""
    return "“" + md_escape(display_label(token)) + "”"


def kv_sharing_note(trace: Trace, head: int) -> str | None:
    """Which key/value head this query head reads, where heads share them (GQA, or MQA with a single K/V head);
    None when every query head has its own."""
    if trace.n_kv_heads == trace.n_heads:
        return None
    if trace.n_kv_heads == 1:
        return _("All {n} query heads read the same single key/value head (multi-query attention, MQA).").format(
            n=trace.n_heads)
    kv = trace.kv_head(head)
    mates = join(str(h) for h in trace.heads_sharing_kv(kv) if h != head)
    return _("Head {head} reads key/value head {kv}, shared with heads {mates} (grouped-query attention, GQA).").format(
        head=head, kv=kv, mates=mates)


def layer_head_selectors(trace: Trace, key: str, head: bool = True, container=None) -> tuple[int, int]:
    """Layer (and head) selectors whose choice is shared by every page and kept in the URL.

    Values out of range (e.g. from an edited URL) are clamped with a message rather than crashing.
    """
    where = container or st
    labels = {"layer": _("Layer"), "head": _("Head")}
    out_of_range = {
        "layer": _("Layer {value} is out of range for this model (0–{last}); showing 0."),
        "head": _("Head {value} is out of range for this model (0–{last}); showing 0."),
    }
    chosen = []
    for name, count in (("layer", trace.n_layers), ("head", trace.n_heads))[: 2 if head else 1]:
        shared = f"_ae_{name}"
        value = st.session_state.get(shared, 0)
        if not 0 <= value < count:
            if value != 0:
                st.warning(out_of_range[name].format(value=value, last=count - 1))
            value = 0
        widget_key = f"{key}_{name}"
        st.session_state[widget_key] = value

        def _store(shared=shared, widget_key=widget_key):
            st.session_state[shared] = st.session_state[widget_key]

        where.number_input(labels[name], 0, count - 1, step=1, key=widget_key, on_change=_store)
        st.session_state[shared] = value
        chosen.append(int(value))
    return (chosen[0], chosen[1] if head else 0)


def unit_count(n: int, unit: str) -> str:
    """"12 tokens" or "9 words", translated: the size of a map in its unit (a Trace's or WordTrace's ``unit``)."""
    if unit == "word":
        return ngettext("{n} word", "{n} words", n).format(n=n)
    return ngettext("{n} token", "{n} tokens", n).format(n=n)


def word_view_note(trace: Trace | WordTrace) -> None:
    """In word view, say what a cell is and how many tokens the words gather."""
    if trace.unit == "word":
        st.caption(_("Word view: {words} from {tokens}. Attention to a word is the sum over its pieces, attention "
                     "from a word the mean over them (Clark et al. 2019), so each row still sums to 1.").format(
            words=unit_count(trace.n_tokens, "word"), tokens=unit_count(trace.tokens_trace.n_tokens, "token")))
