"""Strings from outside (user text, URL parameters, model names, token strings, file names, exception texts) as data.

Two renderers read markup in the strings the app hands them, so every outside string reaches them through one of
these two functions:

- :func:`md_escape` for Streamlit's Markdown: ``st.markdown``, ``st.caption``, alerts, ``st.status`` and widget
  labels, ``help`` tooltips, metric values, progress texts (CommonMark + GitHub's extensions + ``$`` maths +
  Streamlit's ``:colour[…]`` / ``:material/…:`` directives);
- :func:`plotly_escape` for Plotly's pseudo-HTML: titles, tick labels, hover texts, legend names, annotations.

Data frames (``st.dataframe``) and widget values show text as is and need neither.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character. CommonMark lets a backslash escape any of them, and an escaped one stands for
# itself and starts nothing: links and images ([ ] ( ) !), raw HTML and <autolinks> (< >), entities (&), emphasis
# (* _ ~), code (`), maths ($), headings, lists, quotes and tables (# - + . > |), Streamlit's directives (: [ ]).
_MD_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")
_LINE_BREAK = re.compile(r"\r\n|[\r\n\u2028\u2029]")
# Some patterns are found later, by regular expressions over the parsed text, where escapes are already resolved:
# GitHub's literal autolinks ("https://", "www.", "a@b.c"), emoji shortcodes (":name:") and Streamlit's arrows
# (" -> ", " >= ", …). An invisible WORD JOINER inside each breaks it without changing what a reader sees.
WORD_JOINER = "\u2060"
_FOUND_IN_TEXT = re.compile(r"(?<=:)(?=//)|(?i:(?<=www))(?=\.)|(?<=@)(?=[\w-])|(?<=:)(?=[\w+-]+:)")
_ARROW = re.compile(r"(?<!\S)(<->|->|<-|--|>=|<=|~=)(?!\S)")

# Plotly reads a few HTML tags and entities in text (<a href>, <b>, <br>, &amp;), substitutes %{…} wherever text is
# used as a template, and hands $…$ to MathJax when a page loads it. As entities these characters only show.
_PLOTLY_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "%": "&#37;", "$": "&#36;"}
_PLOTLY_SPECIAL = re.compile("[&<>%$]")


def md_escape(text: object) -> str:
    """``text`` as literal Markdown: every ASCII punctuation character backslash-escaped, a word joiner inside each
    pattern found after parsing, line breaks as spaces and no leading indentation (so the result is one paragraph:
    no heading, list, quote, table or code block)."""
    text = _LINE_BREAK.sub(" ", str(text)).lstrip(" \t")
    text = _ARROW.sub(lambda m: m[0][0] + WORD_JOINER + m[0][1:], _FOUND_IN_TEXT.sub(WORD_JOINER, text))
    return _MD_PUNCTUATION.sub(r"\\\g<0>", text)


def plotly_escape(text: object) -> str:
    """``text`` as literal Plotly text: ``& < > % $`` as HTML entities, which Plotly shows as those characters."""
    return _PLOTLY_SPECIAL.sub(lambda m: _PLOTLY_ENTITIES[m.group()], str(text))
