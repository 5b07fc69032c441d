"""Cost of one QK attribution vs one plain forward of the same 1,024-token text, measured in one run.

The attribution splits head 18.6's score at the last query (its top key) into every earlier part of SmolLM2's
residual stream: 18 layers × 9 heads, 18 MLPs, the embeddings. It needs each earlier head's output at two positions
only (two rows of its attention, never its map), so the target is ≤ 1× a plain SDPA forward (logits at the last
position, as a page asks). ``baseline="mean"`` needs those heads' outputs at every key the query sees (rows of
every earlier head's attention, one head at a time): reported beside it.

    .venv/bin/python benchmarks/bench_explain_qk.py [--tokens 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

import explorer  # noqa: E402
from explorer.from_scratch.kernels import median_seconds  # noqa: E402

from _common import stock_model, text_of_tokens  # noqa: E402

LAYER, HEAD = 18, 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SmolLM2-135M fp32 on CPU")
    model = explorer.load("smollm2", device="cpu")
    sdpa = stock_model("smollm2")
    encoded = text_of_tokens(model, args.tokens)
    ids = torch.tensor([encoded.token_ids])
    trace = model.trace_ids(encoded)
    query = trace.n_tokens - 1
    key = int(trace.top_keys(LAYER, HEAD, query, k=1)[0][0])

    fns = {
        "plain forward": lambda: sdpa(ids, logits_to_keep=1).logits,
        "QK attribution": lambda: explorer.qk_attribution(trace, LAYER, HEAD, query, key),
        "QK attribution, baseline='mean'": lambda: explorer.qk_attribution(trace, LAYER, HEAD, query, key,
                                                                          baseline="mean"),
    }
    medians = median_seconds(fns, torch.device("cpu"), args.repeats)
    base = medians["plain forward"]
    print(f"\n{trace.n_tokens} tokens, head {LAYER}.{HEAD}, query {query}, key {key}")
    print(f"{'':<34} {'median':>9} {'× plain forward':>16}")
    for name, seconds in medians.items():
        print(f"{name:<34} {seconds:>8.3f}s {seconds / base:>15.2f}×")
    r = explorer.qk_attribution(trace, LAYER, HEAD, query, key)
    print(f"\nscore {r.score:.4f}, parts add up to {r.parts_total:.4f} (|Δ| = {r.error:.1e}), "
          f"{len(r.key_parts)} key parts")
    ratio = medians["QK attribution"] / base
    print(f"target ≤ 1× a plain forward: {'met' if ratio <= 1 else 'NOT met'} ({ratio:.2f}×)")


if __name__ == "__main__":
    main()
