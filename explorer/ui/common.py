"""Streamlit glue shared by every page: the sidebar, cached models and traces, selectors, error display.

Only ``explorer/ui*`` modules import Streamlit. Pages stay thin: they call :func:`current_trace` /
:func:`current_model`, read their own widgets, call the engine and draw figures built by ``explorer.figures``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import streamlit as st
import torch

from ..capture.devices import cuda_available, tf32_enabled
from ..capture.embedded import DEFAULT_MODEL, EMBEDDED
from ..errors import ExplorerError
from ..escape import md_escape
from ..i18n import LANGUAGES, N_, _, browser_language, number, set_language
from ..capture.loading import is_explicit_path, load
from ..capture.model import Model
from .settings import Settings, is_loopback
from ..capture.tokens import display_label
from ..capture.trace import Trace
from .trace_cache import TraceCache, TraceKey

log = logging.getLogger("attention_explorer")

DEFAULT_TEXT = "The cat sat on the mat because it was tired."
MASK_LABELS = {"model": N_("Model default"), "causal": N_("Causal"), "bidirectional": N_("Bidirectional")}
MAX_TEXT_CHARS = 100_000  # beyond this we refuse before tokenising; the token cap handles the rest
MAX_MODEL_CHARS = 200  # a hub id is at most 96 + 1 + 96; a folder path rarely longer
OTHER_MODEL = "other…"
DEVICES = ("auto", "cpu", "cuda")
MAX_INDEX_DIGITS = 4  # layer/head from a link: 0–9999, checked against the model later
PATH_HIDDEN = N_(
    "Could not load a model from a path on this server. Why is shown only to visitors on the server's own machine, "
    "since it would tell whether the path exists."
)
LANGUAGE_KEY = "lang"  # session state and URL parameter


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The AE_* settings; their permissive defaults hold only while the server listens on this machine alone."""
    return Settings.from_env(local_only=is_loopback(st.get_option("server.address")))


def visitor_is_local() -> bool:
    """Is this session's browser on the server's own machine? (Streamlit reports no IP address for loopback
    connections. A reverse proxy on the same machine makes every visitor look local: see docs/deployment.md.)"""
    return st.context.ip_address is None


@dataclass(frozen=True)
class Selection:
    """What the sidebar asks for. ``mask`` is None for the model's own mask."""

    model: str
    device: str
    text: str
    mask: str | None


# ---- cached resources (shared by all sessions) ---------------------------------------------------------------
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


def model_for(name: str, device: str) -> Model:
    """The cached model, with visible progress the first time this process loads it.

    A visitor from another machine may load a path only when it is spelt as one (``/``, ``.``, ``~``): a bare name
    is a hub id for them, whatever lies in the server's working folder. And every failure to load a path gets one
    message, :data:`PATH_HIDDEN`, so that the message never tells them whether the path exists.
    """
    s = settings()
    if not s.model_allowed(name):
        raise ExplorerError(_("This server only allows the embedded models: {models}.").format(
            models=", ".join(EMBEDDED)))
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
        if own is not None and all(r.mask_kind == mask for r in own.records):
            return own
    key = make_trace_key(model.name, model.device, model.dtype, text, mask, max_tokens)

    def build() -> Trace:
        with progress(_("Running {model} over the text, layer by layer…").format(model=md_escape(model.name))) as update:
            return model.trace(text, mask=mask, max_tokens=key.max_tokens, on_progress=update)

    return cache.get_or_build(key, build)


