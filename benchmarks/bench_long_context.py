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
- the head statistics of every head alone (``explorer.analysis.stats.text_statistics``), and the floor under them:
  one kernel call per layer with V = K (``explorer.capture.fused.mean_keys``), the entropy's inner sum, alone.
Each figure and the forward take turns, three rounds up to 2,048 tokens (one beyond, with three forwards); every number
is the median of its rounds.
Targets: an 8,192-token trace grows peak RSS by ≤ 3 GiB over the loaded model (issue 14); issue 22's ratios over
the plain forward (README, Long context).

    .venv/bin/python benchmarks/bench_long_context.py [--models smollm2 gemma3] [--lengths 1024 4096 8192] [--streamed]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
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
    from explorer.analysis.overview import layer_overview, model_overview
    from explorer.analysis.stats import TEXT_STATISTICS, text_statistics
    from explorer.capture import fused
    from explorer.figures import heads as fh
    from _common import text_of_tokens

    model = explorer.load(model_name, device="cpu")
    enc = text_of_tokens(model, n)
    ids = torch.tensor([enc.token_ids])
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak, trace = peak_rss_during(lambda: model.trace_ids(enc))
    gc.collect()
    held = proc.memory_info().rss - before

    def overview(method: str = "auto"):  # Home's pass: every layer's thumbnails and head statistics
        return model_overview(trace, cells=(fh.THUMB_CELLS,), statistics=tuple(TEXT_STATISTICS), method=method)

    overview_peak, _ = peak_rss_during(overview)  # also the overview's warm-up

    def plain():
        with torch.inference_mode():
            return model.base(input_ids=ids, use_cache=False).last_hidden_state

    def heads_page():  # a new text's first heatmap: the trace, then the default tab's maps and figure
        traced = model.trace_ids(enc)
        maps = layer_overview(traced, 0, cells=(fh.MAX_CELLS, fh.SMALL_CELLS))
        fh.layer_small_multiples(maps.blocks[fh.SMALL_CELLS], traced.tokens, layer=0)

    jobs = {"forward": plain, "trace": lambda: model.trace_ids(enc), "first_heatmap": heads_page,
            "overview": overview,
            "statistics": lambda: text_statistics(trace),
            # the floor under the statistics: the one kernel call per layer with V = K that the entropy needs
            "kernel_floor": lambda: [fused.mean_keys(trace, layer) for layer in range(trace.n_layers)]}
    if streamed:
        jobs["overview_streamed"] = lambda: overview("streamed")
    # Every figure and the plain forward take turns, so that each ratio's two numbers saw the same machine (a shared
    # 2-core machine's speed drifts by tens of percent within minutes); medians of the rounds.
    plain()
    times = {name: [] for name in jobs}
    for _ in range(3 if n <= 2048 else 1):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - t0)
            gc.collect()
    while len(times["forward"]) < 3:
        t0 = time.perf_counter()
        plain()
        times["forward"].append(time.perf_counter() - t0)
    out = {name: statistics.median(values) for name, values in times.items()}
    parts = {"q": 0, "k": 0, "v": 0, "lse": 0, "x": 0, "allowed": 0}
    for r in trace.records:  # the trace's tensors by kind (capture/'s own records; nbytes() gives only the total)
        for name in parts:
            t = getattr(r, name)
            parts[name] += 0 if t is None else t.numel() * t.element_size()
    parts["hidden_states"] = sum(h.numel() * h.element_size() for h in trace.hidden_states)
    parts["logits (if all computed)"] = n * model.vocab_size * 4
    return {"peak": peak - before, "held": held, "parts": parts, "overview_peak": overview_peak - before,
            "overview_streamed": None, **out, "threads": torch.get_num_threads()}


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
          f"{'first heatmap / forward':>24} {'of it trace':>12} {'overview / forward':>19} {'streamed':>9} "
          f"{'statistics':>11} {'V=K floor':>10} {'overview peak':>14} {'forward':>8}   trace tensors (GiB)")
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
                  f"{r['kernel_floor'] / r['forward']:>9.2f}× "
                  f"{r['overview_peak'] / GIB:>12.2f} G {r['forward']:>7.2f}s   {parts}", flush=True)


if __name__ == "__main__":
    main()
