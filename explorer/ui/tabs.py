"""One way to draw a page's tabs: each tab is a (label, draw) pair, and only the open one runs."""

from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

from ..i18n import _
from .widgets import guard

Tab = tuple[str, Callable[[], None]]  # an ``N_``-marked English label and what the tab draws


def lazy_tabs(tabs: Sequence[Tab], key: str) -> None:
    """Draw ``tabs`` (labels translated) and run only the open one's ``draw``, inside its own :func:`guard` (a tab's
    error leaves the others usable). Switching tabs reruns the page (``on_change="rerun"``), so a costly tab costs
    only while it is open. The widget's value under ``key`` is the open tab's translated label."""
    drawn = st.tabs([_(label) for label, _draw in tabs], key=key, on_change="rerun")
    for tab, (_label, draw) in zip(drawn, tabs):
        if tab.open:
            with tab, guard():
                draw()
