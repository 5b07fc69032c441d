"""Timing and memory of attention kernels: the from-scratch computation against fused kernels, on CPU or CUDA.

The from-scratch core (:func:`explorer.from_scratch.scratch.attention_core`) materialises the (H, n, n) score and probability
matrices. ``torch.nn.functional.scaled_dot_product_attention`` dispatches to fused kernels (flash, memory-efficient)
that walk the keys in tiles and keep, per query, only a running maximum and a running sum of exponentials (the
online softmax): memory O(n·D) instead of O(n²). The engine's recorder (:mod:`explorer.capture.recorder`) calls such a
kernel too, and keeps the log-sum-exp it returns.

Inputs are seeded random q, k, v of one model's shape (H heads of D dims; key/value heads expanded, so GQA
bookkeeping is not timed), float32 unless a back end only runs in float16 (flash on CUDA), which is then labelled.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..i18n import N_, _
from ..capture.devices import resolve_device
from ..capture.masks import causal_allowed
from ..capture.recorder import Recorder, recording, recording_attention
from .scratch import attention_core

LENGTHS = (128, 256, 512, 1024, 2048, 4096)
# Method names are data (keys, cached timings) marked for translation; the page translates them where shown.
SCRATCH = N_("from scratch")
RECORDER = N_("engine recorder")
SDPA_DEFAULT = N_("SDPA (default dispatch)")
SDPA_BACKENDS = {
    N_("SDPA flash"): SDPBackend.FLASH_ATTENTION,
    N_("SDPA memory-efficient"): SDPBackend.EFFICIENT_ATTENTION,
    N_("SDPA math"): SDPBackend.MATH,
}
MATERIALISES = {SCRATCH: True, "SDPA math": True}  # every other method keeps O(n) per query row

AttentionFn = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Shape:
    """The attention shape being timed: heads, head dim, causal or not."""

    n_heads: int = 9
    head_dim: int = 64
    causal: bool = True

    @classmethod
    def of_model(cls, model) -> "Shape":
        """The shape of a loaded :class:`explorer.Model` (its head count and size, its own mask)."""
        return cls(model.n_heads, model.head_dim, model.default_mask == "causal")


@dataclass(frozen=True)
class KernelTiming:
    """One method at one length: median seconds, peak memory above the inputs (bytes; None where not measured),
    whether it builds the n×n matrix, and its largest |Δ| from the from-scratch output (None if not run)."""

    method: str
    n: int
    seconds: float
    peak_bytes: int | None
    materialises: bool
    dtype: str
    max_abs_diff: float | None


@dataclass(frozen=True)
class Unavailable:
    """A method that does not run on this device, and why."""

    method: str
    reason: str


def make_inputs(n: int, shape: Shape, device: torch.device | str, dtype: torch.dtype = torch.float32,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q, k, v (1, H, n, D), generated on the CPU so that every device gets the same numbers."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, shape.n_heads, n, shape.head_dim, generator=gen) for _ in range(3))
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


# ---- the methods ----------------------------------------------------------------------------------------------------
def _method_fn(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: Shape) -> AttentionFn:
    """A zero-argument callable computing attention (1, H, n, D) with ``method``."""
    scale = shape.head_dim**-0.5
    n = q.shape[-2]
    if method == SCRATCH:
        allowed = causal_allowed(n, n, q.device) if shape.causal else None  # built once, outside the timing
        return lambda: attention_core(q, k, v, scale, allowed)[0]
    if method == RECORDER:
        module = SimpleNamespace(is_causal=shape.causal, training=False)

        def recorded() -> torch.Tensor:
            with recording(Recorder(keep_inputs=False)):
                return recording_attention(module, q, k, v, None, scaling=scale)[0].transpose(1, 2)

        return recorded
    backend = SDPA_BACKENDS.get(method)
    if method != SDPA_DEFAULT and backend is None:
        raise ValueError(_("Unknown method {method!r}.").format(method=method))

    def sdpa() -> torch.Tensor:
        with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
            return F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal, scale=scale)

    return sdpa


def all_methods() -> list[str]:
    """Every method the sweep knows, the from-scratch reference first."""
    return [SCRATCH, SDPA_DEFAULT, *SDPA_BACKENDS, RECORDER]


def probe_methods(device: str | torch.device, shape: Shape) -> tuple[dict[str, torch.dtype], list[Unavailable]]:
    """Which methods run on this device, and in which dtype (float32, else float16), by trying each on n = 128."""
    device = resolve_device(device)
    runnable: dict[str, torch.dtype] = {}
    missing: list[Unavailable] = []
    for method in all_methods():
        reason = ""
        for dtype in (torch.float32, torch.float16):
            if dtype == torch.float16 and device.type == "cpu":
                break  # on the CPU a half-precision kernel would not be a fair comparison
            try:
                q, k, v = make_inputs(128, shape, device, dtype)
                _method_fn(method, q, k, v, shape)()
                runnable[method] = dtype
                break
            except (RuntimeError, NotImplementedError) as exc:
                reason = str(exc).strip().split("\n")[0][:200]
        if method not in runnable:
            if not reason or "No viable backend" in reason:  # torch's wording blames switched-off kernels
                reason = _("PyTorch {version} has no such kernel for {device} at this shape and dtype").format(
                    version=torch.__version__, device=device.type)
            missing.append(Unavailable(method, reason))
    return runnable, missing


# ---- measuring ------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fns: dict[str, AttentionFn], device: torch.device, repeats: int,
                   warmup: int = 1) -> dict[str, float]:
    """Median wall time of each callable over ``repeats`` rounds, after ``warmup`` rounds (CUDA work is waited for).

    The methods take turns within each round, so a burst of load from elsewhere on the machine hits them alike
    rather than whichever happened to run during it.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for round_ in range(warmup + repeats):
            for name, fn in fns.items():
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(fn: AttentionFn, device: torch.device) -> int | None:
    """Peak bytes allocated while ``fn`` runs, above what was allocated before (its output included).

    CUDA: the caching allocator's peak counter. CPU: torch's profiler records every allocation and free; the peak
    is the highest running total. None when neither is available.
    """
    with torch.inference_mode():
        if device.type == "cuda":
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            fn()
            _sync(device)
            return int(torch.cuda.max_memory_allocated(device) - before)
        if device.type != "cpu":
            return None
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        # Each op reports its own net allocation; frees of temporaries made inside it are netted into the op
        # that frees them. Count growth when an op starts and shrinkage when it ends: an upper bound on the peak
        # that is exact for a sequence of ops, which is what these computations are.
        changes = []
        for event in prof.events():
            delta = event.self_cpu_memory_usage
            if delta:
                changes.append((event.time_range.start if delta > 0 else event.time_range.end, delta))
        running = peak = 0
        for _time, delta in sorted(changes, key=lambda c: (c[0], -c[1])):
            running += delta
            peak = max(peak, running)
        return int(peak)


