"""Everything the app and the engine say, in the reader's language: gettext catalogues kept with Babel.

The language is per call, like the recorder's state: a ``ContextVar``. Each Streamlit session runs its script in its
own thread, so one visitor's choice never changes another's, and the engine needs no Streamlit to speak Chinese.
Token strings, model names and formulas are data: they are never passed through here.

Catalogues: ``explorer/locales/<locale>/LC_MESSAGES/messages.po`` (compiled to ``.mo`` beside it); ``make i18n``
extracts new strings and compiles (see docs/translating.md).
"""

from __future__ import annotations

import contextlib
import gettext as _gettext
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Iterable, Iterator, Literal

from babel import Locale
from babel.core import UnknownLocaleError
from babel.lists import format_list
from babel.numbers import format_decimal, format_percent

LOCALE_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
DEFAULT_LANGUAGE = "en"
#: language code → (its name in itself, Babel/gettext locale). The codes are what ``?lang=`` takes.
LANGUAGES: dict[str, tuple[str, str]] = {"en": ("English", "en"), "zh": ("简体中文", "zh_Hans_CN")}

_LANGUAGE: ContextVar[str] = ContextVar("explorer_language", default=DEFAULT_LANGUAGE)


@cache
def _catalogue(language: str) -> _gettext.NullTranslations:
    if language == DEFAULT_LANGUAGE:  # the source strings are English
        return _gettext.NullTranslations()
    # fallback: a checkout whose catalogue was never compiled shows English rather than failing
    # (tests/app/test_i18n.py fails on a missing or stale messages.mo, so a release cannot ship one)
    return _gettext.translation(DOMAIN, LOCALE_DIR, languages=[LANGUAGES[language][1]], fallback=True)


def language() -> str:
    """The language of the current call (thread / task)."""
    return _LANGUAGE.get()


def set_language(code: str) -> str:
    """Speak ``code`` for the rest of this call; an unknown code means the default. Returns the code in effect."""
    code = code if code in LANGUAGES else DEFAULT_LANGUAGE
    _LANGUAGE.set(code)
    return code


@contextlib.contextmanager
def speaking(code: str) -> Iterator[None]:
    """Speak ``code`` inside the block only."""
    token = _LANGUAGE.set(code if code in LANGUAGES else DEFAULT_LANGUAGE)
    try:
        yield
    finally:
        _LANGUAGE.reset(token)


def _(message: str) -> str:
    """``message`` in the current language. Placeholders are ``str.format`` fields: ``_("{n} heads").format(n=9)``."""
    return _catalogue(language()).gettext(message)


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it yet (module-level tables); call ``_`` on use."""
    return message


def ngettext(singular: str, plural: str, n: int) -> str:
    """The plural form the current language uses for ``n`` (Chinese has one form; English two)."""
    return _catalogue(language()).ngettext(singular, plural, n)


def _locale() -> str:
    return LANGUAGES[language()][1]


def number(value: float, digits: int | None = None) -> str:
    """``value`` with the current locale's grouping and decimal signs (``digits`` fixed fraction digits if given)."""
    pattern = None if digits is None else "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=_locale())


def percent(value: float, digits: int = 0) -> str:
    """``value`` (a share, 0.25) as a percentage in the current locale."""
    return format_percent(value, format="#,##0" + ("." + "0" * digits if digits else "") + "%", locale=_locale())


JOINERS = {"plain": {"zh": "、", "en": ", "}, "clauses": {"zh": "；", "en": "; "}}


def join(items: Iterable[object], style: Literal["plain", "clauses", "and", "or"] = "plain") -> str:
    """``items`` as one list inside a sentence of the current language: the one way to glue a list into text.

    ``plain`` separates words or numbers alike (Chinese 、, English ", "), ``clauses`` separates phrases that may hold
    commas themselves (；/ "; "); ``and`` / ``or`` end with the locale's conjunction (Babel's CLDR patterns:
    "a, b, and c" / "a、b和c"). Items are shown with ``str``; escape them first where the sentence is Markdown or a
    Plotly label."""
    shown = [str(item) for item in items]
    if style in JOINERS:
        return JOINERS[style].get(language(), JOINERS[style][DEFAULT_LANGUAGE]).join(shown)
    return format_list(shown, style="standard" if style == "and" else "or", locale=_locale())


def browser_language(locale_tag: str | None) -> str:
    """The app language for a browser locale such as ``zh-CN`` or ``en-GB`` (Chinese variants → zh), else default."""
    if not locale_tag:
        return DEFAULT_LANGUAGE
    try:
        parsed = Locale.parse(locale_tag.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return DEFAULT_LANGUAGE
    return "zh" if parsed.language == "zh" else DEFAULT_LANGUAGE
