"""Long texts: what a trace holds in memory, and how long the first heatmap takes, for each LM in a fresh process.

For each model and length, a child process loads the model, notes its RSS, traces the text while sampling RSS, and
reports the growth (peak during the forward, and what the trace still holds after it), the trace's tensors by kind,
and time to the first heatmap (trace + one head's map + ``explorer.figures.heads.head_heatmap``) over one plain
forward of the same ids (the same model without recording, hidden states or logits), as a ratio in the same run.
Target (issue 14): an 8,192-token trace grows peak RSS by ≤ 3 GiB over the loaded model.

    .venv/bin/python benchmarks/bench_long_context.py [--models smollm2 gemma3] [--lengths 1024 4096 8192]
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


def child(model_name: str, n: int) -> dict:
    import psutil
    import torch

    import explorer
    from bench_trace import peak_rss_during
    from _common import text_of_tokens
    from explorer.figures.heads import head_heatmap

    model = explorer.load(model_name, device="cpu")
    enc = text_of_tokens(model, n)
    ids = torch.tensor([enc.token_ids])
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    t0 = time.perf_counter()
    peak, trace = peak_rss_during(lambda: model.trace_ids(enc))
    layer = trace.n_layers - 1
    attention = trace.attention(layer, 0).numpy()
    head_heatmap(attention, trace.tokens, layer=layer, head=0)
    first_heatmap = time.perf_counter() - t0
    del attention
    gc.collect()
    held = proc.memory_info().rss - before
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

    plain()  # warm-up
    t0 = time.perf_counter()
    plain()
    forward = time.perf_counter() - t0
    return {"peak": peak - before, "held": held, "parts": parts, "first_heatmap": first_heatmap, "forward": forward}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2", "gemma3"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    print(f"{'model':>8} {'n':>6} {'peak growth':>12} {'held':>8} {'GiB/1k tok':>11} "
          f"{'first heatmap / plain forward':>30}   trace tensors (GiB)")
    for name in args.models:
        for n in args.lengths:
            proc = subprocess.run([sys.executable, __file__, "--child", name, str(n)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name:>8} {n:>6} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in r["parts"].items() if v)
            print(f"{name:>8} {n:>6} {r['peak'] / GIB:>10.2f} G {r['held'] / GIB:>6.2f} G "
                  f"{r['peak'] / GIB / (n / 1024):>11.3f} {r['first_heatmap'] / r['forward']:>29.2f}×   {parts}",
                  flush=True)


if __name__ == "__main__":
    main()
