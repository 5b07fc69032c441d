"""Cached resources shared by all sessions: models (loaded once per process) and traces (a bounded LRU), and the
sidebar's model and trace as a page asks for them."""

from __future__ import annotations

import streamlit as st
import torch

from ..capture.embedded import EMBEDDED
from ..capture.loading import is_explicit_path, load
from ..capture.model import Model
from ..capture.trace import Trace
from ..errors import ExplorerError
from ..escape import md_escape
from ..i18n import N_, _, join, number
from .state import MASK_LABELS, MAX_TEXT_CHARS, current_selection, settings, visitor_is_local
from .trace_cache import TraceCache, TraceKey
from .widgets import progress

PATH_HIDDEN = N_(
    "Could not load a model from a path on this server. Why is shown only to visitors on the server's own machine, "
    "since it would tell whether the path exists."
)


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_model(name: str, device: str, local_paths: bool, dtype: str, device_map: str | None) -> Model:
    allow_hub = settings().allowed_models == "any" or None
    return load(name, device=device, allow_local_paths=local_paths, allow_hub=allow_hub, dtype=dtype,
                device_map=device_map)


@st.cache_resource(show_spinner=False)
def _trace_cache() -> TraceCache:
    s = settings()
    return TraceCache(max_entries=s.trace_cache_entries, max_bytes=s.trace_cache_mb << 20)


@st.cache_resource(show_spinner=False)
def _loaded_keys() -> set:
    return set()


# ---- models ---------------------------------------------------------------------------------------------------
def model_for(name: str, device: str) -> Model:
    """The cached model, with visible progress the first time this process loads it.

    A visitor from another machine may load a path only when it is spelt as one (``/``, ``.``, ``~``): a bare name
    is a hub id for them, whatever lies in the server's working folder. And every failure to load a path gets one
    message, :data:`PATH_HIDDEN`, so that the message never tells them whether the path exists.
    """
    s = settings()
    if not s.model_allowed(name):
        raise ExplorerError(_("This server only allows the embedded models: {models}.").format(
            models=join(EMBEDDED)))
    local, explicit = visitor_is_local(), is_explicit_path(name)
    local_paths = s.allow_local_paths and (local or explicit)
    try:
        return _model_with_progress(name, device, local_paths)
    except ExplorerError:
        if local or not (explicit and local_paths):  # with paths off the engine refuses before looking at the disk
            raise
        raise ExplorerError(_(PATH_HIDDEN)) from None


def _model_with_progress(name: str, device: str, local_paths: bool) -> Model:
    s = settings()
    key = (name, device, local_paths, s.dtype, s.device_map)  # the server's AE_DTYPE and AE_DEVICE_MAP, every load
    if key in _loaded_keys():
        return _load_model(*key)
    with st.status(_("Loading **{model}** on {device}…").format(model=md_escape(name), device=device),
                   expanded=False) as status:
        st.write(_("First load in this server process; later pages and sessions reuse it."))
        if name == "smollm2":
            st.write(_("The first run ever converts the GGUF file once (about 20 s); later runs read the cache."))
        try:
            model = _load_model(*key)
        except Exception:
            status.update(label=_("Could not load **{model}**").format(model=md_escape(name)), state="error")
            raise
        status.update(label=_("Loaded **{model}** ({layers} layers × {heads} heads)").format(
            model=md_escape(name), layers=model.n_layers, heads=model.n_heads), state="complete")
    _loaded_keys().add(key)
    return model


def current_model() -> Model:
    """The selected model (raises ExplorerError with a user-facing message; call inside
    :func:`explorer.ui.widgets.guard`)."""
    sel = current_selection()
    if not sel.model:
        raise ExplorerError(_("Type a Hugging Face model id or a folder in the sidebar."))
    return model_for(sel.model, sel.device)


