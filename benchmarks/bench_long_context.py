"""Long texts: what a trace holds in memory, and how long the pages' first figures take, for each LM in a fresh process.

For each model and length, a child process loads the model, notes its RSS, traces the text while sampling RSS, and
reports the growth (peak during the forward, and what the trace still holds after it), the trace's tensors by kind,
and, over one plain forward of the same ids (the same model without recording, hidden states or logits; the median
of three, in the same run):
- time to the first heatmap on the heads page: the trace, plus its default tab as the page computes it (layer 0's
  maps streamed into block means, ``explorer.figures.heads.layer_small_multiples``);
- Home's overview: the thumbnails and the head statistics of every layer
  (``explorer.analysis.overview.model_overview``), with the peak RSS growth during it: the fused path the app takes
  (gathers and the fused kernel, no maps) and, with ``--streamed``, the exact streamed pass it replaced;
- the head statistics of every head alone (``explorer.analysis.stats.text_statistics``).
Targets: an 8,192-token trace grows peak RSS by ≤ 3 GiB over the loaded model (issue 14); issue 22's ratios over
the plain forward (README, Long context).

    .venv/bin/python benchmarks/bench_long_context.py [--models smollm2 gemma3] [--lengths 1024 4096 8192] [--streamed]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

GIB = 1 << 30


def child(model_name: str, n: int, streamed: bool) -> dict:
    import psutil
    import torch

    import explorer
    from bench_trace import peak_rss_during
    from _common import median_time, text_of_tokens
    from explorer.analysis.overview import layer_overview, model_overview
    from explorer.analysis.stats import TEXT_STATISTICS, text_statistics
    from explorer.figures import heads as fh

    model = explorer.load(model_name, device="cpu")
    enc = text_of_tokens(model, n)
    ids = torch.tensor([enc.token_ids])
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    t0 = time.perf_counter()
    peak, trace = peak_rss_during(lambda: model.trace_ids(enc))
    traced = time.perf_counter() - t0
    maps = layer_overview(trace, 0, cells=(fh.MAX_CELLS, fh.SMALL_CELLS))  # the heads page's first tab
    fh.layer_small_multiples(maps.blocks[fh.SMALL_CELLS], trace.tokens, layer=0)
    first_heatmap = time.perf_counter() - t0
    del maps
    gc.collect()
    held = proc.memory_info().rss - before
    t0 = time.perf_counter()
    overview_peak, _ = peak_rss_during(
        lambda trace=trace: model_overview(trace, cells=(fh.THUMB_CELLS,), statistics=tuple(TEXT_STATISTICS)))
    overview = time.perf_counter() - t0
    t0 = time.perf_counter()
    text_statistics(trace)
    statistics = time.perf_counter() - t0
    overview_streamed = None
    if streamed:
        t0 = time.perf_counter()
        model_overview(trace, cells=(fh.THUMB_CELLS,), statistics=tuple(TEXT_STATISTICS), method="streamed")
        overview_streamed = time.perf_counter() - t0
    parts = {"q": 0, "k": 0, "v": 0, "lse": 0, "x": 0, "allowed": 0}
    for r in trace.records:
        for name in parts:
            t = getattr(r, name)
            parts[name] += 0 if t is None else t.numel() * t.element_size()
    parts["hidden_states"] = sum(h.numel() * h.element_size() for h in trace.hidden_states)
    parts["logits (if all computed)"] = n * model.vocab_size * 4
    del trace
    gc.collect()

    def plain():
        with torch.inference_mode():
            return model.base(input_ids=ids, use_cache=False).last_hidden_state

    forward = median_time(plain, repeats=3)
    return {"peak": peak - before, "held": held, "parts": parts, "first_heatmap": first_heatmap, "forward": forward,
            "overview": overview, "overview_peak": overview_peak - before, "statistics": statistics, "trace": traced,
            "overview_streamed": overview_streamed, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2", "gemma3"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--streamed", action="store_true", help="also time the streamed exact overview")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "N", "STREAMED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2] == "1")))
        return
    print(f"load average before: {os.getloadavg()}")
    print(f"{'model':>8} {'n':>6} {'peak growth':>12} {'held':>8} {'GiB/1k tok':>11} "
          f"{'first heatmap / forward':>24} {'of it trace':>12} {'overview / forward':>19} {'streamed':>9} {'statistics':>11} "
          f"{'overview peak':>14} {'forward':>8}   trace tensors (GiB)")
    for name in args.models:
        for n in args.lengths:
            proc = subprocess.run([sys.executable, __file__, "--child", name, str(n), "1" if args.streamed else "0"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name:>8} {n:>6} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in r["parts"].items() if v)
            streamed = "—" if r["overview_streamed"] is None else f"{r['overview_streamed'] / r['forward']:.2f}×"
            print(f"{name:>8} {n:>6} {r['peak'] / GIB:>10.2f} G {r['held'] / GIB:>6.2f} G "
                  f"{r['peak'] / GIB / (n / 1024):>11.3f} {r['first_heatmap'] / r['forward']:>23.2f}× "
                  f"{r['trace'] / r['forward']:>11.2f}× "
                  f"{r['overview'] / r['forward']:>18.2f}× {streamed:>9} {r['statistics'] / r['forward']:>10.2f}× "
                  f"{r['overview_peak'] / GIB:>12.2f} G {r['forward']:>7.2f}s   {parts}", flush=True)


if __name__ == "__main__":
    main()
