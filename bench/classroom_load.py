"""A class of 30 on one laptop: viewers exploring and following while the presenter's KD job trains (issue 21).

Starts ``streamlit run app.py`` on a loopback port (classroom mode on, a fixed presenter
token, no presenter by loopback, so the bench's sessions are viewers) and connects
lightweight websocket clients that speak Streamlit's protocol (``streamlit.proto``
BackMsg/ForwardMsg) as a browser tab does: they send reruns with widget states, keep every
fragment's ``run_every`` timer (the sidebar's job monitor, follow-the-lecturer's poll) and
read every ForwardMsg. No browser draws anything: the times are the server's answer as it
reaches the client, not a repaint.

1. Warm-up: the presenter opens Temperature (every T once), Dark knowledge and the Training lab.
2. Alone: the presenter starts the Training lab's default MNIST job (KD student + plain twin)
   with nobody else connected; its time is the baseline.
3. Class: 30 viewers connect: ``--movers`` move the Temperature page's T slider (random T, a
   pause of 0.5-1.5 s between moves), ``--switchers`` switch between pages, ``--followers``
   follow the lecturer, the rest sit on a page. The presenter starts the same job again, then
   moves T on the Temperature page every 5 s (the followers' pages follow).
4. Leave: the viewers disconnect; after Streamlit's ``server.disconnectedSessionTTL`` the
   server's memory is measured again.

Reported: p50/p95 time from a slider move to the redrawn chart (and from a page switch to
the page finished, and from the lecturer's move to each follower's chart at the new T), the
server's RSS (and its worker processes'), the job's slowdown against the job alone,
exceptions seen by any session (and tracebacks in the server's log), lost runs, the load
average (the machine may be shared) and the bench's own CPU time (it runs on the same cores).
Bounded: loopback only, at most 60 viewers, each job given up after ``--max-minutes``.
Targets on a 2-core machine: p95 slider ≤ 1.5 s, RSS ≤ 3 GB, slowdown ≤ 2x, 0 exceptions, 0 lost runs.

    KDVIZ_DATA=../shared/data .venv/bin/python bench/classroom_load.py [--viewers 30] [--movers 6] \
        [--switchers 4] [--followers 10] [--epochs 3] [--images 10000] [--ttl 120] [--max-minutes 20]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from kdviz import analysis  # noqa: E402
from tests.browser import free_port  # noqa: E402

TOKEN = "classroom-load-bench"
PAGES = ["temperature", "dark_knowledge", "hinton", "train", ""]


class Session:
    """One browser tab, as far as the server can tell."""

    def __init__(self, url: str, name: str, query: str = ""):
        self.url, self.name, self.query = url, name, query
        self.widgets: dict[str, tuple[str, str]] = {}  # user key -> (widget id, fragment id)
        self.states: dict[str, WidgetState] = {}  # widget id -> the value this tab holds
        self.pages: dict[str, str] = {}  # url path -> page script hash
        self.page_hash = ""
        self.timers: dict[str, asyncio.Task] = {}
        self.exceptions: list[str] = []
        self.refusals: list[str] = []
        self.runs_finished = {"": 0, "fragment": 0}  # full and fragment runs that ended well
        self.changed = asyncio.Condition()
        self.t_charts: list[tuple[float, float | None]] = []  # (when, T) of each Temperature student chart received
        self.closed = False

    async def open(self) -> None:
        host = self.url.split("//", 1)[1]
        self.ws = await websockets.connect(f"ws://{host}/_stcore/stream", subprotocols=["streamlit"],
                                           max_size=None, ping_interval=None)
        self.reader = asyncio.create_task(self._read())
        await self.rerun_and_wait()

    async def close(self) -> None:
        self.closed = True
        for task in self.timers.values():
            task.cancel()
        await self.ws.close()
        self.reader.cancel()

    # ------------------------------------------------------------ sending
    async def rerun(self, fragment_id: str = "", auto: bool = False, trigger: WidgetState | None = None) -> None:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string, state.page_script_hash = self.query, self.page_hash
        state.fragment_id, state.is_auto_rerun = fragment_id, auto
        state.widget_states.widgets.extend([*self.states.values(), *([trigger] if trigger else [])])
        await self.ws.send(msg.SerializeToString())

    async def rerun_and_wait(self, timeout: float = 120, fragment_id: str = "", **kwargs) -> float:
        """Rerun the page (or a fragment) and wait until a run of that kind has ended after it."""
        kind = "fragment" if fragment_id else ""
        seen = self.runs_finished[kind]
        t0 = time.perf_counter()
        await self.rerun(fragment_id=fragment_id, **kwargs)
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.runs_finished[kind] > seen), timeout)
        return time.perf_counter() - t0

    async def goto(self, url_path: str) -> float:
        self.page_hash, self.states = self.pages[url_path], {}
        return await self.rerun_and_wait()

    def widget(self, key: str) -> tuple[str, str]:
        return self.widgets[key]

    async def set(self, key: str, wait: bool = True, **value) -> None:
        """Change a widget (e.g. ``int_value=3``) and rerun its fragment (or the page)."""
        wid, fragment = self.widget(key)
        state = WidgetState(id=wid, **value)
        self.states[wid] = state
        await (self.rerun_and_wait(fragment_id=fragment) if wait else self.rerun(fragment_id=fragment))

    async def click(self, key: str) -> float:
        wid, fragment = self.widget(key)
        return await self.rerun_and_wait(fragment_id=fragment, trigger=WidgetState(id=wid, trigger_value=True))

    async def shows_t(self, T: float, since: float, timeout: float = 60) -> float:
        """When this tab first received, after ``since``, the Temperature page's student chart at ``T``."""
        def arrived():
            return next((when for when, shown in self.t_charts if when > since and shown == T), None)
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(arrived), timeout)
        return arrived()

    async def move_t(self, T: float, timeout: float = 60) -> float:
        """Move the Temperature page's T slider; seconds until the redrawn chart at that T arrives."""
        wid, fragment = self.widget("temperature_T")
        self.states[wid] = WidgetState(id=wid, string_array_value={"data": [f"{T:g}"]})
        t0 = time.perf_counter()
        await self.rerun(fragment_id=fragment)
        return await self.shows_t(T, t0, timeout) - t0

    async def _auto(self, fragment_id: str, interval: float) -> None:
        while not self.closed:
            await asyncio.sleep(interval)
            await self.rerun(fragment_id=fragment_id, auto=True)

    # ------------------------------------------------------------ receiving
    async def _read(self) -> None:
        async for data in self.ws:
            msg = ForwardMsg()
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if kind == "new_session" and not msg.metadata.run.fragment_ids:
                # A full run starts (a fragment's run starts one too): its fragments register their timers again.
                for task in self.timers.values():
                    task.cancel()
                self.timers = {}
            elif kind == "navigation":
                self.pages = {p.url_pathname: p.page_script_hash for p in msg.navigation.app_pages}
                self.page_hash = msg.navigation.page_script_hash
            elif kind == "auto_rerun":
                fid = msg.auto_rerun.fragment_id
                if fid not in self.timers:
                    self.timers[fid] = asyncio.create_task(self._auto(fid, msg.auto_rerun.interval))
            elif kind == "stop_auto_rerun":
                for fid in msg.stop_auto_rerun.fragment_ids:
                    if fid in self.timers:
                        self.timers.pop(fid).cancel()
            elif kind == "script_finished":
                done = {ForwardMsg.FINISHED_SUCCESSFULLY: "", ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY: "fragment"}
                if msg.script_finished in done:
                    async with self.changed:
                        self.runs_finished[done[msg.script_finished]] += 1
                        self.changed.notify_all()
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                if self._element(msg.delta.new_element, msg.delta.fragment_id):
                    async with self.changed:
                        self.changed.notify_all()

    def _element(self, element, fragment_id: str) -> bool:
        """Note what the bench measures; True for a Temperature student chart."""
        kind = element.WhichOneof("type")
        if kind == "exception":
            self.exceptions.append(f"{element.exception.type}: {element.exception.message}")
            return False
        if kind == "alert" and "Only the lecturer" in element.alert.body:
            self.refusals.append(element.alert.body)
        proto = getattr(element, kind)
        wid = getattr(proto, "id", "")
        if wid.startswith("$$ID-") and wid.count("-") >= 2:
            self.widgets[wid.split("-", 2)[2]] = (wid, fragment_id)
        if kind == "plotly_chart" and wid.endswith("-temperature_student_bars"):
            shown = re.search(r'at T = ([\d.e+-]+)"', proto.spec)
            self.t_charts.append((time.perf_counter(), float(shown.group(1)) if shown else None))
            return True
        return False


