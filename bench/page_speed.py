"""How long each page takes to render, cold and warm, and how long each interactive control takes.

Targets (issue 15, idle 2-core machine, shipped runs): a page's first render ≤ 5 s once the
server is warm, ≤ 1 s on a revisit; every control's result ≤ 0.5 s server side.

Each page is measured in a fresh process, as after a server start: the app shell (imports,
the home page) is run first ("warm server"), then the page's first render ("cold"), then a
rerun ("warm"). Each control is then moved three times (see CONTROLS) and the reruns after the
second and third moves are timed. Times are AppTest wall times: the script's run plus AppTest's own
small overhead.

    KDVIZ_DATA=../shared/data .venv/bin/python bench/page_speed.py [--pages temperature hinton]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# page -> controls to move: (label, widget kind, key, values). The control is moved to the first value
# (a warm-up of the code path), to the second (a value the page has not computed yet: "new") and back
# to the first (computed already: "back"). A key ending in "_" is a prefix (a student picker's key
# names its teacher run) and its values are option positions.
STUDENT = ("student change", "selectbox", "{}_student_", (1, 2))
CONTROLS = {
    "temperature": [("T slider", "select_slider", "temperature_T", (4.0, 10.0)),
                    ("image pick", "radio", "temperature_image", (1, 2)), STUDENT],
    "dark_knowledge": [("T slider", "select_slider", "dark_T", (4.0, 10.0)), STUDENT],
    "hinton": [("bias slider (omitted 3)", "slider", "hinton_shift_omit3", (3.5, 2.0)),
               ("bias slider (7 and 8)", "slider", "hinton_shift_only78", (-7.6, -5.0))],
    "hints": [("image pick", "number_input", "hints_image", (1, 2)), STUDENT],
    "attention": [("image pick", "number_input", "attention_image", (1, 2))],
    "fsp": [("image pick", "number_input", "fsp_image", (1, 2)), STUDENT],
    "sweep": [("measure", "radio", "sweep_metric", ("test errors", "test accuracy (%)"))],
}


def measure(page: str) -> dict:
    """Run in a fresh process: the shell, the page cold and warm, then its controls."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    t = time.time()
    at.run()
    out = {"page": page, "shell_s": time.time() - t}
    if page != "home":
        at.switch_page(f"pages/{page}.py")
        t = time.time()
        at.run()
        out["cold_s"] = time.time() - t
    t = time.time()
    at.run()
    out["warm_s"] = time.time() - t
    out["errors"] = [str(e.value)[:200] for e in at.exception]
    for label, kind, key, values in CONTROLS.get(page, []):
        key = key.format("dark" if page == "dark_knowledge" else page)

        def widget():
            if key.endswith("_"):
                return next(w for w in getattr(at, kind) if (w.key or "").startswith(key))
            return getattr(at, kind)(key=key)

        try:
            widget()
        except (KeyError, StopIteration):
            out.setdefault("missing", []).append(label)
            continue
        times = []
        for value in (*values, values[0]):
            w = widget()
            w.select_index(value) if key.endswith("_") else w.set_value(value)
            t = time.time()
            at.run()
            times.append(time.time() - t)
        out[label] = {"new": times[1], "back": times[2]}
    return out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(measure(sys.argv[2])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    pages = ["home", "map", "temperature", "dark_knowledge", "train", "compare", "sweep", "hints", "attention", "fsp",
             "hinton", "datafree", "privileged", "transfer"]
    ap.add_argument("--pages", nargs="*", default=pages)
    args = ap.parse_args()
    env = {**os.environ, "KDVIZ_RUNS": tempfile.mkdtemp(prefix="kdviz-speed-")}  # the shipped runs only
    rows = []
    for page in args.pages:
        done = subprocess.run([sys.executable, __file__, "--one", page], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        rows.append(json.loads(lines[-1]) if lines else {"page": page, "errors": [done.stderr[-300:]]})
    print(f"\nPage render times (s), shipped runs, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'page':16} {'cold':>6} {'warm':>6}  controls (new value / back to a computed one)")
    for r in rows:
        controls = ", ".join(f"{k} {v['new']:.2f}/{v['back']:.2f}" for k, v in r.items() if k not in
                             ("page", "shell_s", "cold_s", "warm_s", "errors", "missing"))
        cold = r.get("cold_s", r.get("shell_s"))
        print(f"{r['page']:16} {cold or float('nan'):6.2f} {r.get('warm_s', float('nan')):6.2f}  {controls}"
              + (f"  ERRORS: {r['errors']}" if r.get("errors") else "") + (f"  missing: {r['missing']}" if r.get(
                  "missing") else ""))


if __name__ == "__main__":
    main()
