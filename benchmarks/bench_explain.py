"""Cost of the Explain page's engine, measured against baselines in the same run (SmolLM2 fp32 on CPU).

1. Norm-based contributions of a whole layer (``trace.contribution_blocks``: the maps a block of queries at a time,
   times each key's value norm ||W_o^h v_j||, renormalised) against rebuilding that layer's maps
   (``trace.row_blocks``). Target ≤ 2×.
2. Integrated gradients on the worked example (" Mary" vs " John"): its forward+backward passes and its time as a
   ratio to one plain forward of the same prompt (``model.base`` + the answer's logits at the last position);
   gradient × input (one forward+backward) for scale.

    .venv/bin/python benchmarks/bench_explain.py [--repeats 5] [--tokens 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

import explorer  # noqa: E402
from explorer.analysis.attribution import check_target, target_of  # noqa: E402

IOI = "When Mary and John went to the store, John gave a drink to"
LONG = ("When Mary and John went to the store, John gave a drink to Mary. Then they walked home together along the "
        "river, talking about the weather and their plans for the summer holidays. ")


def medians(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each callable, taking turns within each round (after one warm-up round), so a burst of
    load from elsewhere on the shared machine hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--skip-ig", action="store_true", help="only the contributions part")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SmolLM2-135M fp32 on CPU")
    model = explorer.load("smollm2", device="cpu")

    trace = model.trace(LONG * 40, max_tokens=args.tokens)
    print(f"\n1. one layer at n = {trace.n_tokens}: contributions vs rebuilding the maps (median of {args.repeats})")
    print("layer | maps (s) | contributions (s) | ratio")
    for layer in (0, 15, 29):
        t = medians({"maps": lambda: [b for b in trace.row_blocks(layer)],
                     "contributions": lambda: [b for b in trace.contribution_blocks(layer)]}, args.repeats)
        maps, contrib = t["maps"], t["contributions"]
        print(f"{layer} | {maps:.3f} | {contrib:.3f} | {contrib / maps:.2f}×")

    if args.skip_ig:
        return
    target = check_target(model, IOI, " Mary", " John")
    ids = torch.tensor([list(target.ids)])
    embed = model.hf.get_input_embeddings()

    def forward() -> None:
        with torch.inference_mode():
            target_of(model, embed(ids), target)

    print(f"\n2. integrated gradients on the worked example ({len(target.ids)} tokens)")
    plain = medians({"forward": forward}, args.repeats)["forward"]
    start = time.perf_counter()
    ig = explorer.attribute(model, IOI, " Mary", " John")
    ig_s = time.perf_counter() - start
    start = time.perf_counter()
    explorer.attribute(model, IOI, " Mary", " John", method="gradient_x_input")
    gxi_s = time.perf_counter() - start
    plain_after = medians({"forward": forward}, args.repeats)["forward"]
    plain = min(plain, plain_after)  # the machine is shared: the quieter of the two medians
    print(f"plain forward: {plain * 1e3:.1f} ms")
    print(f"IG: {ig.passes} forward+backward passes (+ {ig.forwards} forwards locating the path's changes), "
          f"{ig_s:.2f} s = {ig_s / plain:.0f}× one forward; gap {ig.gap:+.4f} = {100 * ig.relative_gap:.2f}% "
          f"of F(x) − F(b) = {ig.target - ig.baseline_target:.3f}")
    print(f"gradient × input: 1 forward+backward, {gxi_s:.2f} s = {gxi_s / plain:.1f}× one forward")


if __name__ == "__main__":
    main()
