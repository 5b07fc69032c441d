"""Single flight in the app's trace cache: sessions asking for the same text and model at once share one build,
waiters hear the builder's progress, and a waiter that leaves (its user reran the page) stops nothing else."""

from __future__ import annotations

import threading
import time

import pytest

import explorer.ui.trace_cache as trace_cache
from explorer.ui.trace_cache import TraceCache


class Stale(Exception):
    """What Streamlit raises inside a stale run's st call (its RerunException, stood in for here)."""


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(trace_cache, "WAIT_POLL_S", 0.01)


class FakeTrace:
    model_alive = True

    def nbytes(self) -> int:
        return 1


def test_waiters_share_one_build_and_hear_its_progress():
    cache, release, builds, heard = TraceCache(), threading.Event(), [], {}
    result = FakeTrace()

    def build():
        builds.append(threading.get_ident())
        cache.report("k", 0.5)
        release.wait(5)
        return result

    def waiter(name):
        heard[name] = []
        got.append(cache.get_or_build("k", build, on_wait=heard[name].append))

    got: list = []
    builder = threading.Thread(target=lambda: got.append(cache.get_or_build("k", build)))
    builder.start()
    while not cache.building("k"):
        time.sleep(0.001)
    waiters = [threading.Thread(target=waiter, args=(i,)) for i in range(4)]
    for w in waiters:
        w.start()
    time.sleep(0.1)
    release.set()
    for t in [builder, *waiters]:
        t.join(5)
    assert len(builds) == 1 and len(got) == 5 and all(g is result for g in got)
    assert all(0.5 in values for values in heard.values())  # each waiter showed the builder's progress


def test_a_waiter_that_leaves_stops_neither_the_build_nor_the_others():
    cache, release, builds = TraceCache(), threading.Event(), []
    result = FakeTrace()

    def build():
        builds.append(1)
        release.wait(5)
        return result

    builder_got: list = []
    builder = threading.Thread(target=lambda: builder_got.append(cache.get_or_build("k", build)))
    builder.start()
    while not cache.building("k"):
        time.sleep(0.001)

    def leave(_fraction):
        raise Stale

    with pytest.raises(Stale):  # the stale run leaves at its first poll, long before the build ends
        cache.get_or_build("k", build, on_wait=leave)
    assert cache.building("k") and not builder_got
    release.set()
    builder.join(5)
    assert builder_got == [result] and len(builds) == 1
    assert cache.get_or_build("k", build) is result and len(builds) == 1  # cached: nothing traced again


def test_a_stopped_build_passes_to_the_next_waiter():
    cache, started, stop = TraceCache(), threading.Event(), threading.Event()
    result = FakeTrace()

    def stopped_build():
        started.set()
        stop.wait(5)
        raise Stale  # the builder's own user reran its page mid-forward

    failures: list = []

    def first():
        try:
            cache.get_or_build("k", stopped_build)
        except Stale:
            failures.append(1)

    builder = threading.Thread(target=first)
    builder.start()
    started.wait(5)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(cache.get_or_build("k", lambda: result, on_wait=lambda f: None)))
    waiter.start()
    time.sleep(0.05)
    stop.set()
    for t in (builder, waiter):
        t.join(5)
    assert failures == [1] and got == [result]
