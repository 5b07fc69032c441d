"""Per-token latency of the stepper against ``transformers``' own ``generate``, measured in the same run.

    .venv/bin/python benchmarks/bench_generation.py [--tokens 32] [--rounds 5] [--device cpu]

Both sides decode the same prompt with the same weights: the stepper through the recording attention (which also
rebuilds each new token's attention row for every head and runs the staged sampling pipeline), the baseline as a
plain ``AutoModelForCausalLM`` with SDPA attention calling ``generate``. A per-token latency is the time between two
consecutive tokens (the prompt's prefill is excluded); for ``generate`` a logits processor stamps each token.
Rounds alternate between the two sides so that load from other processes hits both alike. Target: ratio ≤ 1.3×.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))  # benchmarks/_common.py

import torch  # noqa: E402
from transformers import LogitsProcessor, LogitsProcessorList  # noqa: E402

import explorer  # noqa: E402
from explorer.decoding.generation import Stepper  # noqa: E402
from _common import stock_model  # noqa: E402

PROMPT = "Once upon a time, in a small village,"
CONFIGS = {
    "greedy": dict(temperature=0.0, top_k=0, top_p=1.0),
    "sampled T=0.8 k=50 p=0.9": dict(temperature=0.8, top_k=50, top_p=0.9),
}


class _Stamp(LogitsProcessor):
    """Records the time at which ``generate`` asks for each token's scores."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def _intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def stepper_latencies(model: explorer.Model, tokens: int, knobs: dict) -> list[float]:
    stepper = Stepper(model, PROMPT, seed=0, max_new_tokens=tokens, stop_at_eos=False, **knobs)
    stamps = []
    while not stepper.done:
        stepper.step()
        stamps.append(time.perf_counter())
    return _intervals(stamps)


def generate_latencies(reference, ids: torch.Tensor, tokens: int, knobs: dict) -> list[float]:
    stamp = _Stamp()
    sampling = knobs["temperature"] > 0
    extra = {}
    if sampling:
        extra = dict(temperature=knobs["temperature"], top_k=knobs["top_k"] or None, top_p=knobs["top_p"])
    with torch.inference_mode():
        reference.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
            do_sample=sampling, logits_processor=LogitsProcessorList([stamp]), **extra,
        )
    return _intervals(stamp.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = explorer.load("smollm2", device=args.device)
    reference = stock_model("smollm2").to(model.device)
    ids = torch.tensor([model.encode(PROMPT).token_ids], device=model.device)
    print(f"smollm2 on {model.device}, {torch.get_num_threads()} threads, prompt of {ids.shape[1]} tokens, "
          f"{args.tokens} new tokens, {args.rounds} rounds\n")

    for name, knobs in CONFIGS.items():
        stepper_latencies(model, 4, knobs)  # warm-up both sides
        generate_latencies(reference, ids, 4, knobs)
        ours: list[float] = []
        theirs: list[float] = []
        paired: list[float] = []  # one ratio per round: both sides ran back to back, under the same load
        for _ in range(args.rounds):
            mine = stepper_latencies(model, args.tokens, knobs)
            base = generate_latencies(reference, ids, args.tokens, knobs)
            ours += mine
            theirs += base
            paired.append(statistics.median(mine) / statistics.median(base))
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{name}")
        print(f"  stepper (recorded attention rows + staged sampling): median {a * 1e3:7.2f} ms/token")
        print(f"  transformers generate (SDPA):                        median {b * 1e3:7.2f} ms/token")
        print(f"  ratio stepper / generate: {a / b:.2f}x  (median of per-round ratios {statistics.median(paired):.2f}x; "
              f"target <= 1.3x)\n")


if __name__ == "__main__":
    main()
