"""The Chinese catalogue keeps one rendering per term: docs/translating.md's glossary table lists, for each term, the
variants a translation must not use (regular expressions), and no translation in messages.po, nor in a teammate's
fragment waiting to be merged (explorer/locales/fragments/*.po), contains one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from explorer import i18n

ROOT = Path(__file__).resolve().parents[2]
GLOSSARY = ROOT / "docs" / "translating.md"
CATALOGUES = [i18n.LOCALE_DIR / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po",
              *sorted((i18n.LOCALE_DIR / "fragments").glob("*.po"))]


def glossary() -> list[tuple[str, str, re.Pattern]]:
    """(term, the rendering to use, one rejected variant) for every rejected variant in the glossary table."""
    text = GLOSSARY.read_text(encoding="utf-8")
    section = text.split("## Glossary", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("term", "---"):
            continue
        term, use, rejected = cells
        rows += [(term, use, re.compile(pattern)) for pattern in re.findall(r"`([^`]+)`", rejected)]
    return rows


RULES = glossary()


def translations(path: Path) -> list[tuple[str, str]]:
    """(msgid, one translated form) for every translated entry of the catalogue at ``path``."""
    with path.open("rb") as f:
        catalogue = read_po(f, locale="zh_Hans_CN")
    found = []
    for entry in catalogue:
        if not entry.id or not entry.string:
            continue
        msgid = entry.id if isinstance(entry.id, str) else entry.id[0]
        forms = [entry.string] if isinstance(entry.string, str) else list(entry.string)
        found += [(msgid, form) for form in forms if form]
    return found


def test_the_glossary_table_is_read():
    # the table is the test's data: a reformatted table that no longer parses must not pass silently
    terms = {term for term, _use, _rule in RULES}
    assert len(RULES) >= 20 and {"trace (a recorded run)", "key/value head", "next token", "ellipsis"} <= terms


@pytest.mark.parametrize("term, use, rule", RULES, ids=[f"{t}:{r.pattern}" for t, _u, r in RULES])
def test_no_rule_rejects_the_rendering_it_asks_for(term, use, rule):
    # each rule rejects something, and never the rendering the glossary asks for (a rule that cannot fail, or that
    # forbids the right term, would be worse than none)
    assert rule.pattern
    for wanted in re.findall(r"[\u4e00-\u9fff…、，；：（）][^\s(]*", use):
        assert not rule.search(wanted), f"{term}: the rule {rule.pattern!r} rejects the rendering {wanted!r}"


@pytest.mark.parametrize("path", CATALOGUES, ids=lambda p: p.name)
def test_no_translation_uses_a_rejected_variant(path):
    bad = [f"{msgid!r} → {text!r}: {term}: use {use}, not /{rule.pattern}/"
           for msgid, text in translations(path) for term, use, rule in RULES if rule.search(text)]
    assert not bad, f"{len(bad)} translations break the glossary (docs/translating.md):\n" + "\n".join(bad[:40])


def test_the_rules_catch_the_variants_the_review_found():
    # the review's examples, as a catalogue entry would have them: each is caught by some rule
    found = ["第 {head} 个头", "键/值头 {kv}", "（键头 {kv}）", "head · kv", "下一个词元", "被掩盖的词", "掩码填充", "从中抽取",
             "这条轨迹", "每个单元格", "假设实验", "提示词", "侧边栏", "的 rollout 均值", "正在读取…",
             "(层, 头) 对", "运行最大值", "中位时间", "最差相对差"]
    missed = [text for text in found if not any(rule.search(text) for _t, _u, rule in RULES)]
    assert not missed, missed
