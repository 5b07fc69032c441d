"""Every word the app says exists in English and 简体中文: the catalogue is complete, keeps its placeholders, is compiled,
and no user-facing English literal in the app or the engine's errors escapes translation."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from explorer import i18n

ROOT = Path(__file__).resolve().parents[2]
PO = i18n.LOCALE_DIR / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"\{[^{}]*\}|%[sdr]")
SOURCES = ("explorer", "pages", "app.py")


def _extracted() -> dict[str | tuple[str, ...], list[str]]:
    """msgid (a tuple for plurals) → where it appears, straight from the source as Babel reads it."""
    found: dict = {}
    for source in SOURCES:
        path = ROOT / source
        results = (
            extract_from_dir(path, method_map=[("**.py", "python")]) if path.is_dir()
            else ((path.name, line, msg, comments, ctx) for line, msg, comments, ctx in _extract_file(path))
        )
        for filename, line, message, _comments, _context in results:
            key = message if isinstance(message, str) else tuple(message)
            found.setdefault(key, []).append(f"{source}/{filename}:{line}")
    return found


def _extract_file(path: Path):
    from babel.messages.extract import extract

    with path.open("rb") as f:
        yield from extract("python", f)


@pytest.fixture(scope="module")
def catalogue():
    with PO.open("rb") as f:
        return read_po(f, locale="zh_Hans_CN")


def test_every_message_has_a_chinese_translation(catalogue):
    missing = []
    for msgid, places in _extracted().items():
        singular = msgid if isinstance(msgid, str) else msgid[0]
        entry = catalogue.get(singular)
        forms = [entry.string] if entry is not None and isinstance(entry.string, str) else list(entry.string or []) if entry else []
        if entry is None or entry.fuzzy or not forms or not all(forms):
            missing.append(f"{singular!r} ({places[0]})")
    assert not missing, f"{len(missing)} messages without a Chinese translation (run `make i18n`): " + "; ".join(missing[:20])


def test_translations_keep_their_placeholders(catalogue):
    broken = []
    for entry in catalogue:
        if not entry.id or not entry.string:
            continue
        ids = [entry.id] if isinstance(entry.id, str) else list(entry.id)
        strings = [entry.string] if isinstance(entry.string, str) else list(entry.string)
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for string in strings:
            if set(PLACEHOLDER.findall(string)) != wanted:
                broken.append(f"{ids[0]!r} → {string!r}")
    assert not broken, "translations that lose or add a placeholder: " + "; ".join(broken[:20])


def test_the_compiled_catalogue_matches_the_source(catalogue):
    compiled = io.BytesIO()
    write_mo(compiled, catalogue)
    assert PO.with_suffix(".mo").read_bytes() == compiled.getvalue(), "messages.mo is stale: run `make i18n`"


def test_the_chinese_catalogue_speaks_chinese():
    # An independent check that the lookup path works end to end (not just that the files exist).
    with i18n.speaking("zh"):
        assert re.search(r"[\u4e00-\u9fff]", i18n._("Attention heads"))
    with i18n.speaking("en"):
        assert i18n._("Attention heads") == "Attention heads"
    assert i18n.language() == i18n.DEFAULT_LANGUAGE


def test_plurals_come_from_the_catalogue():
    with i18n.speaking("en"):
        assert i18n.ngettext("{n} token", "{n} tokens", 1).format(n=1) == "1 token"
        assert i18n.ngettext("{n} token", "{n} tokens", 3).format(n=3) == "3 tokens"
    with i18n.speaking("zh"):
        one, many = (i18n.ngettext("{n} token", "{n} tokens", n).format(n=n) for n in (1, 3))
        assert one.startswith("1") and many.startswith("3") and re.search(r"[\u4e00-\u9fff]", many)


@pytest.mark.parametrize("tag, expected", [("zh-CN", "zh"), ("zh-Hans", "zh"), ("zh", "zh"), ("en-GB", "en"),
                                           ("fr-FR", "en"), ("", "en"), (None, "en"), ("<script>", "en")])
def test_browser_locale_picks_the_language(tag, expected):
    assert i18n.browser_language(tag) == expected


# ---- no English literal escapes translation ----------------------------------------------------------------------
# Streamlit calls whose first argument or these keywords reach the reader.
SHOWN = {"title", "header", "subheader", "markdown", "caption", "write", "error", "warning", "info", "success",
         "toast", "button", "download_button", "link_button", "page_link", "checkbox", "toggle", "radio", "selectbox",
         "multiselect", "slider", "select_slider", "number_input", "text_input", "text_area", "tabs", "expander",
         "status", "spinner", "metric", "segmented_control", "pills", "popover", "Page", "form_submit_button", "update"}
SHOWN_KEYWORDS = {"label", "help", "placeholder", "caption", "title", "body"}
# Words that stay as they are in Chinese UIs: model and library names, units, symbols of the formulas.
ALLOWED = re.compile(r"^(?:[\W\d_]|softmax|top-k|top-p|GPT|BERT|CPU|CUDA|GPU|RoPE|GQA|MQA|KV|QK|Q|K|V|CSV|PNG|HTML|"
                     r"npz|logit|logits|smollm2|minilm|gemma3|SmolLM2|MiniLM|Gemma|LaTeX|BertViz|nats|ms|s|MB|GiB|"
                     r"x|d_k|d|n|p|q|k|v|W_q|W_k|W_v|W_o|lse|ln|exp|min|max|kl|KL)*$")


def _literal_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    return None


# Shown as they are in every language: the product's name, and the language switch, which names both languages so that
# a reader who cannot read the current one still finds it.
AS_IS = ("Attention Explorer", "Language / 语言")


def _english(text: str) -> bool:
    for kept in AS_IS:
        text = text.replace(kept, " ")
    text = re.sub(r"\$[^$]*\$|`[^`]*`|:material/\w+:|\{[^}]*\}", " ", text)  # formulas, code, icons, fields
    words = re.findall(r"[A-Za-z][A-Za-z'\-]+", text)
    return any(not ALLOWED.match(w) for w in words)


def _is_log_call(node: ast.Call) -> bool:
    """``log.warning(...)``: a line for the server's operator, in the log, never shown to a visitor."""
    receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
    return isinstance(receiver, ast.Name) and receiver.id in ("log", "logger", "logging")


def _untranslated(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in SHOWN or _is_log_call(node):
            continue
        args = list(node.args[:1]) + [k.value for k in node.keywords if k.arg in SHOWN_KEYWORDS]
        if name == "tabs" and node.args and isinstance(node.args[0], (ast.List, ast.Tuple)):
            args = list(node.args[0].elts)
        for arg in args:
            text = _literal_text(arg)
            if text is not None and _english(text):
                found.append(f"{path.relative_to(ROOT)}:{arg.lineno} {text[:60]!r}")
    return found


def test_the_app_has_no_untranslated_english_literals():
    files = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "explorer" / "ui").glob("*.py"))]
    found = [hit for f in files for hit in _untranslated(f)]
    assert not found, f"{len(found)} English literals shown without _(): " + "; ".join(found[:25])


def test_engine_errors_are_translatable():
    found = []
    for path in sorted((ROOT / "explorer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                name = getattr(node.exc.func, "id", getattr(node.exc.func, "attr", ""))
                if name.endswith("Error") and _literal_text(node.exc.args[0]) is not None:
                    if _english(_literal_text(node.exc.args[0])):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "errors raised with an untranslated English message: " + ", ".join(found[:25])