# ---- traces ---------------------------------------------------------------------------------------------------
def trace_for(model: Model, text: str, mask: str | None, max_tokens: int | None = None) -> Trace:
    """A cached trace of ``text`` (cut to the app's token cap, or to ``max_tokens`` when that is lower) under
    ``mask``."""
    if len(text) > MAX_TEXT_CHARS:
        raise ExplorerError(
            _("The text has {n} characters; the app accepts at most {limit}. Shorten it.").format(
                n=number(len(text)), limit=number(MAX_TEXT_CHARS))
        )
    cache = _trace_cache()
    if mask is not None and mask == model.default_mask:
        # The model's own mask asked for by name (Masking, Compare): the trace under mask=None (the sidebar's) is
        # the same computation unless the model's own mask is something else (sliding windows), so reuse it.
        own = cache.get(make_trace_key(model.name, model.device, model.dtype, text, None, max_tokens))
        if own is not None and all(layer.mask_kind == mask for layer in own.layers):
            return own
    key = make_trace_key(model.name, model.device, model.dtype, text, mask, max_tokens)

    label = _("Running {model} over the text, layer by layer…").format(model=md_escape(model.name))

    def build() -> Trace:
        with progress(label) as update:
            def heard(done: float) -> None:
                cache.report(key, done)  # for sessions waiting on this build
                update(done)  # a Streamlit call: where a rerun of this session stops the stale forward pass
            return model.trace(text, mask=mask, max_tokens=key.max_tokens, on_progress=heard)

    # Another session tracing the same text and model: wait for its trace, showing its progress (single flight)
    with progress(label) as waiting:
        return cache.get_or_build(key, build, on_wait=waiting)


def rerun_mask(trace: Trace) -> str | None:
    """The ``mask=`` that runs a model as ``trace`` ran: None where the trace ran under the model's own mask (sliding
    windows included), else the override it ran with. (A second run of the same tokens, a probe, a calibration text.)"""
    return None if trace.mask_is_model_default else trace.mask


def make_trace_key(model: str, device, dtype: torch.dtype | str, text: str, mask: str | None,
                   max_tokens: int | None = None) -> TraceKey:
    """The key of the shared trace cache: what a trace is asked for with, before it exists (a trace once built is
    told apart by its own ``fingerprint``). The text is cut to the app's token cap, or to ``max_tokens`` when that
    is lower: a page that works on the first tokens of a long text."""
    cap = settings().max_tokens
    return TraceKey(model, str(device), dtype_name(dtype), text, mask,
                    cap if max_tokens is None else min(cap, max_tokens))


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``: the name ``explorer.load`` and ``AE_DTYPE`` use."""
    return str(dtype).removeprefix("torch.")


def cut_by_page(trace: Trace, max_tokens: int | None) -> bool:
    """Was ``trace`` cut to a page's own ``max_tokens``, below the app's cap?"""
    return bool(trace.truncated_from and max_tokens is not None and trace.n_tokens == max_tokens
                and max_tokens < settings().max_tokens)


def truncation_notice(trace: Trace) -> None:
    """Say when a trace was cut to the app's cap or to the model's context."""
    if trace.truncated_from:
        cap = settings().max_tokens
        notice = (_("The text has {n} tokens; showing the first {shown} (the app's cap, AE_MAX_TOKENS={cap}).")
                  if trace.n_tokens == cap else
                  _("The text has {n} tokens; showing the first {shown} (the model's context length)."))
        st.info(notice.format(n=number(trace.truncated_from), shown=number(trace.n_tokens), cap=cap))


def current_trace(mask: str | None | type(...) = ..., max_tokens: int | None = None) -> Trace:
    """The trace of the sidebar's text under the sidebar's mask (or ``mask`` when given), cut to the app's cap or to
    a page's own ``max_tokens`` (the page then says why it cut the text; see :func:`cut_by_page`)."""
    sel = current_selection()
    model = current_model()
    trace = trace_for(model, sel.text, sel.mask if mask is ... else mask, max_tokens)
    if not cut_by_page(trace, max_tokens):
        truncation_notice(trace)
    if mask is ... and not trace.mask_is_model_default:
        st.warning(
            _("What-if: {model} was trained with a {trained} mask and is running under a {mask} one here. The "
              "numbers are real, but not what the model normally computes.").format(
                model=md_escape(model.name), trained=_(MASK_LABELS.get(model.default_mask, model.default_mask)).lower(),
                mask=_(MASK_LABELS.get(trace.mask, trace.mask)).lower()),
            icon=":material/science:",
        )
    return trace
