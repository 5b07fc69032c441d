"""The tokenizer behind one door: no module outside ``explorer/capture/tokens.py`` calls the model's tokenizer, and
every call that goes through the door holds its lock (fast tokenizers raise "Already borrowed" when two sessions'
threads use one at once). The Intervene page once decoded its continuation with ``model.tokenizer.decode``, unlocked.
"""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where the tokenizer may be named: the door itself, the model that holds it and delegates to it, the loader that
# builds it (and capture/embedded.py, which converts GGUF tokenizer files before any model exists).
DOOR = {"explorer/capture/tokens.py", "explorer/capture/model.py", "explorer/capture/loading.py",
        "explorer/capture/embedded.py"}


def _code_files() -> dict[str, str]:
    files = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
             for p in [*(ROOT / "explorer").rglob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "app.py",
                       *(ROOT / "benchmarks").glob("*.py")]}
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        python = [line for line in code.splitlines() if not line.lstrip().startswith(("!", "%"))]  # no shell lines
        files[str(notebook.relative_to(ROOT))] = "\n".join(python)
    return files


def _tokenizer_uses(source: str) -> list[int]:
    """Lines where something's ``.tokenizer`` or the door's private ``._hf`` is read."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr in ("tokenizer", "_hf")]


def test_no_module_outside_the_door_touches_the_tokenizer():
    files = _code_files()
    assert "explorer/ui/intervene.py" in files and len(files) > 50
    found = {path: lines for path, source in files.items() if path not in DOOR and (lines := _tokenizer_uses(source))}
    assert not found, f"use Model's methods (encode, decode, token_ids, eos_ids, …), not its tokenizer: {found}"
    # The scan does see a use: the door's own module reads its private tokenizer.
    assert _tokenizer_uses(files["explorer/capture/tokens.py"])


class _LockChecker:
    """Stands in for the raw tokenizer and notes, for every call into it, whether the door's lock was held."""

    def __init__(self, real, lock: threading.Lock):
        self._real, self._lock, self.calls = real, lock, []

    def __call__(self, *args, **kwargs):
        self.calls.append(("__call__", self._lock.locked()))
        return self._real(*args, **kwargs)

    def __getattr__(self, name):
        value = getattr(self._real, name)
        if not callable(value):
            return value

        def checked(*args, **kwargs):
            self.calls.append((name, self._lock.locked()))
            return value(*args, **kwargs)
        return checked


def test_the_intervene_continuation_decodes_under_the_lock(smollm2, monkeypatch):
    from explorer.ui import intervene as ui_iv

    checker = _LockChecker(smollm2.tokenizer._hf, smollm2.tokenizer._lock)
    monkeypatch.setattr(smollm2.tokenizer, "_hf", checker)
    ids = tuple(smollm2.encode("The cat sat on the").token_ids)
    text = ui_iv.continuation(smollm2, ids, 2, (), "zero")
    assert isinstance(text, str) and text != ""
    assert ("decode", True) in checker.calls  # the continuation was decoded through the door
    assert all(locked for _, locked in checker.calls), checker.calls


def test_every_door_call_holds_the_lock(smollm2, minilm, monkeypatch):
    for model in (smollm2, minilm):
        checker = _LockChecker(model.tokenizer._hf, model.tokenizer._lock)
        monkeypatch.setattr(model.tokenizer, "_hf", checker)
        ids = model.encode("The cat sat.").token_ids
        model.encode_ids(ids)
        model.decode(ids), model.raw_tokens(ids), model.token_ids("cat"), model.single_token_id("cat")
        assert {name for name, _ in checker.calls} >= {"__call__", "decode", "convert_ids_to_tokens"}
        assert all(locked for _, locked in checker.calls), (model.name, checker.calls)
    with pytest.raises(Exception, match="chat template"):
        minilm.encode("hi", chat=True)  # MiniLM has none: a clear error, before the tokenizer is called


def test_door_facts_are_the_tokenizers(smollm2, minilm):
    """EOS, pad, mask and special ids, read once when the door is built, equal the raw tokenizer's own."""
    raw = minilm.tokenizer._hf
    assert minilm.mask_token == (raw.mask_token, raw.mask_token_id) == ("[MASK]", 103)
    assert minilm.special_ids == frozenset(raw.all_special_ids) and smollm2.mask_token is None
    assert smollm2.eos_ids >= {smollm2.tokenizer._hf.eos_token_id}
    # The context length is one fact: the model's config, which cuts texts and bounds generation.
    assert smollm2.max_positions == smollm2.config.max_position_embeddings == smollm2.tokenizer.context_length == 8192
    assert minilm.max_positions == 512
