"""Attention kernels, as ratios: from scratch vs SDPA (default dispatch, flash, memory-efficient, math) vs the
engine's recorder, at several lengths, on one device, all measured in the same run.

Prints, per n, the median time of each method and its ratio to SDPA's default dispatch (the baseline), then the
peak memory above the inputs (CUDA: allocator peak; CPU: torch profiler) and its ratio to the baseline's, and the
largest |Δ| of each method's output from the from-scratch one. Shape: SmolLM2's (9 heads × 64), causal, float32.

    .venv/bin/python benchmarks/bench_kernels.py [--device auto|cpu|cuda] [--lengths 128 256 ... 4096]
                                                 [--repeats 3] [--no-memory] [--heads 9 --head-dim 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from explorer.from_scratch import kernels  # noqa: E402
from explorer.capture.devices import resolve_device  # noqa: E402


@contextlib.contextmanager
def profiler_chatter_silenced():
    """Point file descriptor 2 at /dev/null and yield a stream on the real stderr.

    torch 2.13's profiler (the CPU memory measurement) writes two 'USDT ... profiler_start/stop' lines per session
    straight to fd 2, which would bury the progress lines. Done here, in the script, not in the engine: swapping a
    process-wide fd inside a multi-session server would race.
    """
    sys.stderr.flush()
    real = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        with os.fdopen(os.dup(real), "w") as stream:
            yield stream
    finally:
        os.dup2(real, 2)
        os.close(real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(kernels.LENGTHS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    args = parser.parse_args()

    device = resolve_device(args.device)
    shape = kernels.Shape(args.heads, args.head_dim, causal=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}; {shape.n_heads} heads × d_k = {shape.head_dim}, causal, "
          f"median of {args.repeats}; baseline = {kernels.SDPA_DEFAULT}", flush=True)
    with profiler_chatter_silenced() as progress:
        rows, missing = kernels.sweep(device, shape, args.lengths, repeats=args.repeats,
                                      measure_memory=not args.no_memory,
                                      on_progress=lambda f, what: print(f"  … {what}", file=progress, flush=True))
    methods = list(dict.fromkeys(r.method for r in rows))
    by = {(r.method, r.n): r for r in rows}
    width = max(len(m) + 8 for m in methods)

    print(f"\ntime: median ms (ratio to the baseline)\n{'n':>6} " + " ".join(f"{m:>{width}}" for m in methods))
    for n in args.lengths:
        base = by[(kernels.SDPA_DEFAULT, n)].seconds
        cells = [f"{by[(m, n)].seconds * 1e3:9.3f} ({by[(m, n)].seconds / base:5.2f}×)" for m in methods]
        print(f"{n:>6} " + " ".join(f"{c:>{width}}" for c in cells))

    if not args.no_memory:
        print(f"\npeak memory above the inputs: MiB (ratio to the baseline)\n{'n':>6} "
              + " ".join(f"{m:>{width}}" for m in methods))
        for n in args.lengths:
            base = by[(kernels.SDPA_DEFAULT, n)].peak_bytes or 1
            cells = [f"{by[(m, n)].peak_bytes / 2**20:9.2f} ({by[(m, n)].peak_bytes / base:5.1f}×)" for m in methods]
            print(f"{n:>6} " + " ".join(f"{c:>{width}}" for c in cells))

    worst = {m: max(by[(m, n)].max_abs_diff for n in args.lengths) for m in methods}
    print("\nlargest |Δ| from the from-scratch output: "
          + ", ".join(f"{m} {d:.1e}" + ("" if by[(m, args.lengths[0])].dtype == "float32"
                                         else f" ({by[(m, args.lengths[0])].dtype})") for m, d in worst.items()))
    for gone in missing:
        print(f"not available on {device}: {gone.method} ({gone.reason})")


if __name__ == "__main__":
    main()
