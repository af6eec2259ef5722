"""How right is a job's "time left"? Records the Training lab's default demo job and replays its ETAs.

Runs the default MNIST lesson (KD student, then its plain twin) in this process with a context
that records every event the job manager would receive, with its time. Then replays the events
through ``kdviz.jobs.Eta`` as the manager does and compares each estimate with the time that was
really left. Target (issue 15): within ±30 % once 10 % of a stage has run (until the job's last tenth).

    KDVIZ_DATA=../shared/data .venv/bin/python bench/eta_accuracy.py [--save tests/data/recorded_job.json]

``--save`` writes the recording that tests/test_jobs.py replays.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from kdviz import jobs  # noqa: E402
from kdviz.store import RunStore  # noqa: E402
from kdviz.train import TrainConfig  # noqa: E402


def record(epochs: int) -> list:
    """(seconds since start, event) for every event of the default demo job."""
    events, t0 = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        ctx = jobs.JobContext(store, lambda e: events.append((time.time() - t0, e)), lambda: False)
        student = TrainConfig(model="mlp800", method="kd", teacher="pretrained/mnist-mlp1200", epochs=epochs,
                              batch_size=64, lr=0.05, augment=False, train_subset=10000)
        jobs.lesson(student, twin=True)(ctx)
    return [(t, list(e)) for t, e in events]


def errors(recording: list, after: float = 0.1) -> list[tuple[float, float, float]]:
    """(time, estimated left, really left) for every estimate made once ``after`` of its stage had run
    and before the job's last tenth (where a second off is a large ratio and nobody reads the ETA)."""
    end, eta, out, frac_of = recording[-1][0], jobs.Eta(), [], None
    for t, event in recording:
        if event[0] == "stage":
            _, _, index, count, work = event
            eta = jobs.Eta(work) if work else eta
            eta.set_stage(index, count)
        elif event[0] == "row":
            frac_of = event[2]
            left = eta.seconds_left(t, frac_of)
            if left is not None and frac_of >= after and end - t >= 0.1 * end:
                out.append((t, left, end - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--save", type=Path)
    args = ap.parse_args()
    recording = record(args.epochs)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(recording, default=float))
    rows = errors(recording)
    worst = max(abs(est - real) / real for _, est, real in rows if real > 0)
    print("| time (s) | estimated left (s) | really left (s) | error |\n|---:|---:|---:|---:|")
    for t, est, real in rows[:: max(1, len(rows) // 12)]:
        print(f"| {t:.1f} | {est:.1f} | {real:.1f} | {100 * (est - real) / real:+.0f} % |")
    print(f"\n{len(rows)} estimates after 10 % of their stage and before the job's last tenth; the worst is off by {100 * worst:.0f} % "
          f"(target ≤ 30 %); the job took {recording[-1][0]:.1f} s")


if __name__ == "__main__":
    main()
