"""Helpers for AppTests of pages behind ``st.navigation``: open a page like a server does, read plotly data, check that
no outside text reaches raw HTML."""

from __future__ import annotations

import ast
import base64
import json
import re
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def app_pages() -> list[str]:
    """The page files app.py navigates to, in its order (each ``st.Page``'s ``page``, by position or name)."""
    found = []
    for node in ast.walk(ast.parse(Path(APP).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page":
            named = [k.value for k in node.keywords if k.arg == "page"]
            found.append((node.args[:1] or named)[0].value)
    return found


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


RAW_HTML = re.compile(r"<\s*(script|img|iframe|svg|object|embed)|on\w+\s*=|javascript:", re.IGNORECASE)


def _elements(node):
    children = getattr(node, "children", None)
    if children is None:
        yield node
        return
    for child in children.values():
        yield from _elements(child)


def assert_no_injection(at, text: str) -> None:
    """The user's text never reaches an element that renders raw HTML (markdown with unsafe_allow_html, st.html),
    and no such element carries an HTML/JS payload at all. Reusable for every page."""
    for element in _elements(at._tree):
        proto = getattr(element, "proto", None)
        unsafe = bool(getattr(proto, "allow_html", False)) or getattr(element, "type", "") == "html"
        if not unsafe:
            continue
        body = getattr(proto, "body", "")
        if len(text.strip()) >= 3:
            assert text not in body, f"user text inside an unsafe element: {body[:200]!r}"
        assert not RAW_HTML.search(body), f"raw HTML in an unsafe element: {body[:200]!r}"
