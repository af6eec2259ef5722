"""Server-side time of one temperature-slider move on the Temperature page (target: < 100 ms on CPU).

A slider move reruns only the page's ``temperature_view`` fragment. This times, per move,
(1) the kdviz math it calls, (2) that plus building its three figures, (3) that plus the
JSON serialisation st.plotly_chart does, and (4) a full AppTest rerun of the page after
``set_value`` (AppTest reruns the whole script, not just the fragment, and adds its own overhead).
Medians and 90th percentiles over several moves; the first move of each kind is a warm-up.

    KDVIZ_DATA=../shared/data .venv/bin/python bench/temperature_latency.py [--runs DIR] [--moves 20]

Uses the newest finished MNIST run of the store as the teacher (and another as the
student, if any); with none, trains a small mlp800 teacher into a temporary store first.
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
import plotly.io as pio  # noqa: E402
import torch  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from kdviz import analysis, data, train  # noqa: E402
from kdviz.store import RunStore  # noqa: E402
from kdviz.viz import METHOD_COLORS  # noqa: E402
from kdviz.viz import temperature as viz  # noqa: E402


def mnist_runs(store: RunStore) -> list:
    return [r for r in store.list() if r.status == "done" and r.config.get("dataset") == "mnist"
            and (r.path / "model.pt").exists()]


def math_for(T, t, s, fraction=0.5):
    """The kdviz calls of ``temperature_view`` in pages/temperature.py."""
    return dict(p_t=analysis.softmax_at(t, T), p_s=analysis.softmax_at(s, T), kl=analysis.kl_at(t, s, T),
                t_ratio=analysis.temperature_for_ratio(t, fraction),
                curves=analysis.temperature_curves(t, analysis.TEMPERATURES))


def figures_for(T, m, classes):
    """Its three figures: the teacher's bars, the student beside the teacher, the T curves."""
    black, blue = METHOD_COLORS["teacher"], METHOD_COLORS["kd"]
    entropy, max_prob = m["curves"]
    return [viz.probability_bars([("teacher", m["p_t"], black)], classes, T),
            viz.probability_bars([("teacher", m["p_t"], black), ("student", m["p_s"], blue)], classes, T),
            viz.temperature_curves(analysis.TEMPERATURES, entropy, max_prob, len(classes), T, m["t_ratio"], "ratio")]


def timed(fn, temps) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of ``fn(T)`` per temperature. The CPU time is what the
    move costs this process; on a shared, busy machine the wall time also counts waiting for a core."""
    fn(temps[-1])  # warm-up
    wall, cpu = [], []
    for T in temps:
        w0, c0 = time.perf_counter(), time.process_time()
        fn(T)
        wall.append((time.perf_counter() - w0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def report(name: str, times: tuple[list[float], list[float]]) -> None:
    wall, cpu = times
    p90 = statistics.quantiles(wall, n=10)[-1] if len(wall) > 1 else wall[0]
    print(f"{name:58} wall median {statistics.median(wall):6.1f} ms (p90 {p90:6.1f})   "
          f"CPU median {statistics.median(cpu):6.1f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=None, help="run store (default: $KDVIZ_RUNS or ./runs)")
    ap.add_argument("--moves", type=int, default=20)
    args = ap.parse_args()
    store = RunStore(args.runs)
    runs = mnist_runs(store)
    if not runs:
        print("no finished MNIST run: training a small mlp800 teacher (1 epoch, 5,000 images) ...")
        store = RunStore(tempfile.mkdtemp(), readonly={})
        train.train(train.TrainConfig(model="mlp800", epochs=1, train_subset=5000), store)
        runs = mnist_runs(store)
    ds = data.load("mnist")
    runs.sort(key=lambda r: r.config.get("method") != "plain")  # a plain run as the teacher
    teacher_model, _ = store.load_model(runs[0].id)
    t = train.predict_logits(teacher_model, ds.test_x[:1], "mnist").numpy()[0]
    s = (train.predict_logits(store.load_model(runs[1].id)[0], ds.test_x[:1], "mnist").numpy()[0]
         if len(runs) > 1 else [0.0] * 10)
    temps = [analysis.TEMPERATURES[(7 * k) % len(analysis.TEMPERATURES)] for k in range(args.moves)]
    print(f"teacher {runs[0].id}, MNIST test image #0, {args.moves} slider moves, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}\n")

    report("kdviz math (analysis.*)", timed(lambda T: math_for(T, t, s), temps))
    report("math + its 3 figures (kdviz.viz.temperature)", timed(
        lambda T: figures_for(T, math_for(T, t, s), ds.classes), temps))
    report("math + figures + plotly JSON (what st.plotly_chart sends)", timed(
        lambda T: [pio.to_json(f, validate=False) for f in figures_for(T, math_for(T, t, s), ds.classes)], temps))

    os.environ["KDVIZ_RUNS"] = str(store.root)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/temperature.py").run()
    slider = lambda T: at.select_slider(key="temperature_T").set_value(T).run()  # noqa: E731
    report("AppTest: whole page rerun after set_value", timed(slider, temps))
    if at.exception:
        print("the page raised:", at.exception[0].message)


if __name__ == "__main__":
    main()
