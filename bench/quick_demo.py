"""The Training lab's default MNIST demo, from pressing Start to Done (target: ≤ 60 s on a 2-core CPU).

Drives the page exactly as a lecturer does, through Streamlit's AppTest: open the Training
lab, keep every default (method KD, the preset's teacher, student, subset and epochs, no
augmentation, a plain twin), press Start, and rerun the page until it says Done. Reports the
time from the click to Done as the job manager measured it (start to finish of the job,
worker process start-up included) and as the page saw it, and the lesson the page showed:
the KD student, its plain twin and the teacher.

    KDVIZ_DATA=../shared/data .venv/bin/python bench/quick_demo.py [--repeats 3]

Runs in a temporary run store beside the shipped pretrained runs (the default teacher).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, no install
from streamlit.testing.v1 import AppTest  # noqa: E402


def one_demo() -> dict:
    import streamlit as st
    from pages import common
    st.cache_resource.clear()  # a new job manager for every repeat
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    teacher = at.selectbox(key="teacher_run_mnist").value
    clicked = time.time()
    at.button(key="train_start").click().run()
    while not at.success:
        time.sleep(0.25)
        at.run()
        assert not at.exception and not at.error, (at.exception, at.error)
    seen = time.time() - clicked
    view = common.manager().list()[0]
    metrics = {m.label.split(":")[0]: m.value for m in at.metric}
    sentence = next((m.value for m in at.markdown if "plain twin" in m.value), "")
    return {"job_s": view.finished - view.started, "page_s": seen, "teacher": teacher, **metrics,
            "lesson": sentence}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdviz-demo-") as tmp:
        os.environ["KDVIZ_RUNS"] = tmp
        results = [one_demo() for _ in range(args.repeats)]
    print(f"\nDefault MNIST KD demo, {args.repeats} repeats, {os.cpu_count()} cores, "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'repeat':>6} {'job (s)':>8} {'page (s)':>9}  student / plain twin / teacher")
    for i, r in enumerate(results, 1):
        print(f"{i:>6} {r['job_s']:>8.1f} {r['page_s']:>9.1f}  {r.get('Student')} / {r.get('Plain twin')} / "
              f"{r.get('Teacher')}")
    print(f"median job time {statistics.median(r['job_s'] for r in results):.1f} s, "
          f"click to Done on the page {statistics.median(r['page_s'] for r in results):.1f} s")
    print(f"teacher: {results[0]['teacher']}\nlesson shown: {results[-1]['lesson']}")


if __name__ == "__main__":
    main()