# ---------------------------------------------------------------- the server and what it does

class Server:
    def __init__(self, runs: Path, ttl: int, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "KDVIZ_RUNS": str(runs), "KDVIZ_PRESENTER_TOKEN": TOKEN,
               "KDVIZ_LOOPBACK_PRESENTER": "0", "KDVIZ_CLASSROOM": "1"}
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.disconnectedSessionTTL", str(ttl)], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    self.ps = psutil.Process(self.proc.pid)
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"streamlit did not start; see {log}")

    def rss(self) -> tuple[float, float]:
        """(server, its worker processes) resident memory in MB."""
        children = sum(c.memory_info().rss for c in self.ps.children(recursive=True) if c.is_running())
        return self.ps.memory_info().rss / 2**20, children / 2**20

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Sampler(threading.Thread):
    """RSS and load average once a second while a phase lasts."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.rows, self.stop = server, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.rows.append((*self.server.rss(), os.getloadavg()[0]))
            except psutil.Error:
                pass

    def summary(self) -> dict:
        self.stop.set()
        self.join()
        return {"server_rss_peak_mb": max(r[0] for r in self.rows), "workers_rss_peak_mb": max(r[1] for r in self.rows),
                "load_avg_mean": statistics.mean(r[2] for r in self.rows), "load_avg_max": max(r[2] for r in self.rows)}


def job_runs(runs: Path, before: set[str]) -> list[dict]:
    out = []
    for p in runs.iterdir():
        if p.is_dir() and p.name not in before and (p / "status.json").exists():
            out.append({"id": p.name, **json.loads((p / "status.json").read_text()),
                        "created": (p / "config.json").stat().st_mtime})
    return out


async def start_job(presenter: Session, runs: Path, epochs: int, images: int) -> set[str]:
    before = {p.name for p in runs.iterdir()}
    await presenter.goto("train")
    await presenter.set("epochs_mnist", int_value=epochs)
    await presenter.set("subset_mnist", int_value=images)
    await presenter.click("train_start")
    return before


async def wait_job(runs: Path, before: set[str], limit_s: float) -> tuple[float, list[dict]]:
    """The job's wall time (first run created to last run ended) once its two runs ended."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        new = job_runs(runs, before)
        if len(new) == 2 and all(r["status"] not in ("running", "starting") for r in new):
            return max(r["time"] for r in new) - min(r["created"] for r in new), new
        await asyncio.sleep(1.0)
    raise TimeoutError("the job did not end in time")