def make_trace_key(model: str, device, dtype: torch.dtype | str, text: str, mask: str | None,
                   max_tokens: int | None = None) -> TraceKey:
    """The one builder of :class:`TraceKey`: a trace of ``text`` cut to the app's token cap (or to ``max_tokens``
    when that is lower: a page that works on the first tokens of a long text)."""
    cap = settings().max_tokens
    return TraceKey(model, str(device), dtype_name(dtype), text, mask,
                    cap if max_tokens is None else min(cap, max_tokens))


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``: the name ``explorer.load`` and ``AE_DTYPE`` use."""
    return str(dtype).removeprefix("torch.")


def trace_key(trace: Trace, max_tokens: int | None = None) -> TraceKey:
    """The key for st.cache_data on analyses of a sidebar trace: its model, device, dtype and text, the sidebar's
    mask (None: the model's own; analyses re-trace with it) and the token cap (``max_tokens``: as for trace_for)."""
    return make_trace_key(trace.model_name, trace.device, trace.dtype, trace.text, current_selection().mask,
                          max_tokens)


# ---- session state and URL --------------------------------------------------------------------------------
@dataclass(frozen=True)
class UrlView:
    """The view a link asks for, validated. ``None``: the link does not say (or said something not understood,
    which ``notices`` reports as Markdown with the link's values escaped)."""

    model: str | None = None
    device: str | None = None  # one of DEVICES
    text: str | None = None
    mask: str | None = None  # a key of MASK_LABELS
    lang: str | None = None  # a key of explorer.i18n.LANGUAGES
    layer: int | None = None
    head: int | None = None
    notices: tuple[str, ...] = field(default=())


def parse_url(params: Mapping[str, str], allow_any_model: bool) -> UrlView:
    """The one parser of URL parameters (user input: anyone can craft a link). Numbers are ASCII digits only
    (``"²".isdigit()`` is true, ``int("²")`` raises), enums come from their known sets, strings are bounded;
    anything else is dropped with a notice. Unknown parameters (Streamlit's own ``embed``, …) are left alone."""
    found: dict = {}
    notices: list[str] = []

    def ignored(key: str, why: str) -> None:
        notices.append(_("The link's {key} “{value}” was ignored: {why}.").format(
            key=key, value=md_escape(_clip(params[key])), why=why))

    if "model" in params:
        model = params["model"].strip()
        if model in EMBEDDED or (allow_any_model and 0 < len(model) <= MAX_MODEL_CHARS):
            found["model"] = model
        else:
            why = (_("this server opens {models} or a Hugging Face id or folder of at most {n} characters")
                   if allow_any_model else _("this server opens {models} only"))
            ignored("model", why.format(models=", ".join(EMBEDDED), n=MAX_MODEL_CHARS))
    for key, known in (("device", DEVICES), ("mask", tuple(MASK_LABELS)), ("lang", tuple(LANGUAGES))):
        if key in params:
            if params[key] in known:
                found[key] = params[key]
            else:
                ignored(key, _("it is none of {values}").format(values=", ".join(known)))
    if "text" in params:
        found["text"] = params["text"][:MAX_TEXT_CHARS]
        if len(params["text"]) > MAX_TEXT_CHARS:
            notices.append(_("The link's text was cut to its first {n} characters.").format(
                n=number(MAX_TEXT_CHARS)))
    for key in ("layer", "head"):
        if key in params:
            raw = params[key]
            if raw.isascii() and raw.isdigit() and len(raw) <= MAX_INDEX_DIGITS:
                found[key] = int(raw)
            else:
                ignored(key, _("it is not a whole number from 0 to {last}; showing 0").format(
                    last=10**MAX_INDEX_DIGITS - 1))
    return UrlView(**found, notices=tuple(notices))


def _clip(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _url_view() -> UrlView:
    return parse_url(st.query_params.to_dict(), allow_any_model=settings().allowed_models == "any")


def init_language() -> str:
    """Speak the session's language for this script run; call first in ``app.py``, before ``st.navigation`` (page
    titles are translated). A session's first run takes it from the link's ``?lang=``, else from the browser's
    locale, else English; afterwards the sidebar's choice (session state) rules."""
    if LANGUAGE_KEY not in st.session_state:
        try:
            asked = _url_view().lang
        except Exception:  # noqa: BLE001 - a bad link must not stop the app; the sidebar's guard reports it
            asked = None
        st.session_state[LANGUAGE_KEY] = asked or browser_language(st.context.locale)
    return set_language(st.session_state[LANGUAGE_KEY])


def _init_from_query_params() -> None:
    """On a session's first run, seed the widgets from the URL (through :func:`parse_url`)."""
    if st.session_state.get("_ae_init"):
        return
    st.session_state["_ae_init"] = True
    s = settings()
    view = _url_view()
    notices = list(view.notices)
    model = view.model or DEFAULT_MODEL
    if model in EMBEDDED:
        st.session_state["model_choice"] = model
    else:
        st.session_state["model_choice"] = OTHER_MODEL
        st.session_state["model_custom"] = model
    device = view.device or s.default_device
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        notices.append(_("The link asked for CUDA, but there is no GPU here: using the CPU.") if view.device else
                       _("This server's AE_DEFAULT_DEVICE asked for CUDA, but there is no GPU here: using the CPU."))
        device = "cpu"
    st.session_state["device"] = device if device in device_options() else device_options()[0]
    st.session_state["text"] = DEFAULT_TEXT if view.text is None else view.text
    st.session_state["mask"] = view.mask or "model"
    for key in ("layer", "head"):
        if getattr(view, key) is not None:
            st.session_state[f"_ae_{key}"] = getattr(view, key)
    if notices:
        st.session_state["_ae_notice"] = "\n\n".join(notices)


def device_options() -> list[str]:
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


def sidebar() -> None:
    """Draw the shared controls (in ``app.py``, so they persist across pages); pages read them back through
    :func:`current_selection`."""
    with guard():  # the URL is user input: a bad link gets a message, never a crash
        _init_from_query_params()
    s = settings()
    # persist_state="session": st.switch_page (a page's "open on …" buttons) ends the run early, and Streamlit then
    # drops the state of every widget the new page has not drawn yet, the sidebar's included (the text would vanish).
    with st.sidebar:
        # The label names the choice in both languages: a visitor who cannot read the current one still finds it.
        st.radio("Language / 语言", list(LANGUAGES), persist_state="session", key=LANGUAGE_KEY, horizontal=True,
                 format_func=lambda code: LANGUAGES[code][0])
        st.markdown("### " + _("Model and text"))
        choices = list(EMBEDDED) + ([OTHER_MODEL] if s.allowed_models == "any" else [])
        # Labels translated now, not inside format_func: Streamlit may call that outside this run's language context
        # (AppTest formats values in the test's thread), and it would answer in another language.
        model_labels = {n: _("{model} (embedded)").format(model=n) for n in EMBEDDED}
        model_labels[OTHER_MODEL] = _("Other: Hugging Face id or folder")
        mask_labels = {m: _(label) for m, label in MASK_LABELS.items()}
        st.selectbox(
            _("Model"),
            choices,
            persist_state="session", key="model_choice",
            format_func=model_labels.__getitem__,
            help="\n\n".join(f"**{m.name}**: {m.description}" for m in EMBEDDED.values()),
        )
        if st.session_state["model_choice"] == OTHER_MODEL:
            st.text_input(_("Model id or folder"), persist_state="session", key="model_custom",
                          placeholder=_("e.g. gpt2"))
        st.radio(_("Device"), device_options(), persist_state="session", key="device", horizontal=True,
                 help=_("CUDA appears when PyTorch sees a GPU. The numbers agree within float32 tolerance."))
        if st.session_state.get("device") == "cuda" and tf32_enabled():
            st.info(_("TF32 matrix multiplications are on in this server process, so CUDA results differ from "
                      "the float32 reference by about 1e-3 (relative): the 1e-5 agreement this app checks does not "
                      "hold here."), icon=":material/info:")
        st.text_area(_("Text"), persist_state="session", key="text", height=120, max_chars=MAX_TEXT_CHARS,
                     help=_("Any language. Cut to {n} tokens for display.").format(n=number(s.max_tokens)))
        st.radio(_("Mask"), list(MASK_LABELS), persist_state="session", key="mask",
                 format_func=mask_labels.__getitem__, horizontal=True,
                 help=_("Overriding the model's own mask is a what-if: it changes the computation."))
    notice = st.session_state.pop("_ae_notice", None)
    if notice:
        st.warning(notice)


def sync_query_params() -> None:
    """Write the view into the URL so that a link reproduces it."""
    sel = {
        "model": current_selection().model,
        "device": st.session_state.get("device"),
        "mask": st.session_state.get("mask"),
        "lang": st.session_state.get(LANGUAGE_KEY),
    }
    text = st.session_state.get("text", "")
    if len(text) <= 1500:  # long texts would make unusable links; they are simply left out
        sel["text"] = text
    for key in ("layer", "head"):
        if f"_ae_{key}" in st.session_state and st.session_state[f"_ae_{key}"] >= 0:
            sel[key] = str(st.session_state[f"_ae_{key}"])
    wanted = {k: str(v) for k, v in sel.items() if v not in (None, "")}
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)


# ---- what pages use -------------------------------------------------------------------------------------------
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
    mates = ", ".join(str(h) for h in trace.heads_sharing_kv(kv) if h != head)
    return _("Head {head} reads key/value head {kv}, shared with heads {mates} (grouped-query attention, GQA).").format(
        head=head, kv=kv, mates=mates)


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


def current_selection() -> Selection:
    mask = st.session_state.get("mask", "model")
    model = st.session_state.get("model_choice", DEFAULT_MODEL)
    if model == OTHER_MODEL:
        model = st.session_state.get("model_custom", "").strip()
    return Selection(model, st.session_state.get("device", "cpu"), st.session_state.get("text", ""),
                     None if mask == "model" else mask)


def current_model() -> Model:
    """The selected model (raises ExplorerError with a user-facing message; call inside :func:`guard`)."""
    sel = current_selection()
    if not sel.model:
        raise ExplorerError(_("Type a Hugging Face model id or a folder in the sidebar."))
    return model_for(sel.model, sel.device)


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


def require_entrypoint() -> None:
    """Make sure the page runs under ``app.py``'s navigation and sidebar.

    Because page files live in ``pages/``, Streamlit runs a fresh server's *first* script run in its legacy
    multipage mode: a deep link such as ``/heads?text=…`` would run the page file alone, without the sidebar or
    the URL's state. ``app.py``'s ``st.navigation`` switches the process to the current mode; if a page finds
    itself running before that happened, it flips the switch and reruns, so the same URL runs through ``app.py``.
    """
    if leave_legacy_pages_mode():
        st.rerun()


def leave_legacy_pages_mode() -> bool:
    """Switch this process out of Streamlit's legacy ``pages/`` mode; True when it was in it.

    The one use of a private Streamlit API (``PagesManager.uses_pages_directory``, a class attribute: None until
    the first run decides, True in legacy mode); tests/app/test_isolation.py checks that it still behaves so, and the
    tests' ``navigation_like_a_server`` fixture calls this too.
    """
    from streamlit.runtime.pages_manager import PagesManager

    was_legacy = bool(PagesManager.uses_pages_directory)
    PagesManager.uses_pages_directory = False
    return was_legacy


# ---- going to another page with a selection (the heads, analysis and intervene pages link to each other) -----------
HEADS_PAGE = "pages/heads.py"
INTERVENE_PAGE = "pages/intervene.py"
INTERVENE_HEADS_KEY = "intervene_heads"  # the Intervene page's chosen heads: a list of (layer, head), per session


def open_on_heads_page(layer: int, head: int) -> None:
    """Make (layer, head) the shared selection and go to the heads page."""
    st.session_state["_ae_layer"] = int(layer)
    st.session_state["_ae_head"] = int(head)
    st.switch_page(HEADS_PAGE)


def open_intervene(heads: list[tuple[int, int]]) -> None:
    """Choose ``heads`` on the Intervene page and go there."""
    st.session_state[INTERVENE_HEADS_KEY] = sorted({(int(layer), int(head)) for layer, head in heads})
    st.switch_page(INTERVENE_PAGE)
