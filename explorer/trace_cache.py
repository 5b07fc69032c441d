"""A bounded, thread-safe LRU of traces shared by all sessions, limited by entry count and by bytes.

Streamlit's ``st.cache_data`` would pickle and copy every trace on each hit; traces are read-only once built, so
one shared copy is safe and keeps memory bounded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

from .trace import Trace


class TraceCache:
    def __init__(self, max_entries: int = 32, max_bytes: int = 2 << 30):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Trace, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], Trace]) -> Trace:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        trace = build()  # outside the lock: two sessions may trace different texts at once
        size = trace.nbytes()
        with self._lock:
            self._items[key] = (trace, size)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries or (self.nbytes > self.max_bytes and len(self._items) > 1):
                self._items.popitem(last=False)
        return trace

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
