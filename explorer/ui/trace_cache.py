"""A bounded, thread-safe LRU of traces shared by all sessions, limited by entry count and by bytes.

Streamlit's ``st.cache_data`` would pickle and copy every trace on each hit; traces are read-only once built, so
one shared copy is safe and keeps memory bounded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, NamedTuple

from ..capture.trace import Trace

WAIT_POLL_S = 0.25  # how often a session waiting for another's build hears its progress


class TraceKey(NamedTuple):
    """What a trace of the app is asked for with: the trace cache's key. (Once built, a trace is told apart by its
    ``fingerprint``, which keys analyses' ``st.cache_data``: explorer/ui/caching.py.)

    ``dtype`` is the type the model ran in (``"float32"``, ``"bfloat16"``, …): a bf16 trace of the same text differs
    from a float32 one. ``mask`` None is the model's own mask; ``max_tokens`` the app's token cap the text was cut to.
    """

    model: str
    device: str
    dtype: str
    text: str
    mask: str | None
    max_tokens: int


class TraceCache:
    """LRU of traces. ``get_or_build`` builds each key once even when several sessions ask at the same moment: the
    first builds, the others wait for that trace (single flight)."""

    def __init__(self, max_entries: int = 32, max_bytes: int = 2 << 30):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Trace] = OrderedDict()
        self._building: dict[Hashable, threading.Event] = {}
        self._progress: dict[Hashable, float] = {}  # how far each build in flight is (single writer: its builder)
        self._nbytes = 0
        self._lock = threading.Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], Trace],
                     on_wait: Callable[[float], None] | None = None) -> Trace:
        """The cached trace for ``key``, or ``build()``'s, cached. Exceptions from ``build`` pass through.

        Single flight: while one session builds a key, the others asking for it wait for that one trace instead of
        tracing the same text again. A waiter hears ``on_wait(fraction)`` about every :data:`WAIT_POLL_S` with the
        builder's progress (what it gave :meth:`report`): a page shows the same bar, and, since Streamlit stops a
        stale run only inside its own calls, a waiter whose user moved on leaves from there (whatever ``on_wait``
        raises passes through) without stopping the build the others wait for. If the build fails or is stopped,
        the next waiter builds it."""
        while True:
            with self._lock:
                trace = self._live(key)
                if trace is not None:
                    self._evict()  # the hit may have grown since it was stored (lazy logits)
                    return trace
                pending = self._building.get(key)
                if pending is None:
                    pending = self._building[key] = threading.Event()
                    self._progress[key] = 0.0
                    break  # this thread builds it
            # Another session is tracing the same key: wait for it rather than trace it twice. If its build failed
            # (or the trace was evicted at once) the loop builds here.
            while not pending.wait(WAIT_POLL_S if on_wait is not None else None):
                on_wait(self._progress.get(key, 0.0))
        try:
            trace = build()  # outside the lock: two sessions may trace different texts at once
            with self._lock:
                self._items[key] = trace
                self._evict()
        finally:
            with self._lock:
                self._progress.pop(key, None)
                self._building.pop(key).set()
        return trace

    def report(self, key: Hashable, fraction: float) -> None:
        """The build of ``key`` is ``fraction`` done (what waiting sessions hear)."""
        self._progress[key] = float(fraction)

    def building(self, key: Hashable) -> bool:
        """Is some session building ``key`` now?"""
        with self._lock:
            return key in self._building

    def get(self, key: Hashable) -> Trace | None:
        """The cached trace for ``key`` (counted as a use), or None; never builds."""
        with self._lock:
            return self._live(key)

    def _live(self, key: Hashable) -> Trace | None:
        # Hold the lock. A trace holds its model weakly: once the model cache dropped that model, the trace's logits
        # cannot be computed, so it counts as missing (and is dropped) and the caller traces again with the model
        # it has now.
        trace = self._items.get(key)
        if trace is None:
            return None
        if not trace.model_alive:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return trace

    def _evict(self) -> None:
        # Sizes are measured afresh each time (holding the lock): a trace's logits (n × vocab floats) are computed
        # on first use, after the trace was stored, and must count from then on.
        sizes = {key: trace.nbytes() for key, trace in self._items.items()}
        total = sum(sizes.values())
        while len(self._items) > self.max_entries or (total > self.max_bytes and len(self._items) > 1):
            key, _ = self._items.popitem(last=False)
            total -= sizes[key]
        self._nbytes = total

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached traces, as measured at the last access."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
