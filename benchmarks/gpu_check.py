"""The checks to run the day a CUDA GPU is lent (issue 14, part 3): one script, one markdown table, ~5 minutes.

1. The CUDA tests (recorder kernels, CPU ↔ CUDA agreement, static shapes that need bias padding), via pytest.
2. Capture overhead: ``model.trace`` over the plain SDPA forward of the same SmolLM2 weights, n = 4096 and 8192.
3. From scratch and the recorder against SDPA's fused kernels at n = 4096 (``explorer.from_scratch.kernels``).
4. Peak GPU memory of a Gemma 3 trace at 8k and 32k tokens (``torch.cuda.max_memory_allocated``).

Times are medians and are reported only as ratios to a baseline measured in the same run. Without CUDA it prints
"no CUDA device: nothing measured" and exits 0.

    .venv/bin/python benchmarks/gpu_check.py        (or: make gpu-check)
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from typing import Callable, Sequence

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

NO_CUDA = "no CUDA device: nothing measured"
CUDA_TESTS = ["tests/engine/test_sdpa_equivalence.py", "tests/engine/test_scratch.py", "tests/engine/test_engine.py"]
Row = tuple[str, str, str]  # (check, result, note)


def table(rows: Sequence[Row]) -> str:
    """The results as one markdown table."""
    lines = ["| check | result | note |", "|---|---|---|"]
    lines += [f"| {c} | {r} | {n} |" for c, r, n in rows]
    return "\n".join(lines)


def cuda_tests() -> Row:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", *CUDA_TESTS],
                          cwd=ROOT, capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return ("CUDA tests (pytest -k cuda)", "pass" if proc.returncode == 0 else "FAIL", summary)


def capture_overhead(lengths: Sequence[int] = (4096, 8192), repeats: int = 5) -> list[Row]:
    from transformers import AutoModelForCausalLM

    import explorer
    from _common import text_of_tokens
    from explorer.capture.embedded import resolve_embedded
    from explorer.from_scratch.kernels import median_seconds

    device = torch.device("cuda")
    model = explorer.load("smollm2", device="cuda")
    sdpa = AutoModelForCausalLM.from_pretrained(str(resolve_embedded("smollm2")), dtype=torch.float32,
                                                attn_implementation="sdpa").to(device).eval()
    rows = []
    for n in lengths:
        enc = text_of_tokens(model, n)
        ids = torch.tensor([enc.token_ids], device=device)

        def plain():
            return sdpa.model(input_ids=ids, use_cache=False).last_hidden_state

        medians = median_seconds({"sdpa": plain, "trace": lambda: model.trace_ids(enc)}, device, repeats)
        rows.append((f"capture overhead, SmolLM2 fp32, n = {n}", f"{medians['trace'] / medians['sdpa']:.2f}×",
                     "model.trace / plain SDPA forward (medians)"))
    del model, sdpa
    _free()
    return rows


def kernels_at(n: int = 4096) -> list[Row]:
    from explorer.from_scratch import kernels

    timings, _ = kernels.sweep("cuda", lengths=[n], repeats=5, measure_memory=False,
                               methods=[kernels.SCRATCH, kernels.SDPA_DEFAULT, kernels.RECORDER])
    seconds = {t.method: t.seconds for t in timings}
    base = seconds[kernels.SDPA_DEFAULT]
    return [(f"{method} / SDPA, n = {n}", f"{seconds[method] / base:.2f}×", "SmolLM2 shape, causal, fp32 (medians)")
            for method in (kernels.SCRATCH, kernels.RECORDER) if method in seconds]


def gemma_peak_memory(lengths: Sequence[int] = (8192, 32768)) -> list[Row]:
    import explorer
    from _common import text_of_tokens

    model = explorer.load("gemma3", device="cuda")
    rows = []
    for n in lengths:
        enc = text_of_tokens(model, n)
        _free()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        trace = model.trace_ids(enc)
        peak, held = torch.cuda.max_memory_allocated() - before, torch.cuda.memory_allocated() - before
        rows.append((f"Gemma 3 trace, n = {n}", f"{peak / 2**30:.2f} GiB peak",
                     f"{held / 2**30:.2f} GiB held by the trace; above the loaded model"))
        del trace
    del model
    _free()
    return rows


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(checks: Sequence[Callable[[], Row | list[Row]]] | None = None) -> int:
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    rows: list[Row] = [("device", torch.cuda.get_device_name(0), f"torch {torch.__version__}")]
    for check in checks or (cuda_tests, capture_overhead, kernels_at, gemma_peak_memory):
        try:
            result = check()
        except Exception as exc:  # one failed check must not hide the others' figures
            result = (check.__name__, "ERROR", f"{type(exc).__name__}: {exc}".replace("|", "/")[:200])
        rows += result if isinstance(result, list) else [result]
        print(f"done: {check.__name__}", file=sys.stderr, flush=True)
    print(table(rows))
    return 0 if all(r[1] not in ("FAIL", "ERROR") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
