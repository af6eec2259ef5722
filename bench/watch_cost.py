"""Does watching a job slow it down? The same Training-lab job, watched and not watched.

Starts ``streamlit run app.py`` and headless Chromium (Debian's, as the browser tests do),
opens the Training lab and presses Start with the page's defaults (the quick MNIST KD demo
and its plain twin). "Watched": the tab stays on the Training lab until the page says Done,
so the sidebar's job monitor and the job panel's progress and curves refresh all along.
"Not watched": the tab is closed right after Start and the bench waits on the run store.
The job's time is read from its runs' status files (first run created → last run ended),
so both conditions are timed the same way. Conditions alternate, several repeats each.
Target (issue 15): watched ≤ 1.2 × not watched.

    KDVIZ_DATA=../shared/data .venv/bin/python bench/watch_cost.py [--repeats 3] [--epochs 3]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.browser import CHROMIUM, CHROMIUM_ARGS, AppServer, new_tab, wait_for_run  # noqa: E402


def job_seconds(runs: Path, before: set[str]) -> float | None:
    """Wall time of the job whose runs appeared after ``before``: None while any still runs."""
    new = [p for p in runs.iterdir() if p.is_dir() and p.name not in before]
    if not new:
        return None
    statuses = [json.loads((p / "status.json").read_text()) for p in new if (p / "status.json").exists()]
    if len(statuses) < len(new) or any(s["status"] in ("running", "starting") for s in statuses):
        return None
    created = min((p / "config.json").stat().st_mtime for p in new)
    return max(s["time"] for s in statuses) - created


def one_job(server: AppServer, browser, runs: Path, watched: bool, epochs: int) -> float:
    from playwright.sync_api import expect
    before = {p.name for p in runs.iterdir()}
    ctx = new_tab(browser)
    page = ctx.new_page()
    page.goto(f"{server.url}/train")
    wait_for_run(page)
    field = page.locator(".st-key-epochs_mnist input")
    field.fill(str(epochs))
    field.press("Enter")
    wait_for_run(page)
    page.locator(".st-key-train_start button").click()
    expect(page.get_by_test_id("stSidebar").get_by_test_id("stProgress")).to_have_count(1, timeout=60000)
    if not watched:
        ctx.close()
    deadline = time.time() + 1800
    while (seconds := job_seconds(runs, before)) is None:
        assert time.time() < deadline, "the job did not end"
        time.sleep(1)
    if watched:
        expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("Done in", timeout=60000)
        ctx.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the demo job (the page's default is 3)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright
    runs = Path(tempfile.mkdtemp(prefix="kdviz-watch-"))
    server = AppServer({"KDVIZ_RUNS": str(runs)})
    times = {True: [], False: []}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for i in range(args.repeats):
                for watched in (False, True) if i % 2 == 0 else (True, False):
                    times[watched].append(one_job(server, browser, runs, watched, args.epochs))
                    print(f"repeat {i + 1}: {'watched' if watched else 'not watched'} {times[watched][-1]:.1f} s",
                          flush=True)
            browser.close()
    finally:
        server.close()
    quiet, seen = statistics.median(times[False]), statistics.median(times[True])
    print(f"\nTraining-lab default demo ({args.epochs} epochs), {args.repeats} repeats each, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| condition | job times (s) | median (s) |\n|---|---|---|")
    for watched, label in ((False, "no tab open"), (True, "Training lab open, watching")):
        print(f"| {label} | {', '.join(f'{t:.1f}' for t in times[watched])} | "
              f"{statistics.median(times[watched]):.1f} |")
    print(f"\nwatched / not watched = {seen / quiet:.2f} (target ≤ 1.2)")


if __name__ == "__main__":
    main()