async def mover(s: Session, stop: asyncio.Event, times: list, timeouts: list) -> None:
    await s.goto("temperature")
    current = 1.0
    while not stop.is_set():
        T = random.choice([t for t in analysis.TEMPERATURES if t != current])
        try:
            times.append(await s.move_t(T))
            current = T
        except asyncio.TimeoutError:
            timeouts.append(T)
        await asyncio.sleep(random.uniform(0.5, 1.5))


async def switcher(s: Session, stop: asyncio.Event, times: list) -> None:
    while not stop.is_set():
        times.append(await s.goto(random.choice([p for p in PAGES[:3] if s.pages.get(p) != s.page_hash])))
        await asyncio.sleep(random.uniform(1.0, 3.0))


async def lecturer(s: Session, followers: list[Session], stop: asyncio.Event, follow: list, missed: list) -> None:
    """Move T every 5 s on the Temperature page; how long each follower takes to show the new T."""
    await s.goto("temperature")
    current = 1.0
    while not stop.is_set():
        T = random.choice([t for t in analysis.TEMPERATURES if t != current])
        t0 = time.perf_counter()
        await s.move_t(T)
        current = T
        for f in followers:
            try:
                follow.append(await f.shows_t(T, t0, max(0.1, t0 + 10 - time.perf_counter())) - t0)
            except asyncio.TimeoutError:
                missed.append(f.name)
        await asyncio.sleep(max(0.0, t0 + 5 - time.perf_counter()))


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else float("nan"))


