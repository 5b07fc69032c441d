"""What a page shows, read the way a browser would take it: every string Streamlit renders as Markdown, every HTML
body and every Plotly string of an AppTest run, parsed by independent references (markdown-it-py, a port of the
CommonMark reference parser; Python's HTML parser; ``html.unescape`` for Plotly's entities), and the check that
outside strings reach them as data, never as markup. Shared by tests/app/test_crafted_links.py and the page tests
that open crafted links (tests/app/test_page_words.py).
"""

from __future__ import annotations

import html
import json
import re
import string
from html.parser import HTMLParser

from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from explorer.escape import WORD_JOINER

from apptest_helpers import APP

MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
MARKUP_TOKENS = {"link_open", "image", "html_inline", "html_block"}
# The regular expressions Streamlit's Markdown runs over the parsed text, where escapes are already resolved, as in
# its bundle (mdast-util-gfm-autolink-literal's URLs and emails, remark-emoji, Streamlit's arrows), minus their
# context checks (so they match at least as often). JavaScript's \w is ASCII.
FOUND_IN_TEXT = [
    re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE | re.ASCII),
    re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.ASCII),
    re.compile(r":\+1:|:-1:|:[\w-]+:", re.ASCII),
    re.compile(r"(^|\s)(<->|->|<-|--|>=|<=|~=)(\s|$)"),
]
# The only tags the app's own figures write (line breaks, a smaller second title line, bold labels, hover extras).
APP_TAGS = re.compile(r"</?(br|b|sup|extra)>|<span style='font-size:12px'>|</span>")


def rendered_text(markdown: str) -> tuple[set[str], str]:
    """The token types markdown-it finds in ``markdown``, and its text after parsing (what the text-level patterns
    run over; a reader sees it without the invisible word joiners)."""
    tokens = MD.parse(markdown)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    text = html.unescape(re.sub(r"<[^>]+>", "", MD.render(markdown))).strip()
    return kinds, text


def found_in_text(text: str) -> list[str]:
    return [m.group() for pattern in FOUND_IN_TEXT for m in pattern.finditer(text)]


def visible(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace(WORD_JOINER, "")).strip()


def open_link(page: str, query: dict) -> AppTest:
    """One run of ``page`` under app.py with the link's parameters, as a server runs a deep link."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update(query)
    at.switch_page(page).run()
    return at


def _nodes(node):
    yield node
    for child in (getattr(node, "children", None) or {}).values():
        yield from _nodes(child)


def _strings(message, names: set[str]):
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        if field.type == field.TYPE_MESSAGE:
            for v in values:
                yield from _strings(v, names)
        elif field.type == field.TYPE_STRING and field.name in names:
            yield from values


def markdown_strings(at: AppTest) -> list[str]:
    """Every string on the page that Streamlit renders as Markdown: bodies (markdown, captions, alerts, titles,
    metric values), labels (widgets, metrics, status, expanders, tabs), tooltips, and radio options."""
    out = []
    for node in _nodes(at._tree):
        proto = getattr(node, "proto", None)
        if (proto is None or not hasattr(proto, "ListFields") or getattr(node, "type", "") == "html"
                or type(node).__name__ in ("Dataframe", "UnknownElement")):
            continue  # data frames show text as is; st.html is HTML, checked by html_tags
        names = {"body", "label", "help"} | ({"options"} if type(node).__name__ == "Radio" else set())
        out.extend(_strings(proto, names))
    return out


def html_bodies(at: AppTest) -> list[str]:
    return [node.proto.body for node in _nodes(at._tree) if getattr(node, "type", "") == "html"]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[tuple[str, str]] = set()

    def handle_starttag(self, tag, attrs):
        self.tags |= {(tag, name) for name, _ in attrs} | {(tag, "")}


def html_tags(body: str) -> set[tuple[str, str]]:
    """(tag, attribute) pairs in an HTML body, by Python's HTML parser."""
    parser = _Tags()
    parser.feed(body)
    return parser.tags


# What the app's st.html writes itself (the Generation page's coloured text and its legend).
APP_HTML = {("div", ""), ("div", "style"), ("div", "data-testid"), ("span", ""), ("span", "style"), ("span", "title")}


def figure_strings(at: AppTest) -> list[str]:
    def walk(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)

    return [s for chart in at.get("plotly_chart") for s in walk(json.loads(chart.proto.spec))]


def unescaped(payload: str, markdown: str) -> bool:
    """Does ``payload`` occur in ``markdown`` with its first punctuation character not backslash-escaped?"""
    first = next((k for k, ch in enumerate(payload) if ch in string.punctuation), None)
    start = markdown.find(payload) if first is not None else -1
    while start != -1:
        if start + first == 0 or markdown[start + first - 1] != "\\":
            return True
        start = markdown.find(payload, start + 1)
    return False


def assert_data_not_markup(at: AppTest, payloads=()) -> None:
    """The page survived, and outside strings reach Markdown and Plotly only as text."""
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Something went wrong" in e.value]
    for body in html_bodies(at):
        assert html_tags(body) <= APP_HTML, body
    for text in markdown_strings(at):
        kinds, parsed = rendered_text(text)
        assert not kinds & MARKUP_TOKENS, text
        assert not found_in_text(parsed), text
        assert not [p for p in payloads if unescaped(p, text)], text
    for text in figure_strings(at):
        text = APP_TAGS.sub("", text)
        assert "<" not in text, text
        assert not [p for p in payloads if set(p) & set("<>&%$") and p in text], text


def shown(at: AppTest) -> str:
    """Everything the Markdown strings of the page say, as a reader sees it (white space collapsed)."""
    return visible(" ".join(rendered_text(text)[1] for text in markdown_strings(at)))
