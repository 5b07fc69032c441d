"""Many users at once: traces in parallel threads equal sequential ones bit for bit, the shared trace cache stays
within its entry and byte limits (also under a 200-trace soak, measured as process RSS), and no session's data is
kept in module globals or shared resources when the session ends."""

from __future__ import annotations

import ast
import gc
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, is_dataclass
from pathlib import Path

import psutil
import pytest
import torch

import explorer
from explorer import ExplorerError
from explorer.ui.trace_cache import TraceCache

from apptest_helpers import APP
from references import assert_same_trace

ROOT = Path(__file__).resolve().parents[2]

TEXTS = [
    "The cat sat on the mat because it was tired.",
    "Attention is all you need.",
    "大规模语言模型通过注意力机制在上下文中寻找相关的信息。",
    "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen.",
    "Short.",
    "A longer sentence that goes on for a while, with commas, clauses, and a few numbers: 3.14, 2718, 42.",
]


# ---- parallel = sequential ---------------------------------------------------------------------------------------
def test_parallel_traces_equal_sequential(smollm2):
    sequential = [smollm2.trace(text) for text in TEXTS]
    start = threading.Barrier(len(TEXTS) * 2)

    def traced(text: str) -> explorer.Trace:
        start.wait()  # all threads enter the shared model at the same moment
        return smollm2.trace(text)

    with ThreadPoolExecutor(max_workers=len(TEXTS) * 2) as pool:
        parallel = list(pool.map(traced, TEXTS * 2))  # each text twice, all twelve at once
    for i, trace in enumerate(parallel):
        assert_same_trace(trace, sequential[i % len(TEXTS)])
    # The maps rebuilt from them agree too (rows of a different text would not even have the same shape).
    assert torch.equal(parallel[2].attention(17, 3), sequential[2].attention(17, 3))


# ---- TraceCache limits ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_traces(minilm) -> list[explorer.Trace]:
    return [minilm.trace(f"Sentence number {i} is about " + "attention " * (3 * i + 1)) for i in range(6)]


class CountingBuilds:
    """Builders that return a given trace and count how often each key was built."""

    def __init__(self):
        self.count: dict[object, int] = {}

    def __call__(self, key, trace, delay: float = 0.0):
        def build():
            self.count[key] = self.count.get(key, 0) + 1
            time.sleep(delay)
            return trace

        return build


def test_cache_entry_limit_is_lru(small_traces):
    cache, builds = TraceCache(max_entries=3, max_bytes=1 << 40), CountingBuilds()
    for i in range(3):
        assert cache.get_or_build(i, builds(i, small_traces[i])) is small_traces[i]
    assert cache.get_or_build(0, builds(0, small_traces[0])) is small_traces[0]  # hit: 0 becomes most recent
    cache.get_or_build(3, builds(3, small_traces[3]))
    assert len(cache) == 3 and 1 not in cache and all(k in cache for k in (0, 2, 3))  # 1 was least recent
    assert builds.count == {0: 1, 1: 1, 2: 1, 3: 1}
    assert cache.nbytes == sum(small_traces[i].nbytes() for i in (0, 2, 3))


def test_cache_byte_limit(small_traces):
    sizes = [t.nbytes() for t in small_traces]
    assert len(set(sizes)) == len(sizes)  # texts of different lengths: the limit is tested with unequal sizes
    limit = sizes[3] + sizes[4] + sizes[5] // 2
    cache = TraceCache(max_entries=100, max_bytes=limit)
    for i, trace in enumerate(small_traces):
        cache.get_or_build(i, lambda trace=trace: trace)
        kept = [k for k in range(i + 1) if k in cache]
        assert cache.nbytes == sum(sizes[k] for k in kept) <= limit
        # Least recent go first: what is kept is the longest run of newest traces that fits.
        newest_fitting = next(j for j in range(i + 1) if sum(sizes[j : i + 1]) <= limit)
        assert kept == list(range(newest_fitting, i + 1))
    assert kept == [4, 5]


def test_cache_keeps_a_single_trace_larger_than_its_limit(small_traces):
    cache = TraceCache(max_entries=10, max_bytes=1)
    assert cache.get_or_build("a", lambda: small_traces[0]) is small_traces[0]
    assert cache.get_or_build("b", lambda: small_traces[1]) is small_traces[1]
    assert len(cache) == 1 and "b" in cache


def test_cache_counts_logits_computed_after_storing(smollm2):
    """trace.logits (n × 49,152 floats) appears on first use, after the trace was cached; it must count then."""
    a, b = smollm2.trace("The capital of France is"), smollm2.trace("One, two, three,")
    cache = TraceCache(max_entries=10, max_bytes=a.nbytes() + b.nbytes() + 1000)
    cache.get_or_build("a", lambda: a)
    cache.get_or_build("b", lambda: b)
    cache.get_or_build("a", lambda: a)  # a is now the most recent
    assert a.logits is not None  # a grows by n × vocab × 4 bytes
    assert a.nbytes() > cache.max_bytes - b.nbytes()
    cache.get_or_build("a", lambda: a)
    assert "a" in cache and "b" not in cache and cache.nbytes == a.nbytes()


