"""Deployment settings, read from environment variables (one documented place; see README "Deployment").

| variable                     | default | meaning                                                        |
|------------------------------|---------|----------------------------------------------------------------|
| ``AE_ALLOWED_MODELS``        | any     | ``embedded`` (only smollm2/minilm) or ``any`` (hub ids too)    |
| ``AE_ALLOW_LOCAL_PATHS``     | 1       | may users load folders on the server's disk? (0 in public)     |
| ``AE_MAX_TOKENS``            | 1024    | the app's token cap per text                                   |
| ``AE_MAX_GENERATION_STEPS``  | 64      | the most tokens one generation may step                       |
| ``AE_DEFAULT_DEVICE``        | auto    | auto / cpu / cuda                                              |
| ``AE_TRACE_CACHE_MB``        | 2048    | memory the shared trace cache may hold                         |
| ``AE_TRACE_CACHE_ENTRIES``   | 32      | traces the shared cache may hold                               |
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..capture.embedded import EMBEDDED


def _int(name: str, default: int, lo: int, hi: int) -> int:
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        value = default
    return max(lo, min(hi, value))


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    allowed_models: str = "any"  # "embedded" | "any"
    allow_local_paths: bool = True
    max_tokens: int = 1024
    max_generation_steps: int = 64
    default_device: str = "auto"
    trace_cache_mb: int = 2048
    trace_cache_entries: int = 32

    @classmethod
    def from_env(cls) -> "Settings":
        allowed = os.environ.get("AE_ALLOWED_MODELS", "any").strip().lower()
        return cls(
            allowed_models=allowed if allowed in ("embedded", "any") else "embedded",
            allow_local_paths=_bool("AE_ALLOW_LOCAL_PATHS", True),
            max_tokens=_int("AE_MAX_TOKENS", 1024, 1, 16384),
            max_generation_steps=_int("AE_MAX_GENERATION_STEPS", 64, 1, 1024),
            default_device=os.environ.get("AE_DEFAULT_DEVICE", "auto").strip().lower() or "auto",
            trace_cache_mb=_int("AE_TRACE_CACHE_MB", 2048, 16, 1 << 20),
            trace_cache_entries=_int("AE_TRACE_CACHE_ENTRIES", 32, 1, 10_000),
        )

    def model_allowed(self, name: str) -> bool:
        return self.allowed_models == "any" or name.strip().lower() in EMBEDDED
