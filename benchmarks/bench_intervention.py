"""Cost of head patching: ``patch_heads`` over every head of SmolLM2 vs one plain forward of the same text, in one run.

The worked example: the indirect-object pair ("… John gave a drink to" / "… Mary gave a drink to", answer " Mary",
wrong " John"). The baseline is one plain SDPA forward of the clean text with logits for every position. Targets:
attribution patching ≤ 3×; the exact sweep of all 270 heads ≤ 30× (one forward per head would be 270×), reached
by batching the patched runs and letting them share the unpatched layers below each head. The naive sweep is
measured on every tenth head, one forward each, and scaled to 270.

    .venv/bin/python benchmarks/bench_intervention.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))  # benchmarks/_common.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

import explorer  # noqa: E402
from explorer.capture import intervention  # noqa: E402
from explorer.from_scratch.kernels import median_seconds  # noqa: E402
from _common import stock_model  # noqa: E402

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SmolLM2-135M fp32 on CPU")
    model = explorer.load("smollm2", device="cpu")
    sdpa = stock_model("smollm2")
    ids = torch.tensor([model.encode(CLEAN).token_ids])
    every_tenth = [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)][::10]

    def naive():  # one forward per patched head: what the batching saves
        saved = intervention.TOKENS_PER_FORWARD
        intervention.TOKENS_PER_FORWARD = 1
        try:
            model.patch_heads(CLEAN, CORRUPT, " Mary", " John", heads=every_tenth)
        finally:
            intervention.TOKENS_PER_FORWARD = saved

    fns = {
        "plain forward": lambda: sdpa(ids).logits,
        "attribution (270 heads)": lambda: model.patch_heads(CLEAN, CORRUPT, " Mary", " John", method="attribution"),
        "exact, batched (270 heads)": lambda: model.patch_heads(CLEAN, CORRUPT, " Mary", " John"),
        f"exact, one forward per head ({len(every_tenth)} heads)": naive,
    }
    # The methods take turns in each round, so drifts in machine load hit them alike.
    medians = median_seconds(fns, torch.device("cpu"), args.repeats)
    base = medians["plain forward"]
    scale = {name: 1.0 for name in fns}
    scale[next(name for name in fns if name.startswith("exact, one"))] = 270 / len(every_tenth)

    print(f"\n{ids.shape[1]} tokens, {model.n_layers * model.n_heads} heads")
    print(f"{'':<40} {'median':>9} {'× plain forward':>16}")
    for name, seconds in medians.items():
        note = f" (→ {seconds * scale[name] / base:.0f}× for all 270)" if scale[name] != 1 else ""
        print(f"{name:<40} {seconds:>8.3f}s {seconds / base:>15.1f}×{note}")

    result = model.patch_heads(CLEAN, CORRUPT, " Mary", " John")
    exact = result.to_frame()
    attribution = model.patch_heads(CLEAN, CORRUPT, " Mary", " John", method="attribution").to_frame()
    r = np.corrcoef(exact.effect, attribution.effect)[0, 1]
    top = exact.loc[exact.effect.idxmax()]
    print(f"\nLD clean {result.ld_clean:.2f}, corrupt {result.ld_corrupt:.2f}; attribution vs exact: "
          f"Pearson r = {r:.3f}; strongest head L{int(top.layer)}.H{int(top['head'])} (effect {top.effect:.2f})")


if __name__ == "__main__":
    main()