def test_cache_builds_each_key_once_under_concurrency(small_traces):
    cache, builds = TraceCache(), CountingBuilds()
    start = threading.Barrier(8)

    def ask(key):
        start.wait()
        return cache.get_or_build(key, builds(key, small_traces[key], delay=0.3))

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(ask, [0, 0, 0, 0, 1, 1, 1, 1]))
    assert builds.count == {0: 1, 1: 1}  # eight sessions, two texts: two traces computed
    assert all(g is small_traces[0] for g in got[:4]) and all(g is small_traces[1] for g in got[4:])


def test_cache_failed_build_raises_and_retries(small_traces):
    cache = TraceCache()

    def fail():
        raise ExplorerError("The text is empty. Type a sentence to trace.")

    with pytest.raises(ExplorerError):
        cache.get_or_build("k", fail)
    assert len(cache) == 0
    assert cache.get_or_build("k", lambda: small_traces[0]) is small_traces[0]  # not stuck waiting on the failure


# ---- soak: memory stays bounded ------------------------------------------------------------------------------------
SOAK_TRACES = 200
SOAK_CACHE_BYTES = 32 << 20
SOAK_SLACK_BYTES = 96 << 20  # allocator fragmentation and torch's per-shape workspaces, measured ~10-40 MB here


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine two threads spin-wait for each other (5x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_torch_thread")
def test_soak_memory_stays_within_cache_limit(minilm):
    """200 distinct texts of 4-200 words, each traced through a cache and its first-layer maps rebuilt (as a page
    does): after the cache has filled, RSS grows by no more than the slack, while the traces made total several
    times the cache limit."""
    cache = TraceCache(max_entries=24, max_bytes=SOAK_CACHE_BYTES)
    words = "attention looks back at every earlier token and weighs what matters most for the next one".split()
    made_bytes, rss_after_fill, peak = 0, None, 0
    t0 = time.perf_counter()
    for i in range(SOAK_TRACES):
        n_words = 4 + (i * 37) % 197  # lengths spread over 4-200 words, in a scrambled order
        text = f"{i}: " + " ".join(words[(i + j) % len(words)] for j in range(n_words))
        trace = cache.get_or_build(("minilm", text), lambda text=text: minilm.trace(text))
        trace.attentions(0).sum()
        made_bytes += trace.nbytes()
        assert cache.nbytes <= SOAK_CACHE_BYTES and len(cache) <= 24
        del trace
        if i == 39:  # the cache is full by now (each trace is ~0.2-10 MB)
            rss_after_fill = _rss()
        elif i > 39 and i % 20 == 0:
            peak = max(peak, _rss())
    peak = max(peak, _rss())
    elapsed = time.perf_counter() - t0
    growth = peak - rss_after_fill
    print(f"soak: {SOAK_TRACES} traces ({made_bytes / 2**20:.0f} MB made) in {elapsed:.1f} s; cache "
          f"{cache.nbytes / 2**20:.1f} MB in {len(cache)} entries; RSS after fill {rss_after_fill / 2**20:.0f} MB, "
          f"peak growth after it {growth / 2**20:.1f} MB (slack {SOAK_SLACK_BYTES >> 20} MB)")
    assert made_bytes > 4 * SOAK_CACHE_BYTES  # far more was traced than the cache may hold
    assert growth < SOAK_SLACK_BYTES


# ---- nothing per-session outlives the session ----------------------------------------------------------------------
MARKER = "zq-isolation-marker-4417 sentence"


def _mentions(obj, needle: str, depth: int = 0, seen: set | None = None) -> bool:
    """Does ``obj`` hold ``needle`` in a string, a few containers deep? (Tensors, modules, tokenizers skipped.)"""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 5:
        return False
    seen.add(id(obj))
    if isinstance(obj, str):
        return needle in obj
    if isinstance(obj, (torch.Tensor, torch.nn.Module, type, type(sys))) or callable(obj):
        return False
    if isinstance(obj, dict):
        return any(_mentions(k, needle, depth + 1, seen) or _mentions(v, needle, depth + 1, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return any(_mentions(v, needle, depth + 1, seen) for v in obj)
    if is_dataclass(obj):
        return any(_mentions(getattr(obj, f.name, None), needle, depth + 1, seen) for f in fields(obj)
                   if f.name not in ("hf", "tokenizer"))
    if hasattr(obj, "__dict__"):  # any other object: look at its attributes
        return _mentions(vars(obj), needle, depth + 1, seen)
    return False


@pytest.mark.usefixtures("navigation_like_a_server")
def test_no_session_data_outlives_the_session():
    from streamlit.runtime.caching.cache_resource_api import _resource_caches
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.text_area(key="text").set_value(MARKER).run()
    assert not at.exception and MARKER in at.session_state["text"]
    del at
    gc.collect()

    # 1. No module of the app keeps it in a global.
    for name, module in list(sys.modules.items()):
        if name == "explorer" or name.startswith(("explorer.", "pages")):
            assert not _mentions(vars(module), MARKER), f"{name} keeps a session's text in a global"
    # 2. Shared resources: only trace caches may hold it (content-keyed LRUs: another session gets that trace only
    #    by typing the same text, and they are bounded; Intervene keeps one of ablated runs, present once that page
    #    ran in this process); every other cached resource must not.
    with _resource_caches._caches_lock:
        scopes = dict(_resource_caches._function_caches)
    assert set(scopes) <= {None}, "a session-scoped resource cache was used: prefer st.session_state"
    holding = []
    for function_cache in scopes.get(None, {}).values():
        for result in list(function_cache._mem_cache.values()):
            if isinstance(result.value, TraceCache):
                holding += [function_cache.display_name] if _mentions(result.value, MARKER) else []
                continue
            assert not _mentions(result.value, MARKER), f"{function_cache.display_name} keeps a session's text"
    assert holding == ["explorer.ui.resources._trace_cache"], holding  # the search sees inside the sidebar's cache


def test_ui_code_has_no_global_statements():
    """Per-session values go in st.session_state; a ``global`` in UI code would share them between sessions."""
    files = sorted(ROOT.glob("explorer/ui*.py")) + sorted(ROOT.glob("pages/*.py")) + [ROOT / "app.py"]
    offenders = [
        f"{path.name}:{node.lineno}"
        for path in files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.Global, ast.Nonlocal))
    ]
    assert not offenders, offenders


# ---- typed cache keys; a trace whose model was dropped is rebuilt ------------------------------------------------
def test_trace_for_keys_the_shared_cache_with_a_trace_key():
    from explorer.ui import resources, state
    from explorer.ui.trace_cache import TraceKey

    model = explorer.load("minilm", device="cpu")
    text = "Typed keys: which field is the mask?"
    trace = resources.trace_for(model, text, "causal")
    key = resources.make_trace_key("minilm", model.device, model.dtype, text, "causal")
    assert key == TraceKey(model="minilm", device="cpu", dtype="float32", text=text, mask="causal",
                           max_tokens=state.settings().max_tokens)
    assert resources._trace_cache().get(key) is trace
    assert trace.mask == "causal" and resources.trace_for(model, text, "causal") is trace  # the same key: a hit
    assert resources.trace_for(model, text, None) is not trace  # another mask, another key


def test_trace_for_rebuilds_a_trace_whose_model_was_dropped():
    """The model cache may drop a model while the trace cache still holds its traces (a trace holds its model
    weakly): trace_for must trace again with the model it is given, not return a trace whose logits raise."""
    from explorer.ui import resources, state

    text = "A trace outliving its model."
    first = explorer.load("smollm2", device="cpu")
    old = resources.trace_for(first, text, None)
    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is None and not old.model_alive
    second = explorer.load("smollm2", device="cpu")
    new = resources.trace_for(second, text, None)
    assert new is not old and new.model_alive
    with torch.inference_mode():
        ref = second.hf(torch.tensor([new.token_ids])).logits[0]
    # The same LM head on the same hidden states: float32 dot products over 576 dims, ~1e-7·√576·|h| ≈ 1e-5.
    assert (new.logits - ref).abs().max().item() <= 1e-4
    key = resources.make_trace_key("smollm2", "cpu", "float32", text, None)
    assert resources._trace_cache().get(key) is new


def test_trace_cache_counts_a_trace_of_a_dropped_model_as_missing(minilm):
    """At the cache level: get() answers None, get_or_build() builds again, and the dead entry is gone."""
    model = explorer.load("smollm2", device="cpu")
    dead = model.trace("Soon without a model.")
    del model
    gc.collect()
    cache = TraceCache()
    cache.get_or_build("k", lambda: dead)
    assert cache.get("k") is None and len(cache) == 0
    fresh = minilm.trace("A live one.")
    assert cache.get_or_build("k", lambda: fresh) is fresh and cache.get("k") is fresh


# ---- the one private Streamlit API the app relies on --------------------------------------------------------------
def test_legacy_pages_switch_still_behaves(monkeypatch):
    """require_entrypoint (and the tests' navigation_like_a_server) flip PagesManager.uses_pages_directory, a private
    class attribute: None until the first PagesManager decides, True when the app folder has pages/. If a Streamlit
    upgrade renames or changes it, deep links would run pages without app.py: fail here, loudly."""
    from streamlit.runtime.pages_manager import PagesManager

    from explorer.ui.state import leave_legacy_pages_mode

    assert "uses_pages_directory" in vars(PagesManager), "Streamlit no longer has PagesManager.uses_pages_directory"
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    PagesManager(APP)
    assert PagesManager.uses_pages_directory is True  # app.py sits beside pages/: legacy mode, as on a fresh server
    assert leave_legacy_pages_mode() is True
    assert PagesManager.uses_pages_directory is False
    PagesManager(APP)
    assert PagesManager.uses_pages_directory is False  # once decided, a new manager keeps it
    assert leave_legacy_pages_mode() is False
