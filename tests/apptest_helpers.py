"""Helpers for AppTests of pages behind ``st.navigation``: open a page like a server does, read plotly data."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(page: str, query: dict | None = None, **state) -> AppTest:
    """Run app.py (with URL ``query`` params), set session state (e.g. model_choice, text), switch to ``page``;
    fail on any error shown."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update(query or {})
    at.run()
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(page).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def chart_data(at: AppTest, key: str) -> list[dict]:
    """The traces of the plotly chart drawn with ``key``."""
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if chart.proto.id.endswith("-" + key):
            return spec["data"]
    raise AssertionError(f"no plotly chart with key {key!r}")


def decode(array) -> np.ndarray:
    """A plotly array from the figure JSON: a list, or a base64 typed array."""
    if isinstance(array, dict):
        values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        shape = array.get("shape")
        return values.reshape([int(s) for s in str(shape).split(",")]) if shape else values
    return np.asarray(array, dtype=float)
