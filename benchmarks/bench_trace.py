"""Cost of capture: ``model.trace`` vs the plain SDPA forward of the same model and text, in one run.

Prints medians and the ratio trace / SDPA at several lengths (target ≤ 1.10× at n ≥ 512), the same ratio for
transformers' eager attention with ``output_attentions=True`` (what capture usually costs), and the memory a
4,096-token trace holds above the loaded model (target ≤ 2 GiB; eager would need 30 × 9 × 4096² floats ≈ 18 GiB).

    .venv/bin/python benchmarks/bench_trace.py [--lengths 128 512 2048] [--repeats 5] [--memory-n 4096]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import psutil  # noqa: E402
import torch  # noqa: E402

import explorer  # noqa: E402
from explorer.from_scratch.kernels import median_seconds  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import median_time, stock_model, text_of_tokens  # noqa: E402


def peak_rss_during(fn) -> tuple[int, object]:
    """Run fn while sampling this process's RSS every 5 ms; return (peak RSS, fn's result)."""
    proc = psutil.Process()
    peak = proc.memory_info().rss
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return max(peak, proc.memory_info().rss), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eager-max-n", type=int, default=1024, help="skip eager above this n (memory)")
    parser.add_argument("--memory-n", type=int, default=4096)
    args = parser.parse_args()

    allocator = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    allocator = f"MALLOC_MMAP_THRESHOLD_={allocator}" if allocator else "glibc's default mmap threshold"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SmolLM2-135M fp32 on CPU; {allocator}")
    model = explorer.load("smollm2", device="cpu")
    sdpa, eager = stock_model("smollm2", "sdpa"), stock_model("smollm2", "eager")

    print(f"\n{'n':>6} {'sdpa forward':>13} {'model.trace':>12} {'ratio':>7} {'eager+attn':>11} {'ratio':>7}")
    for n in args.lengths:
        enc = text_of_tokens(model, n)
        ids = torch.tensor([enc.token_ids])
        repeats = args.repeats if n <= 1024 else max(3, args.repeats // 2)

        def plain():
            with torch.inference_mode():
                return sdpa(ids).logits

        def traced():
            trace = model.trace_ids(enc)
            return trace.logits  # the same work as the baseline: logits for every position

        def eager_attn():
            with torch.inference_mode():
                return eager(ids, output_attentions=True).attentions

        # The two take turns in each round, so drifts in machine load hit both alike.
        medians = median_seconds({"sdpa": plain, "trace": traced}, torch.device("cpu"), repeats)
        t_sdpa, t_trace = medians["sdpa"], medians["trace"]
        if n <= args.eager_max_n:
            t_eager = median_time(eager_attn, repeats)
            eager_cols = f"{t_eager:>10.3f}s {t_eager / t_sdpa:>6.2f}×"
        else:
            eager_cols = f"{'skipped':>11} {'':>7}"
        print(f"{n:>6} {t_sdpa:>12.3f}s {t_trace:>11.3f}s {t_trace / t_sdpa:>6.2f}× {eager_cols}", flush=True)

    del sdpa, eager
    gc.collect()
    n = args.memory_n
    enc = text_of_tokens(model, n)
    before = psutil.Process().memory_info().rss
    peak, trace = peak_rss_during(lambda: model.trace_ids(enc))
    held = psutil.Process().memory_info().rss - before
    gib = 1 << 30
    full_maps = trace.n_layers * trace.n_heads * n * n * 4
    print(f"\nmemory at n = {n}: trace holds {held / gib:.2f} GiB above the loaded model "
          f"(peak during the forward {(peak - before) / gib:.2f} GiB; trace tensors {trace.nbytes() / gib:.2f} GiB); "
          f"all maps materialised would be {full_maps / gib:.1f} GiB")
    t0 = time.perf_counter()
    a = trace.attention(trace.n_layers - 1, 0)
    print(f"rebuilding one {n}×{n} head map on demand: {time.perf_counter() - t0:.3f} s "
          f"(rows sum to 1 within {(a.sum(-1) - 1).abs().max().item():.1e})")


if __name__ == "__main__":
    main()
