"""``explorer.load``: a name, folder or hub id in; an instrumented :class:`~explorer.capture.model.Model` out.

Weights are read only from safetensors or GGUF (never pickles) and ``trust_remote_code`` is never set: loading a
model must not run code that came with it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .devices import resolve_device
from .embedded import EMBEDDED, converted_gguf_dir, resolve_embedded
from ..i18n import _, join
from ..errors import ExplorerError, InstrumentationError
from .intervention import register_output_hooks
from .model import Model, ModelKind, find_attention
from .recorder import ATTENTION_NAME
from .tokens import Tokenizer

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}(/[\w.\-]{1,96})?$")


# The dtypes a model may be loaded in: bfloat16 is what people run on GPUs.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load(
    name_or_path: str | os.PathLike = "smollm2",
    device: str = "auto",
    *,
    allow_hub: bool | None = None,
    allow_local_paths: bool = True,
    device_map: str | dict | None = None,
    dtype: str = "float32",
) -> Model:
    """Load a model for tracing.

    Args:
        name_or_path: an embedded name (``"smollm2"``, ``"minilm"``, ``"gemma3"``), a local folder (or ``.gguf``
            file), or a Hugging Face hub id (``"gpt2"``, ``"Qwen/Qwen2.5-0.5B"``).
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
        allow_hub: may a hub id be downloaded? Default: unless ``HF_HUB_OFFLINE`` is set. Ids already in the local
            Hugging Face cache load either way.
        allow_local_paths: may ``name_or_path`` be a path on this machine? (A public deployment says no.)
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"``) to spread a large model over devices with
            ``accelerate``; inputs then go where the map put the input embeddings, whatever ``device`` says.
        dtype: the weights' and activations' type, ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``. Maps
            stay exact for the computation that ran (its q, k and the kernel's float32 log-sum-exp); they differ
            from a float32 run by about bfloat16's rounding (README, "GPU and dtype").

    Raises:
        ExplorerError: unknown name, missing files, no CUDA, a model that cannot be instrumented.
    """
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if name_or_path is not None and not isinstance(name_or_path, str):
        raise ExplorerError(
            _("A model is given by name or path, not by a {type}.").format(type=type(name_or_path).__name__)
        )
    name = (name_or_path or "").strip()
    if not name:
        raise ExplorerError(
            _("No model given. Choose one of {embedded}, a Hugging Face id or a local folder.").format(
            embedded=join(EMBEDDED))
        )
    if dtype not in DTYPES:
        raise ExplorerError(_("Unknown dtype {dtype}. Use one of: {choices}.").format(dtype=repr(dtype), choices=join(DTYPES)))
    dev = resolve_device(device)
    path = _resolve_source(name, allow_hub=allow_hub, allow_local_paths=allow_local_paths)
    return _load_folder(name, path, dev, device_map, DTYPES[dtype])


def _resolve_source(name: str, allow_hub: bool | None, allow_local_paths: bool) -> str:
    embedded = resolve_embedded(name)
    if embedded is not None:
        return str(embedded)
    # With paths off, a bare name is not looked up on the disk: the answer must not depend on what exists there.
    if is_explicit_path(name) or (allow_local_paths and _exists(name)):
        if not allow_local_paths:
            raise ExplorerError(_("Loading models from local folders is disabled on this server."))
        path = Path(name).expanduser()
        if not _exists(name):
            raise ExplorerError(_("There is no file or folder at '{path}'.").format(path=_shown(name)))
        if path.is_file() and path.suffix == ".gguf":
            return str(converted_gguf_dir(path))
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
            if len(ggufs) == 1:
                return str(converted_gguf_dir(ggufs[0]))
            raise ExplorerError(
                _("'{name}' is not a model folder: it has no config.json (or a single .gguf file).").format(name=name)
            )
        return str(path)
    if not _HUB_ID.match(name):
        raise ExplorerError(
            _("'{name}' is not a model name. Use one of {embedded}, a Hugging Face id like 'gpt2', "
              "or a local folder.").format(name=_shown(name), embedded=join(EMBEDDED))
        )
    return _hub_snapshot(name, allow_hub)


def is_explicit_path(name: str) -> bool:
    """Is ``name`` spelt as a path (absolute, relative to ``.``, or under ``~``) rather than as a hub id?"""
    return name.startswith(("/", ".", "~"))


def _shown(name: str, limit: int = 100) -> str:
    """``name`` as quoted back in a message: a pasted essay is not repeated in full."""
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _exists(name: str) -> bool:
    """Does ``name`` name a file or folder? False, not an exception, for names no file system accepts
    (too long, NUL bytes)."""
    try:
        return Path(name).expanduser().exists()
    except (OSError, ValueError):
        return False


def _hub_snapshot(repo_id: str, allow_hub: bool | None) -> str:
    from huggingface_hub import snapshot_download

    if allow_hub is None:
        allow_hub = os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True")
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "*.tiktoken"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    if not allow_hub:
        raise ExplorerError(
            _("The model '{model}' is not in the local Hugging Face cache, and downloading from the hub is off.")
            .format(model=repo_id)
        )
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as exc:
        raise ExplorerError(
            _("Could not get '{model}' from the Hugging Face hub (no such model, a private one, or no network): "
              "{error}.").format(model=repo_id, error=type(exc).__name__)
        ) from exc


def _model_kind(config) -> ModelKind:
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or getattr(config, "is_decoder", False):
        return "causal-lm"
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "masked-lm"
    return "encoder"


def _load_folder(name: str, path: str, device: torch.device, device_map, dtype: torch.dtype = torch.float32) -> Model:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    if not any(Path(path).glob("*.safetensors")):
        raise ExplorerError(
            _("'{name}' has no .safetensors weights. Attention Explorer loads only safetensors or GGUF, never pickled "
              "PyTorch files, since those can run code when loaded.").format(name=name)
        )
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:
        raise ExplorerError(
            _("'{name}' has a config transformers cannot read: {error}").format(name=name, error=exc)
        ) from exc
    kind = _model_kind(config)
    auto = {"causal-lm": AutoModelForCausalLM, "masked-lm": AutoModelForMaskedLM, "encoder": AutoModel}[kind]
    kwargs = dict(dtype=dtype, use_safetensors=True, trust_remote_code=False)
    if device_map is not None:
        if isinstance(device_map, str) and device_map.startswith("cuda") and not torch.cuda.is_available():
            raise ExplorerError(_("The device map {device_map} names a CUDA device, but this machine has none.").format(
                device_map=repr(device_map)))
        kwargs["device_map"] = device_map
    try:
        hf = auto.from_pretrained(path, attn_implementation=ATTENTION_NAME, **kwargs)
    except ValueError as exc:
        if "attn_implementation" in str(exc) or "attention" in str(exc).lower():
            raise InstrumentationError(
                _("The model '{name}' ({config}) does not support transformers' attention interface, "
                  "so its attention cannot be recorded.").format(name=name, config=type(config).__name__)
            ) from exc
        raise ExplorerError(_("Could not load '{name}': {error}").format(name=name, error=exc)) from exc
    except KeyError as exc:
        if exc.args == (ATTENTION_NAME,):  # e.g. GPT-Neo looks its attention class up by implementation name
            raise InstrumentationError(
                _("The model '{name}' ({model_type}) picks its own attention classes instead of using "
                  "transformers' attention interface, so its attention cannot be recorded. Try a Llama, Qwen, "
                  "Mistral, GPT-2 or BERT model.").format(name=name, model_type=config.model_type)
            ) from exc
        raise ExplorerError(_("Could not load '{name}': {error}").format(name=name, error=exc)) from exc
    except OSError as exc:
        raise ExplorerError(_("Could not load '{name}': {error}").format(name=name, error=exc)) from exc
    hf.eval()
    if device_map is None:
        hf.to(device)
    else:  # the map placed the layers; token ids must meet the embeddings where it put them
        device = hf.get_input_embeddings().weight.device
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:
        raise ExplorerError(_("'{name}' has no usable tokenizer: {error}").format(name=name, error=exc)) from exc
    modules, rebuilders = find_attention(hf, name, device)
    model = Model(name=name, hf=hf, tokenizer=Tokenizer(tokenizer, _context_length(config), name), device=device,
                  kind=kind, attention_modules=modules, input_rebuilders=rebuilders)
    register_output_hooks(model)  # where heads are ablated and patched (explorer.capture.intervention)
    return model


def _context_length(config) -> int | None:
    """The longest input the model takes, when its config says (``max_position_embeddings``): models with learned
    absolute positions (BERT, GPT-2) fail with a shape error past it."""
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else None