async def main(args) -> dict:
    runs = Path(tempfile.mkdtemp(prefix="kdviz-load-")) / "runs"
    runs.mkdir()
    server = Server(runs, args.ttl, runs.parent / "streamlit.log")
    me = psutil.Process()
    result = {"viewers": args.viewers, "movers": args.movers, "switchers": args.switchers, "followers": args.followers}
    try:
        presenter = Session(server.url, "presenter", f"presenter={TOKEN}")
        await presenter.open()
        await presenter.goto("temperature")
        for T in analysis.TEMPERATURES:  # warm: every T once, as the class will ask for them
            await presenter.move_t(T)
        await presenter.goto("dark_knowledge")
        cpu0 = me.cpu_times()
        result["rss_before_mb"] = server.rss()[0]

        sampler = Sampler(server)
        sampler.start()
        before = await start_job(presenter, runs, args.epochs, args.images)
        result["job_alone_s"], alone_runs = await wait_job(runs, before, args.max_minutes * 60)
        result["alone"] = sampler.summary()
        await presenter.goto("dark_knowledge")
        await asyncio.sleep(5)
        result["rss_idle_after_job_mb"] = server.rss()[0]

        viewers = [Session(server.url, f"viewer{i}") for i in range(args.viewers)]
        for v in viewers:
            await v.open()
        followers = viewers[args.movers + args.switchers:args.movers + args.switchers + args.followers]
        for f in followers:
            await f.set("classroom_follow", bool_value=True)
        for i, v in enumerate(viewers[args.movers + args.switchers + args.followers:]):
            await v.goto(PAGES[i % len(PAGES)])
        result["rss_connected_mb"] = server.rss()[0]

        sampler, stop = Sampler(server), asyncio.Event()
        sampler.start()
        slider, switches, timeouts, follow, missed = [], [], [], [], []
        before = await start_job(presenter, runs, args.epochs, args.images)
        tasks = [asyncio.create_task(mover(v, stop, slider, timeouts)) for v in viewers[:args.movers]]
        tasks += [asyncio.create_task(switcher(v, stop, switches))
                  for v in viewers[args.movers:args.movers + args.switchers]]
        tasks.append(asyncio.create_task(lecturer(presenter, followers, stop, follow, missed)))
        try:
            result["job_with_class_s"], class_runs = await wait_job(runs, before, args.max_minutes * 60)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        result["class"] = sampler.summary()
        result["following"] = sum(bool(f.page_hash == presenter.page_hash) for f in followers)
        result.update(slider_moves=len(slider), slider_timeouts=len(timeouts), slider_p50_s=pct(slider, 50),
                      slider_p95_s=pct(slider, 95), slider_max_s=max(slider, default=float("nan")),
                      page_switches=len(switches), switch_p50_s=pct(switches, 50), switch_p95_s=pct(switches, 95),
                      follow_updates=len(follow), follow_missed=len(missed), follow_p50_s=pct(follow, 50),
                      follow_p95_s=pct(follow, 95))
        everyone = [presenter, *viewers]
        result["exceptions"] = sorted({e for s in everyone for e in s.exceptions})
        result["bench_client_errors"] = [f"{s.name}: {s.reader.exception()!r}" for s in everyone  # a tab that stopped reading
                                         if s.reader.done() and not s.reader.cancelled() and s.reader.exception()]
        result["refusals_seen"] = sum(len(s.refusals) for s in everyone)
        result["lost_runs"] = [r["id"] for r in alone_runs + class_runs if r["status"] != "done"]
        result["job_slowdown"] = result["job_with_class_s"] / result["job_alone_s"]

        for v in viewers:
            await v.close()
        await asyncio.sleep(args.ttl + 15)  # Streamlit keeps a closed tab's session this long for a reconnect
        result["rss_after_leave_mb"] = server.rss()[0]
        result["rss_after_vs_before"] = result["rss_after_leave_mb"] / result["rss_idle_after_job_mb"]
        cpu1 = me.cpu_times()
        result["bench_cpu_s"] = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        await presenter.close()
    finally:
        server.close()
    result["server_tracebacks"] = (runs.parent / "streamlit.log").read_text().count("Traceback")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=30)
    parser.add_argument("--movers", type=int, default=6, help="viewers moving the T slider")
    parser.add_argument("--switchers", type=int, default=4, help="viewers switching pages")
    parser.add_argument("--followers", type=int, default=10, help="viewers following the lecturer")
    parser.add_argument("--epochs", type=int, default=3, help="of the Training lab's default MNIST job")
    parser.add_argument("--images", type=int, default=10000, help="its training images (the lab's default)")
    parser.add_argument("--ttl", type=int, default=120, help="server.disconnectedSessionTTL (Streamlit's default)")
    parser.add_argument("--max-minutes", type=float, default=20, help="give up on a job after this long")
    args = parser.parse_args()
    if not 0 < args.viewers <= 60 or args.movers + args.switchers + args.followers > args.viewers:
        parser.error("1 to 60 viewers, at least as many as movers + switchers + followers")
    print(json.dumps(asyncio.run(main(args)), indent=1))