def sweep(
    device: str | torch.device = "cpu",
    shape: Shape = Shape(),
    lengths: tuple[int, ...] | list[int] = LENGTHS,
    repeats: int = 3,
    methods: list[str] | None = None,
    measure_memory: bool = True,
    on_progress: Callable[[float, str], None] | None = None,
) -> tuple[list[KernelTiming], list[Unavailable]]:
    """Time every runnable method at every length on ``device``; each result also says how far it is from scratch."""
    device = resolve_device(device)
    runnable, missing = probe_methods(device, shape)
    chosen = [m for m in (methods or all_methods()) if m in runnable]
    rows: list[KernelTiming] = []
    for step, n in enumerate(lengths):
        if on_progress:
            on_progress(step / len(lengths), f"n = {n:,}")
        fns, diffs, reference = {}, {}, None
        for method in chosen:  # scratch first: the others are compared with it
            q, k, v = make_inputs(n, shape, device, runnable[method])
            fns[method] = _method_fn(method, q, k, v, shape)
            with torch.inference_mode():
                out = fns[method]().float()
            reference = out if method == SCRATCH else reference
            diffs[method] = float((out - reference).abs().max()) if reference is not None else None
            del out
        seconds = median_seconds(fns, device, repeats)
        for method, fn in fns.items():
            rows.append(KernelTiming(method, n, seconds[method], peak_memory(fn, device) if measure_memory else None,
                                     MATERIALISES.get(method, False), str(runnable[method]).removeprefix("torch."),
                                     diffs[method]))
        del fns, reference
    if on_progress:
        on_progress(1.0, "done")
    return rows, missing


def device_agreement(n: int = 256, shape: Shape = Shape(), devices: tuple[str, str] = ("cpu", "cuda"),
                     methods: list[str] | None = None) -> dict[str, float]:
    """Largest |Δ| between the same method's float32 outputs on two devices, from identical inputs."""
    resolved = [resolve_device(d) for d in devices]
    common = None
    for device in resolved:
        runnable = {m for m, dt in probe_methods(device, shape)[0].items() if dt == torch.float32}
        common = runnable if common is None else common & runnable
    result = {}
    for method in (methods or all_methods()):
        if method not in common:
            continue
        outs = []
        for device in resolved:
            q, k, v = make_inputs(n, shape, device)
            with torch.inference_mode():
                outs.append(_method_fn(method, q, k, v, shape)().float().cpu())
        result[method] = float((outs[0] - outs[1]).abs().max())
    return result
