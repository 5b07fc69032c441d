"""Deployment settings, read from environment variables (one documented place; see docs/deployment.md).

| variable                     | default | meaning                                                        |
|------------------------------|---------|----------------------------------------------------------------|
| ``AE_ALLOWED_MODELS``        | any †   | ``embedded`` (only smollm2/minilm) or ``any`` (hub ids too)    |
| ``AE_ALLOW_LOCAL_PATHS``     | 1 †     | may users load folders on the server's disk?                   |
| ``AE_MAX_TOKENS``            | 1024    | the app's token cap per text                                   |
| ``AE_MAX_GENERATION_STEPS``  | 64      | the most tokens one generation may step                       |
| ``AE_DEFAULT_DEVICE``        | auto    | auto / cpu / cuda                                              |
| ``AE_TRACE_CACHE_MB``        | 2048    | memory the shared trace cache may hold                         |
| ``AE_TRACE_CACHE_ENTRIES``   | 32      | traces the shared cache may hold                               |
| ``AE_DTYPE``                 | float32 | float32 / bfloat16 / float16: the type models load and run in  |
| ``AE_DEVICE_MAP``            | unset   | e.g. ``auto``: spread each model over the devices (accelerate) |

† Only while the server listens on this machine alone (``server.address`` a loopback address, as ``make run`` and
``.streamlit/config.toml`` set it). A server that other machines can reach defaults to ``embedded`` and ``0``:
anything more permissive must be asked for by setting the variable.

A value the app does not understand never stops it: the setting keeps its default (for ``AE_DTYPE`` and
``AE_DEVICE_MAP`` with a line in the log). Unset, ``AE_DEVICE_MAP`` is a plain load on the sidebar's device; set (a
strategy such as ``auto`` or one device such as ``cuda:1``), it is handed to ``explorer.load(device_map=...)`` and
the sidebar's device is where inputs go.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Mapping

import torch

from ..capture.embedded import EMBEDDED
from ..capture.loading import DTYPES

log = logging.getLogger("attention_explorer")

# accelerate's placement strategies; any other device map must name one device (what torch.device parses).
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def is_loopback(address: str | None) -> bool:
    """Does a server bound to ``address`` listen on this machine alone? (Unset or empty: every interface.)"""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to an outside interface


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    try:
        value = int(env.get(name, default))
    except ValueError:
        value = default
    return max(lo, min(hi, value))


def _dtype(env: Mapping[str, str]) -> str:
    raw = env.get("AE_DTYPE", "").strip().lower()
    if raw and raw not in DTYPES:
        log.warning("AE_DTYPE=%r is none of %s: loading in float32.", raw, ", ".join(DTYPES))
    return raw if raw in DTYPES else "float32"


def _device_map(env: Mapping[str, str]) -> str | None:
    raw = env.get("AE_DEVICE_MAP", "").strip().lower()
    if not raw or raw in DEVICE_MAP_STRATEGIES:
        return raw or None
    try:
        torch.device(raw)  # a bad name would fail every load later; refuse it here, once
    except (RuntimeError, ValueError):
        log.warning("AE_DEVICE_MAP=%r is neither a strategy (%s) nor a device: loading on one device.",
                    raw, ", ".join(DEVICE_MAP_STRATEGIES))
        return None
    return raw


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    allowed_models: str = "embedded"  # "embedded" | "any"
    allow_local_paths: bool = False
    max_tokens: int = 1024
    max_generation_steps: int = 64
    default_device: str = "auto"
    trace_cache_mb: int = 2048
    trace_cache_entries: int = 32
    dtype: str = "float32"  # a key of explorer.capture.loading.DTYPES
    device_map: str | None = None  # None: a plain single-device load

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, local_only: bool = False) -> "Settings":
        """Settings from ``env`` (default: ``os.environ``). ``local_only``: the server is reachable from this
        machine alone, so any model and local folders are the defaults; otherwise only what is set explicitly."""
        env = os.environ if env is None else env
        allowed = env.get("AE_ALLOWED_MODELS", "any" if local_only else "embedded").strip().lower()
        return cls(
            allowed_models=allowed if allowed in ("embedded", "any") else "embedded",
            allow_local_paths=_bool(env, "AE_ALLOW_LOCAL_PATHS", local_only),
            max_tokens=_int(env, "AE_MAX_TOKENS", 1024, 1, 16384),
            max_generation_steps=_int(env, "AE_MAX_GENERATION_STEPS", 64, 1, 1024),
            default_device=env.get("AE_DEFAULT_DEVICE", "auto").strip().lower() or "auto",
            trace_cache_mb=_int(env, "AE_TRACE_CACHE_MB", 2048, 16, 1 << 20),
            trace_cache_entries=_int(env, "AE_TRACE_CACHE_ENTRIES", 32, 1, 10_000),
            dtype=_dtype(env),
            device_map=_device_map(env),
        )

    def model_allowed(self, name: str) -> bool:
        return self.allowed_models == "any" or name.strip().lower() in EMBEDDED
