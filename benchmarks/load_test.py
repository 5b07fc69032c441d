"""Load test: N concurrent visitors in real Chromium against one local server, for a fixed time.

Starts ``streamlit run app.py`` on 127.0.0.1 (a free port in 8620-8630 unless ``--port``), opens one browser with
N contexts (N independent sessions) and lets each visitor loop until the time is up:

    type a new sentence into the sidebar (Ctrl+Enter)  -> wait for Home's first look   "text"
    open "Attention heads"                             -> wait for the heatmaps        "page"
    step the head selector                             -> wait for the heatmaps        "head"
    open "Generation", click "Greedy" (when present)   -> wait for the step            "page", "generate"
    back to "Home"                                     -> wait for its first look      "page"

Every sentence is different, so each trace is a cache miss (the worst case). "Latency" is from the action to the
app having finished its rerun with the result drawn (script state back to notRunning, no skeletons, the expected
element present). Errors are exception boxes (stException), st.error alerts, and actions over ``--timeout``.
Server memory is the peak RSS of the server process and its children, sampled every 0.25 s.

    .venv/bin/python benchmarks/load_test.py --sessions 1 5 10 --seconds 60
    .venv/bin/python benchmarks/load_test.py --sessions 1 5 --seconds 90 --home-tokens 900

``--home-tokens N``: each visitor only types new N-token texts and waits for Home's first look (its figures drawn):
"home"; one plain forward of SmolLM2 over N tokens is timed in a separate process just before and just after each
run, so the latencies can be read as multiples of a forward measured the same minute.
    .venv/bin/python benchmarks/load_test.py --sessions 5 --seconds 30 --markdown load_test_run.md

The server is always stopped at the end (also on Ctrl+C or a crash).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PORTS = range(8620, 8631)

IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
HOME_DRAWN = "[data-testid='stMain'] .js-plotly-plot"  # Home's first look: the telling head's figures
SUBJECTS = ["The cat", "A tired engineer", "My grandmother", "The small robot", "A river", "The committee",
            "An old violin", "The new student", "A quiet village", "The hungry fox", "Every morning the baker"]
VERBS = ["watched", "remembered", "carried", "painted", "questioned", "followed", "repaired", "explained"]
OBJECTS = ["the bright red kite", "a letter from Paris", "the broken clock", "seven blue stones", "the last train",
           "an unfinished song", "the map of the city", "a box of old photographs"]



def long_text(session: int, round_: int, tokens: int) -> str:
    """A different text of about ``tokens`` SmolLM2 tokens (≈ 25 a sentence: 40 sentences made 1,014) for every
    (session, round)."""
    return " ".join(sentence(session * 1000 + round_, i) for i in range(max(1, tokens // 25)))


def sentence(session: int, round_: int) -> str:
    """A different, ordinary sentence for every (session, round)."""
    k = session * 7919 + round_ * 104729
    return (f"{SUBJECTS[k % len(SUBJECTS)]} {VERBS[(k // 3) % len(VERBS)]} {OBJECTS[(k // 7) % len(OBJECTS)]} "
            f"on day {round_ + 1} of visit {session + 1}, and nobody said a word about it.")


# ---- the server ---------------------------------------------------------------------------------------------------
def free_port(preferred: int | None) -> int:
    for port in ([preferred] if preferred else PORTS):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a run's TIME_WAIT is free
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


class Server:
    """``streamlit run app.py`` on 127.0.0.1 with an RSS sampler; a context manager that always stops it."""

    def __init__(self, port: int, env: dict[str, str]):
        self.port, self.env = port, env
        self.url = f"http://127.0.0.1:{port}"
        self.peak_rss = 0
        self._stop = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"attention_explorer_load_test_{port}.log"
        self.log = open(self.log_path, "w")

    def __enter__(self) -> "Server":
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with code {self.proc.returncode}")
                try:
                    if urllib.request.urlopen(self.url + "/_stcore/health", timeout=1).read() == b"ok":
                        break
                except OSError:
                    time.sleep(0.3)
            else:
                raise RuntimeError("the server did not answer /_stcore/health within 120 s")
            threading.Thread(target=self._sample, daemon=True).start()
        except BaseException:
            self.stop()
            raise
        return self

    def rss(self) -> int:
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_rss = max(self.peak_rss, self.rss())

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and anything it started
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- one visitor --------------------------------------------------------------------------------------------------
@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    exceptions: int = 0
    error_alerts: int = 0
    timeouts: int = 0
    other_failures: list[str] = field(default_factory=list)

    def add(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)


class Visitor:
    """One browser context = one Streamlit session, looping through the actions above."""

    def __init__(self, index: int, page, stats: Stats, timeout_s: float, home_tokens: int | None = None):
        self.index, self.page, self.stats, self.timeout_s = index, page, stats, timeout_s
        self.home_tokens = home_tokens
        self.timeout_ms = timeout_s * 1000
        self.round = 0
        self.runs_finished = 0  # completed script runs, counted from the server's messages on the websocket
        page.on("websocket", lambda ws: ws.on("framereceived", self._on_frame))

    def _on_frame(self, payload) -> None:
        # Every script run ends with a ForwardMsg "script_finished"; runs cut short by a newer rerun do not count.
        if isinstance(payload, (bytes, bytearray)):
            msg = ForwardMsg.FromString(bytes(payload))
            if msg.WhichOneof("type") == "script_finished" and msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                self.runs_finished += 1

    async def settle(self, runs_before: int, expect: str | None) -> None:
        """Wait for a script run after ``runs_before`` to finish, then for the page to be drawn (``expect``)."""
        pg = self.page
        deadline = time.monotonic() + self.timeout_s
        while self.runs_finished <= runs_before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no script run finished within {self.timeout_s:.0f} s")
            await asyncio.sleep(0.02)
        await pg.wait_for_selector(IDLE, timeout=self.timeout_ms)
        await pg.wait_for_function("!document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=self.timeout_ms)
        if expect:
            await pg.wait_for_selector(expect, timeout=self.timeout_ms, state="visible")

    async def act(self, kind: str, action, expect: str | None) -> None:
        """Do ``action`` (each one reruns the script), time it to a drawn page, and count what went wrong."""
        pg = self.page
        runs = self.runs_finished
        t0 = time.perf_counter()
        try:
            await action()
            await self.settle(runs, expect)
        except Exception as exc:  # noqa: BLE001
            if "Timeout" in type(exc).__name__:
                self.stats.timeouts += 1
                print(f"  ! visitor {self.index}, {kind}: {str(exc).splitlines()[0][:160]}", flush=True)
            else:
                self.stats.other_failures.append(f"{kind}: {type(exc).__name__}: {str(exc)[:120]}")
            return
        self.stats.add(kind, time.perf_counter() - t0)
        self.stats.exceptions += await pg.locator("[data-testid='stException']").count()
        self.stats.error_alerts += await pg.locator("[data-testid='stAlertContentError']").count()

    async def goto(self, title: str, expect: str | None) -> bool:
        link = self.page.locator("[data-testid='stSidebarNav'] a", has_text=title).first
        if await link.count() == 0:
            return False
        await self.act("page", link.click, expect)
        return True

    async def type_text(self, expect: str | None) -> None:
        box = self.page.locator("[data-testid='stSidebar'] textarea").first

        text = (long_text(self.index, self.round, self.home_tokens) if self.home_tokens
                else sentence(self.index, self.round))

        async def type_and_apply():
            await box.fill(text)
            await box.press("Control+Enter")

        self.round += 1
        await self.act("home" if self.home_tokens else "text", type_and_apply, expect)

    async def step_head(self) -> None:
        main = self.page.locator("[data-testid='stMain']")
        head = main.locator("[data-testid='stNumberInput']", has_text="Head").first
        if await head.count() == 0:
            return
        step = head.locator("[data-testid='stNumberInputStepUp']")
        if not await step.is_enabled():  # at the last head: step back down instead of waiting on a disabled button
            step = head.locator("[data-testid='stNumberInputStepDown']")
        await self.act("head", step.click, ".js-plotly-plot")

    async def step_generation(self) -> None:
        button = self.page.get_by_role("button", name="Greedy").first
        if await button.count() == 0 or not await button.is_enabled():
            return
        await self.act("generate", button.click, None)

    async def open(self, url: str) -> None:
        """The first visit (the first one also loads the model into the server): timed apart from the loop."""
        pg = self.page
        pg.set_default_timeout(self.timeout_ms)
        t0 = time.perf_counter()
        await pg.goto(url)
        await self.settle(0, None)
        await pg.wait_for_selector("[data-testid='stSidebar'] textarea", timeout=self.timeout_ms)
        self.stats.add("first load", time.perf_counter() - t0)

    async def run(self, deadline: float) -> None:
        if self.home_tokens:  # Home's first look only
            while time.monotonic() < deadline:
                await self.type_text(HOME_DRAWN)
            return
        while time.monotonic() < deadline:
            await self.type_text(HOME_DRAWN)
            if time.monotonic() >= deadline:
                break
            if await self.goto("Attention heads", ".js-plotly-plot"):
                await self.step_head()
            if time.monotonic() >= deadline:
                break
            if await self.goto("Generation", None):
                await self.step_generation()
            await self.goto("Home", HOME_DRAWN)


async def drive(url: str, sessions: int, seconds: float, timeout_s: float, shots: Path | None,
                home_tokens: int | None = None) -> list[Stats]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            contexts = [await browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(sessions)]
            stats = [Stats() for _ in range(sessions)]
            visitors = [Visitor(i, await ctx.new_page(), stats[i], timeout_s, home_tokens)
                        for i, ctx in enumerate(contexts)]
            opened = await asyncio.gather(*(v.open(url) for v in visitors), return_exceptions=True)
            deadline = time.monotonic() + seconds  # the timed window starts once every visitor is in
            looping = [v.run(deadline) for v, o in zip(visitors, opened) if not isinstance(o, BaseException)]
            ran = iter(await asyncio.gather(*looping, return_exceptions=True))
            results = [o if isinstance(o, BaseException) else next(ran) for o in opened]
            if shots is not None:  # what each visitor saw last, to check the run by eye
                shots.mkdir(parents=True, exist_ok=True)
                for v in visitors:
                    await v.page.screenshot(path=str(shots / f"n{sessions}-visitor{v.index}.png"))
            for s, result in zip(stats, results):
                if isinstance(result, BaseException):
                    s.other_failures.append(f"session aborted: {type(result).__name__}: {str(result)[:120]}")
                    if "Timeout" in type(result).__name__:
                        s.timeouts += 1
            return stats
        finally:
            await browser.close()


# ---- report -------------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class RunResult:
    sessions: int
    stats: list[Stats]
    peak_rss: int
    idle_rss: int
    load_avg: float
    forward_s: tuple[float, float] | None = None  # one plain forward over --home-tokens, just before and after

    def merged(self, kind: str | None = None) -> list[float]:
        out = []
        for s in self.stats:
            for k, values in s.latencies.items():
                if (kind is None and k != "first load") or k == kind:
                    out.extend(values)
        return out


def forward_seconds(tokens: int, env: dict[str, str]) -> float:
    """The median of three plain SmolLM2 forwards over ``tokens`` tokens, in a fresh process (the server's env)."""
    code = ("import sys, torch; sys.path.insert(0, 'benchmarks'); import explorer; "
            "from _common import median_time, text_of_tokens; m = explorer.load('smollm2', device='cpu'); "
            f"ids = torch.tensor([text_of_tokens(m, {tokens}).token_ids]); "
            "f = lambda: m.base(input_ids=ids, use_cache=False); "
            "torch.inference_mode().__enter__(); print(median_time(f, repeats=3))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def table(results: list[RunResult]) -> str:
    if any(r.forward_s for r in results):
        return home_table(results)
    kinds = ["text", "page", "head", "generate"]
    head = ("| sessions | actions | errors (exc / st.error / timeout / other) | p50 all | p95 all | "
            + " | ".join(f"p50 / p95 {k}" for k in kinds)
            + " | first load p50 | server RSS idle → peak | load avg |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        exc = sum(s.exceptions for s in r.stats)
        alerts = sum(s.error_alerts for s in r.stats)
        timeouts = sum(s.timeouts for s in r.stats)
        other = sum(len(s.other_failures) for s in r.stats)
        allv = r.merged()
        per_kind = []
        for k in kinds:
            v = r.merged(k)
            per_kind.append(f"{percentile(v, 50):.2f} / {percentile(v, 95):.2f} s (n={len(v)})" if v else "–")
        first = r.merged("first load")
        lines.append(
            f"| {r.sessions} | {len(allv)} | {exc} / {alerts} / {timeouts} / {other} | {percentile(allv, 50):.2f} s | "
            f"{percentile(allv, 95):.2f} s | " + " | ".join(per_kind)
            + f" | {percentile(first, 50):.1f} s | {r.idle_rss / 2**20:.0f} → {r.peak_rss / 2**20:.0f} MiB "
            f"| {r.load_avg:.1f} |"
        )
    return "\n".join(lines)


def home_table(results: list[RunResult]) -> str:
    """--home-tokens runs: Home's first look after typing a new long text, in seconds and in forwards."""
    lines = ["| sessions | texts | errors (exc / st.error / timeout / other) | p50 home | p95 home | forward (before, "
             "after) | p50 / p95 in forwards | server RSS idle → peak | load avg |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        v = r.merged("home")
        fwd = statistics.mean(r.forward_s)
        errors = (f"{sum(s.exceptions for s in r.stats)} / {sum(s.error_alerts for s in r.stats)} / "
                  f"{sum(s.timeouts for s in r.stats)} / {sum(len(s.other_failures) for s in r.stats)}")
        lines.append(f"| {r.sessions} | {len(v)} | {errors} | {percentile(v, 50):.2f} s | {percentile(v, 95):.2f} s | "
                     f"{r.forward_s[0]:.2f}, {r.forward_s[1]:.2f} s | {percentile(v, 50) / fwd:.1f}× / "
                     f"{percentile(v, 95) / fwd:.1f}× | {r.idle_rss / 2**20:.0f} → {r.peak_rss / 2**20:.0f} MiB "
                     f"| {r.load_avg:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 5, 10], help="concurrent visitors, per run")
    parser.add_argument("--seconds", type=float, default=60, help="how long each run drives the app")
    parser.add_argument("--timeout", type=float, default=120, help="seconds before one action counts as timed out")
    parser.add_argument("--port", type=int, default=None, help="default: a free port in 8620-8630")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--screenshots", type=Path, default=None, help="save each visitor's last view here")
    parser.add_argument("--home-tokens", type=int, default=None, metavar="N",
                        help="only type new N-token texts and time Home's first look (with a forward's time)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the server (e.g. AE_MAX_TOKENS=256)")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit("Chromium is needed (apt-get install chromium)")

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(kv.split("=", 1) for kv in args.env)
    results = []
    for n in args.sessions:
        port = free_port(args.port)
        with Server(port, env) as server:  # a fresh server per run: cold caches, comparable memory
            idle = server.rss()
            print(f"N={n}: server on {server.url} (idle RSS {idle / 2**20:.0f} MiB, log {server.log_path}), "
                  f"driving for {args.seconds:.0f} s…", flush=True)
            before = forward_seconds(args.home_tokens, env) if args.home_tokens else None
            stats = asyncio.run(drive(server.url, n, args.seconds, args.timeout, args.screenshots, args.home_tokens))
            load = os.getloadavg()[0]
            after = forward_seconds(args.home_tokens, env) if args.home_tokens else None
            results.append(RunResult(n, stats, server.peak_rss, idle, load,
                                     (before, after) if args.home_tokens else None))
        for s in stats:
            for failure in s.other_failures[:3]:
                print("  !", failure)
    report = table(results)
    print()
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")


if __name__ == "__main__":
    main()
