"""Every page but Home and the heads page on a long text: errors, wall time, peak RSS and payload sizes, per tab.

Issue 14: with ``AE_MAX_TOKENS=8192`` every page must work at 8,192 tokens without an error, each figure and table
at most 1.5 MB on the wire, and a progress bar on anything over a second. This script opens each page with
Streamlit's AppTest (in this process, as ``tests/apptest_helpers.open_page`` does), on a text of at least the cap's
length (README.md repeated), and drives each tab or mode the way the page tests do. For every step it records:

- ``s``: wall time of the script run(s) of that step (the first step of a page includes tracing the text);
- ``peak GiB``: the process's peak RSS during the step (VmHWM, reset before each step through
  ``/proc/self/clear_refs``), so the model and the cached traces count too;
- ``largest``: the largest element the page sent (its protobuf size: a plotly chart's spec, a dataframe's Arrow
  bytes), and its kind; ``over`` lists every element over the 1.5 MB budget;
- ``errors``: exceptions and ``st.error`` messages (first 160 characters each).

Run ONE page per process, one process at a time (an 8k trace of SmolLM2 takes ~30 s and ~1.9 GiB; some pages hold
two), e.g.::

    AE_MAX_TOKENS=8192 .venv/bin/python benchmarks/long_pages_survey.py analysis smollm2
    .venv/bin/python benchmarks/long_pages_survey.py masking gemma3 --tokens 1024

Pages: qkv, masking, generation, scratch, analysis, compare, intervene. Each line of output is one step as JSON,
then a table. Not a test: at 8k a page takes minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUDGET = 1_500_000


def long_text() -> str:
    """README.md repeated up to the app's character limit: well over 8,192 tokens for both LMs."""
    from explorer.ui.state import MAX_TEXT_CHARS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return (readme * (MAX_TEXT_CHARS // len(readme) + 1))[:MAX_TEXT_CHARS]


# ---- measuring ---------------------------------------------------------------------------------------------------
def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
    except OSError:
        pass


def peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def elements(node):
    """Every element of an AppTest tree (depth first)."""
    children = getattr(node, "children", None)
    if children:
        for child in children.values():
            yield from elements(child)
    elif getattr(node, "proto", None) is not None:
        yield node


def payloads(at) -> list[tuple[str, str, int]]:
    """(kind, key, bytes) of every element the run sent."""
    out = []
    for el in elements(at._tree):
        try:
            size = el.proto.ByteSize()
        except Exception:  # noqa: BLE001 - a node without a protobuf
            continue
        key = getattr(el.proto, "id", "") or ""
        out.append((el.type, key.rsplit("-", 1)[-1] if key else "", size))
    return out


def errors(at) -> list[str]:
    found = [f"exception: {e.message[:160]}" for e in at.exception]
    found += [f"error: {str(e.value)[:160]}" for e in at.error]
    return found


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0


class Watchdog:
    """Ends the process (with a line saying why) when a step runs past ``seconds`` or its RSS passes ``gib``: on a
    shared machine a page that would take hours or fill the memory is a finding, not something to wait for."""

    def __init__(self, seconds: float, gib: float):
        self.seconds, self.gib, self.step, self.start = seconds, gib, None, 0.0
        threading.Thread(target=self._watch, daemon=True).start()

    def begin(self, page: str, step: str) -> None:
        self.step, self.start = (page, step), time.perf_counter()

    def end(self) -> None:
        self.step = None

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            if self.step is None:
                continue
            seconds, rss = time.perf_counter() - self.start, rss_gib()
            if seconds > self.seconds or rss > self.gib:
                why = (f"stopped: RSS {rss:.1f} GiB > {self.gib}" if rss > self.gib
                       else f"stopped: over {self.seconds:.0f} s")
                print(json.dumps({"page": self.step[0], "step": self.step[1], "s": round(seconds, 1),
                                  "peak GiB": round(peak_gib(), 2), "largest": "-", "over": [], "errors": [why],
                                  "notices": []}, ensure_ascii=False), flush=True)
                os._exit(3)


WATCHDOG: Watchdog | None = None


def measure(page: str, step: str, action: Callable[[], object], at_of: Callable[[], object]) -> dict:
    reset_peak()
    if WATCHDOG is not None:
        WATCHDOG.begin(page, step)
    start = time.perf_counter()
    failed = None
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - a timeout or a crash of the script is a finding, not the end
        failed = f"{type(exc).__name__}: {str(exc)[:160]}"
    seconds = time.perf_counter() - start
    if WATCHDOG is not None:
        WATCHDOG.end()
    at = at_of()
    sizes = payloads(at) if at is not None else []
    largest = max(sizes, key=lambda s: s[2], default=("-", "", 0))
    row = {"page": page, "step": step, "s": round(seconds, 1), "peak GiB": round(peak_gib(), 2),
           "largest": f"{largest[2] / 1e6:.2f} MB {largest[0]} {largest[1]}".strip(),
           "over": [f"{k} {key} {b / 1e6:.2f} MB" for k, key, b in sizes if b > BUDGET],
           "errors": (errors(at) if at is not None else []) + ([failed] if failed else []),
           "notices": [str(e.value)[:120] for e in (at.info if at is not None else [])][:3]}
    print(json.dumps(row, ensure_ascii=False), flush=True)
    return row


# ---- driving the pages -----------------------------------------------------------------------------------------------
class Driver:
    """One AppTest of the app; ``open`` switches to a page with session state, like tests/apptest_helpers.open_page."""

    def __init__(self, timeout: float):
        from streamlit.runtime.pages_manager import PagesManager
        from explorer.ui.state import leave_legacy_pages_mode

        original = PagesManager.__init__

        def init(self, *args, **kwargs):  # what tests/conftest.py's navigation_like_a_server does
            original(self, *args, **kwargs)
            leave_legacy_pages_mode()

        PagesManager.__init__ = init
        self.timeout = timeout
        self.at = None

    def open(self, page: str, **state) -> None:
        from streamlit.testing.v1 import AppTest

        self.at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=self.timeout)
        self.at.run()
        for key, value in state.items():
            self.at.session_state[key] = value
        self.at.switch_page(page).run()

    def run(self, fn: Callable) -> None:
        fn(self.at)
        self.at.run()


def survey(page: str, model: str, timeout: float, only: set[str] | None = None) -> list[dict]:
    from explorer.ui.compare import second_text

    text = long_text()
    d = Driver(timeout)
    rows = []

    def step(name: str, action: Callable[[], object]) -> None:
        if only and name not in only:
            return
        rows.append(measure(page, f"{model} · {name}", action, lambda: d.at))

    base = dict(model_choice=model, text=text)
    if page == "qkv":
        step("open", lambda: d.open("pages/qkv.py", **base))
        step("other head", lambda: (d.at.number_input(key="qkv_head").set_value(1), d.at.run()))
    elif page == "masking":
        step("open", lambda: d.open("pages/masking.py", **base))
        step("other head", lambda: (d.at.number_input(key="masking_head").set_value(1), d.at.run()))
    elif page == "generation":
        step("open (long prompt)", lambda: d.open("pages/generation.py", model_choice=model, gen_prompt=text))
        step("sample one", lambda: (d.at.button(key="gen_sample").click(), d.at.run()))
        step("all heads", lambda: (d.at.radio(key="gen_attn_view").set_value("all heads of the layer"), d.at.run()))
    elif page == "scratch":
        step("textbook", lambda: d.open("pages/scratch.py", scratch_tab="Textbook vs the model", **base))
        step("textbook all layers", lambda: (d.at.toggle(key="scratch_all_layers").set_value(True), d.at.run()))
        step("variant", lambda: d.open("pages/scratch.py", scratch_tab="The tutorial variant", **base))
        step("kernels", lambda: d.open("pages/scratch.py", scratch_tab="Kernels and devices", **base))
    elif page == "analysis":
        for section in ("Statistics", "Q/K geometry", "Logit lens", "Rollout", "Export"):
            step(section, lambda section=section: d.open("pages/analysis.py", analysis_section=section, **base))
    elif page == "compare":
        step("two texts", lambda: d.open("pages/compare.py", compare_mode="texts", compare_text_b=second_text(text),
                                         **base))
        step("the two masks", lambda: d.open("pages/compare.py", compare_mode="masks", **base))
        step("two models", lambda: d.open("pages/compare.py", compare_mode="models", compare_model_b="gemma3", **base))
    elif page == "intervene":
        heads = [(2, 1)] if model == "gemma3" else [(17, 3)]
        step("ablate (text)", lambda: d.open("pages/intervene.py", intervene_heads=heads, intervene_source="text",
                                             **base))
        step("ablate (text), mean", lambda: (d.at.radio(key="intervene_ablation").set_value("mean"), d.at.run()))
        step("ablate (probe)", lambda: (d.at.radio(key="intervene_source").set_value("probe"), d.at.run()))
    else:
        raise SystemExit(f"unknown page {page!r}")
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| page · step | s | peak GiB | largest | errors |", "|---|---|---|---|---|"]
    for r in rows:
        problems = "; ".join(r["errors"] + [f"over 1.5 MB: {o}" for o in r["over"]]) or "–"
        lines.append(f"| {r['page']} · {r['step']} | {r['s']} | {r['peak GiB']} | {r['largest']} | {problems} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page")
    parser.add_argument("model", nargs="?", default="smollm2")
    parser.add_argument("--tokens", type=int, default=None, help="AE_MAX_TOKENS (default: the environment's, "
                                                                  "else 8192)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one script run may take")
    parser.add_argument("--steps", default="", help="comma-separated step names to run (default: all)")
    parser.add_argument("--step-limit", type=float, default=900.0, help="end the survey when a step runs longer")
    parser.add_argument("--max-gib", type=float, default=10.0, help="end the survey when the RSS passes this")
    args = parser.parse_args()
    global WATCHDOG
    WATCHDOG = Watchdog(args.step_limit, args.max_gib)
    if args.tokens:
        os.environ["AE_MAX_TOKENS"] = str(args.tokens)
    os.environ.setdefault("AE_MAX_TOKENS", "8192")
    only = {s.strip() for s in args.steps.split(",") if s.strip()} or None
    print(table(survey(args.page, args.model, args.timeout, only)))


if __name__ == "__main__":
    main()
