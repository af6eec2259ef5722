"""Cold start: seconds from `streamlit run app.py` to the first page rendered in a browser.

The lecturer's first run: a fresh server process, no data folder, no network,
no runs of their own (only the shipped pretrained ones). Chromium is started
before the clock (a lecturer's browser is already open); the clock stops when
the home page's title is on screen and the script has finished running.

    .venv/bin/python bench/cold_start.py [--repeat 3] [--data DIR]

Needs Debian's /usr/bin/chromium and Playwright (as the browser tests do).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.browser import CHROMIUM, CHROMIUM_ARGS, AppServer, browser_available, wait_for_run  # noqa: E402

TARGET_S = 5.0


def cold_start(browser, env: dict) -> dict:
    """Seconds from the server's start until it answers /_stcore/health, until the
    home page's title is visible, and until the page's script has finished."""
    t0 = time.perf_counter()
    server = AppServer(env)
    times = {"healthy": time.perf_counter() - t0}
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.get_by_role("heading", level=1).first.wait_for(timeout=60000)
        times["title"] = time.perf_counter() - t0
        wait_for_run(page)
        times["rendered"] = time.perf_counter() - t0
        page.close()
    finally:
        server.close()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default=None, help="data folder (default: an empty one, as on a first run)")
    args = ap.parse_args()
    if not browser_available():
        print("needs /usr/bin/chromium and playwright (apt-get install -y chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        env = {"KDVIZ_DATA": args.data or str(Path(tmp, "data")), "KDVIZ_RUNS": str(Path(tmp, "runs")),
               "KDVIZ_OFFLINE": "1"}
        Path(env["KDVIZ_DATA"]).mkdir(exist_ok=True)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        times = []
        for i in range(args.repeat):
            t = cold_start(browser, env)
            times.append(t["rendered"])
            print(f"run {i + 1}: server healthy {t['healthy']:.2f} s, title visible {t['title']:.2f} s, "
                  f"first page rendered {t['rendered']:.2f} s", flush=True)
        browser.close()
    median = statistics.median(times)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; cold start (median of {len(times)}): {median:.2f} s "
          f"({'within' if median <= TARGET_S else 'OVER'} the {TARGET_S:g} s target)")
    return 0 if median <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
