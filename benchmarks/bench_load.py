"""Load time of the embedded SmolLM2: from the conversion cache vs dequantising the GGUF file, in one run.

Target: a cached load ≤ 2 s (the GGUF path costs ~16 s here). Prints medians and the ratio.

    .venv/bin/python benchmarks/bench_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import explorer  # noqa: E402
from explorer.capture.embedded import EMBEDDED, embedded_source  # noqa: E402
from _common import median_time  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gguf = embedded_source(EMBEDDED["smollm2"])
    explorer.load("smollm2", device="cpu")  # make sure the cache exists

    def from_gguf():
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)

    t_gguf = median_time(from_gguf, max(1, args.repeats - 1), warmup=0)
    t_cache = median_time(lambda: explorer.load("smollm2", device="cpu"), args.repeats)
    print(f"GGUF dequantise + tokenizer: {t_gguf:.2f} s (median)")
    print(f"explorer.load from cache (instrumented, tokenizer included): {t_cache:.2f} s (median)")
    print(f"ratio cache / GGUF: {t_cache / t_gguf:.3f}  (target: cached load ≤ 2 s)")


if __name__ == "__main__":
    main()
