"""Cancel on rerun, in Chromium: does a stale computation stop when the user moves on, or keep the server's CPU busy?

Starts ``streamlit run app.py`` on 127.0.0.1 (``--port``, default 8651) with ``AE_MAX_TOKENS`` raised, opens one
headless Chromium session, and then:

1. types a long text (``--tokens``, default 6,000 SmolLM2 tokens: a forward of tens of seconds here) and applies it;
2. ``--switch-after`` seconds into that trace, opens "Attention heads" (a rerun, mid-trace);
3. a second later types a short new text and applies it; waits for the page to be idle;
4. samples the server's CPU (psutil, the server and its children) every 0.5 s throughout, and for ``--tail``
   seconds after the page went idle.

If the abandoned trace kept running, the server's CPU would stay near 100 % per thread for the rest of that forward
after the page is idle; if it was cancelled, it falls to ~0 within a second or so of the short text's run.

    .venv/bin/python benchmarks/cancel_check.py [--port 8651] [--tokens 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, os.path.dirname(__file__))
from load_test import CHROMIUM, CHROMIUM_ARGS, IDLE, ROOT, Server, long_text  # noqa: E402


def cpu_sampler(pid: int, samples: list, stop: threading.Event, t0: float) -> None:
    root = psutil.Process(pid)
    procs = {}
    while not stop.wait(0.5):
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            proc = procs.setdefault(p.pid, p)
            try:
                total += proc.cpu_percent(None)
            except psutil.NoSuchProcess:
                pass
        samples.append((time.monotonic() - t0, total))


async def drive(url: str, tokens: int, switch_after: float, tail: float, marks: dict, t0: float,
                shot: str | None = None) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            page.set_default_timeout(300_000)
            await page.goto(url)
            await page.wait_for_selector(IDLE)
            await page.wait_for_selector("[data-testid='stSidebar'] textarea")
            marks["first page idle"] = time.monotonic() - t0
            box = page.locator("[data-testid='stSidebar'] textarea").first
            await box.fill(long_text(0, 0, tokens))
            marks["long text applied"] = time.monotonic() - t0
            await box.press("Control+Enter")
            await asyncio.sleep(switch_after)
            marks["switched page"] = time.monotonic() - t0
            await page.locator("[data-testid='stSidebarNav'] a", has_text="Attention heads").first.click()
            await asyncio.sleep(1.0)
            box = page.locator("[data-testid='stSidebar'] textarea").first
            await box.fill("A short new text, typed while the long one was still being traced.")
            marks["short text applied"] = time.monotonic() - t0
            await box.press("Control+Enter")
            await asyncio.sleep(0.5)
            await page.wait_for_selector(IDLE)
            await page.wait_for_function("!document.querySelector('[data-testid=\"stSkeleton\"]')")
            marks["page idle"] = time.monotonic() - t0
            await asyncio.sleep(tail)
            marks["end"] = time.monotonic() - t0
            if shot:
                await page.screenshot(path=shot)
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8651)
    parser.add_argument("--tokens", type=int, default=6000)
    parser.add_argument("--switch-after", type=float, default=6.0)
    parser.add_argument("--tail", type=float, default=15.0)
    parser.add_argument("--screenshot", default=None, help="save the last view here (PNG)")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), AE_MAX_TOKENS=str(max(1024, args.tokens + 200)))
    samples: list = []
    marks: dict = {}
    with Server(args.port, env) as server:
        stop = threading.Event()
        t0 = time.monotonic()
        threading.Thread(target=cpu_sampler, args=(server.proc.pid, samples, stop, t0), daemon=True).start()
        try:
            asyncio.run(drive(server.url, args.tokens, args.switch_after, args.tail, marks, t0, args.screenshot))
        finally:
            stop.set()
    print(f"load average: {os.getloadavg()}")
    for name, at in marks.items():
        print(f"{at:7.1f} s  {name}")
    idle = marks.get("page idle", float("inf"))
    print("server CPU % (sum over threads; 100 = one core), every 0.5 s:")
    print(" ".join(f"{t:.1f}:{c:.0f}" for t, c in samples))
    after = [c for t, c in samples if t > idle + 1.0]
    if after:
        print(f"after the page went idle (+1 s): mean {sum(after) / len(after):.0f} %, max {max(after):.0f} % "
              f"over {len(after)} samples")


if __name__ == "__main__":
    main()
