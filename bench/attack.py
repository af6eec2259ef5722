"""Issue 18's attacks, replayed automatically against a temporary run store and data folders
(tiny budgets): damaged run folders, wrong results, ids that try to leave the store, bad
values, bad environments, damaged data. Prints one row per attempt (what, expected, observed,
verdict) and the four counts the issue is judged by: page crashes, CLI tracebacks for expected
errors, runs lost or overwritten, wrong results recorded as done.

    KDVIZ_DATA=../shared/data .venv/bin/python bench/attack.py [--no-pages] [--markdown]

Some attempts need another account or a private mount table (an unreadable file, a full
disk, a read-only store): they run in a subprocess under ``setpriv``/``unshare`` when those
work here (as root), and say "simulated" when they fall back to a monkeypatched write.
Rows marked "lead" exercise code outside this branch (the job manager, the job panel).
"""
import argparse
import contextlib
import functools
import gzip
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, no install
os.environ.setdefault("KDVIZ_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kdviz import cli as kdcli, data, models, store as S, train as T  # noqa: E402
from kdviz.store import RunError, RunStore  # noqa: E402
from kdviz.train import TrainConfig  # noqa: E402

ROWS: list[dict] = []
COUNTS = {"page crashes": 0, "CLI tracebacks for expected errors": 0, "runs lost or overwritten": 0,
          "wrong results recorded as done": 0}
SECTION = [""]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def attempt(what: str, expected: str, count: str | None = None):
    """Run the decorated attempt now; it returns (observed, ok). An exception escaping it is a
    FAIL, counted under ``count`` (what kind of failure an escape would be)."""
    def run(fn):
        t0 = time.time()
        try:
            observed, ok = fn()
        except BaseException as e:  # noqa: BLE001 - the bench reports, never stops
            observed, ok = f"raised {type(e).__name__}: {str(e).splitlines()[0][:140] if str(e) else ''}", False
            if count:
                COUNTS[count] += 1
            traceback.print_exc(file=sys.stderr)
        verdict = "PASS" if ok is True else "FAIL" if ok is False else ok
        ROWS.append({"section": SECTION[0], "what": what, "expected": expected, "observed": observed,
                     "verdict": verdict, "s": time.time() - t0})
        print(f"[{verdict}] {what}: {observed}", file=sys.stderr, flush=True)
        return fn
    return run


@contextlib.contextmanager
def env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(*args) -> tuple[int | None, str, str]:
    """``python -m kdviz ARGS`` in this process: (exit code, stdout, stderr). A traceback
    (an exception escaping ``main``) is counted and reported as exit code None."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = kdcli.main([str(a) for a in args])
        except SystemExit as e:  # argparse's own usage errors
            rc = e.code
        except BaseException:  # noqa: BLE001
            rc = None
            err.write("Traceback (most recent call last):\n" + traceback.format_exc())
    if rc is None:
        COUNTS["CLI tracebacks for expected errors"] += 1
    return rc, out.getvalue(), err.getvalue()


def error_line(err: str) -> str:
    lines = [ln for ln in err.replace("\r", "\n").split("\n") if ln.startswith(("error:", "cancelled"))]
    return lines[-1] if lines else ("TRACEBACK" if "Traceback" in err else err.strip()[-120:])


def expect_error(args, said: str, runs: Path | None = None):
    """An expected error: exit 2, one error line saying ``said``, and no new run folder."""
    before = set(runs.iterdir()) if runs and runs.is_dir() else set()
    rc, _, err = cli(*args)
    line = error_line(err)
    left = set(runs.iterdir()) - before if runs and runs.is_dir() else set()
    ok = rc == 2 and said in line and "Traceback" not in err and not left
    return f"exit {rc}: {line[:150]}" + (f"; left {len(left)} folder(s)" if left else ""), ok


def sub(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


@functools.cache
def can(tool: str) -> bool:
    """Whether this machine lets the bench act as another account or mount a private tmpfs."""
    try:
        if tool == "nobody":
            return sub([*NOBODY, "true"], timeout=20).returncode == 0
        return sub(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    "mount -t tmpfs -o size=64k tmpfs /mnt"], timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# ---------------------------------------------------------------- fixtures: a store, data folders

def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(model="mlp30", train_subset=300, batch_size=32, epochs=1, log_every=2), **kw})


def build_store(root: Path) -> dict:
    """Good runs every page can use: MNIST teachers (MLP and CNN), a KD and a FitNets student,
    and a Fashion-MNIST teacher."""
    store = RunStore(root, readonly={})
    runs = {"mlp_teacher": T.train(tiny(model="mlp1200"), store).run_id,
            "cnn_teacher": T.train(tiny(model="cnn_s", lr=0.1, batch_size=16), store).run_id,
            "fashion_teacher": T.train(tiny(dataset="fashion_mnist"), store).run_id}
    runs["kd"] = T.train(tiny(method="kd", teacher=runs["mlp_teacher"]), store).run_id
    runs["fitnet"] = T.train(tiny(model="cnn_xs", method="fitnet", teacher=runs["cnn_teacher"], train_subset=64,
                                  augment=False), store).run_id
    return runs


def fingerprint(root: Path) -> dict:
    """Every file of every run, by content: a run lost or overwritten changes it."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def idx(dims, body=None, ndim=None) -> bytes:
    head = bytes([0, 0, 8, ndim if ndim is not None else len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return gzip.compress(head + (body if body is not None else bytes(math.prod(dims))))


def mnist_folder(root: Path, **override) -> Path:
    """A small MNIST folder (200 real training digits, 100 test) with some files replaced."""
    full = data.load("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    tr, te = full.train_x[:200, 0].numpy().tobytes(), full.test_x[:100, 0].numpy().tobytes()
    files = {"train-images-idx3-ubyte": idx([200, 28, 28], tr),
             "train-labels-idx1-ubyte": idx([200], full.train_y[:200].numpy().astype(np.uint8).tobytes()),
             "t10k-images-idx3-ubyte": idx([100, 28, 28], te),
             "t10k-labels-idx1-ubyte": idx([100], full.test_y[:100].numpy().astype(np.uint8).tobytes())}
    for name, content in {**files, **override}.items():
        (raw / (name + ".gz")).write_bytes(content)
    return root


# ---------------------------------------------------------------- pages

PAGES = sorted(re.findall(r'st\.Page\("(pages/\w+\.py)"', (ROOT / "app.py").read_text()))  # every page
PAGE_SCRIPT = """
import json, os, sys
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
out = {{}}
for page in {pages!r}:
    at = AppTest.from_file({app!r}, default_timeout=600)
    at.run()
    at.switch_page(page).run()
    out[page] = [str(e.value)[:200] for e in at.exception]
print(json.dumps(out))
"""


def render(page: str, runs: Path, data_root: str | None = None, prepare=None):
    """``page`` through AppTest on the store at ``runs``: (exceptions, AppTest)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    with env(KDVIZ_RUNS=str(runs), KDVIZ_PRETRAINED="", KDVIZ_DATA=data_root or os.environ.get("KDVIZ_DATA")):
        st.cache_resource.clear()
        st.cache_data.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        at.switch_page(page).run()
        if prepare:
            prepare(at)
        crashes = [str(e.value)[:200] for e in at.exception]
    COUNTS["page crashes"] += bool(crashes)
    return crashes, at


def pages_in_subprocess(cmd_prefix: list[str], runs: Path, shell_setup: str = "", extra_env=None) -> dict:
    """Every page rendered by a separate process (another account, or a private mount table)."""
    script = runs.parent / "pages_check.py"
    script.write_text(PAGE_SCRIPT.format(root=str(ROOT), pages=PAGES, app=str(ROOT / "app.py")))
    script.chmod(0o644)
    e = {**os.environ, "KDVIZ_RUNS": str(runs), "KDVIZ_PRETRAINED": "", "HOME": str(runs.parent / "home"),
         **(extra_env or {})}
    (runs.parent / "home").mkdir(exist_ok=True)
    (runs.parent / "home").chmod(0o777)
    cmd = [*cmd_prefix, "sh", "-c", f"{shell_setup} exec {sys.executable} {script}"]
    out = sub(cmd, env=e, timeout=900)
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"(process)": [out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"]}
    COUNTS["page crashes"] += sum(bool(v) for v in result.values())
    return result


def pages_observed(result: dict) -> tuple[str, bool]:
    crashed = {p: v for p, v in result.items() if v}
    if not crashed:
        return f"{len(result)} pages, no exception", True
    first = next(iter(crashed.items()))
    return f"{len(crashed)} of {len(result)} pages raised, e.g. {first[0]}: {first[1][0][:110]}", False


# ---------------------------------------------------------------- the attacks

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-pages", action="store_true", help="skip the AppTest page renders (faster)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    tmp = Path(tempfile.mkdtemp(prefix="kdviz-attack-"))
    tmp.chmod(0o755)  # another account must be able to look in
    t0 = time.time()
    try:
        run_attacks(tmp, not args.no_pages)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(args.markdown, time.time() - t0)


def run_attacks(tmp: Path, pages: bool) -> None:
    runs_root = tmp / "runs"
    print("training the good runs…", file=sys.stderr, flush=True)
    good = build_store(runs_root)
    store = RunStore(runs_root, readonly={})
    kept = fingerprint(runs_root)

    SECTION[0] = "Permissions"

    @attempt("modes of the run folders and files the store wrote", "folders 0755, files 0644 (other accounts read them)")
    def _():
        modes = {oct(stat_mode(p)) for p in [runs_root, *runs_root.rglob("*")]}
        return f"modes seen: {sorted(modes)}", modes <= {"0o755", "0o644"}

    # ------------------------------------------------------------ damaged run folders
    SECTION[0] = "One odd folder"
    src = runs_root / good["kd"]
    damage = {
        "a (copy)": None, "run+1": None,
        "status-list": ("status.json", b"[]"), "status-str": ("status.json", b'"done"'),
        "status-binary": ("status.json", bytes(range(256))), "pid-abc": ("status.json", b'{"status": "running", "pid": "abc"}'),
        "pid-1e30": ("status.json", b'{"status": "running", "pid": 1000000000000000000000000000000}'),
        "config-list": ("config.json", b"[1, 2, 3]"), "config-hello": ("config.json", b'"hello"'),
        "config-null": ("config.json", b"null"),
        "config-types": ("config.json", b'{"dataset": 3, "model": ["mlp30"], "group": {}, "epochs": "two", "T": "hot"}'),
        "summary-binary": ("summary.json", b"\x00\xff\xfe\x80"),
    }
    expect = {"a (copy)": "not a run id", "run+1": "not a run id", "status-list": "not a JSON object",
              "status-str": "not a JSON object", "status-binary": "damaged", "pid-abc": "interrupted",
              "pid-1e30": "interrupted", "config-list": "not a JSON object", "config-hello": "not a JSON object",
              "config-null": "not a JSON object", "config-types": "must be", "summary-binary": "damaged"}
    for name, change in damage.items():
        shutil.copytree(src, runs_root / name)
        if change:
            (runs_root / name / change[0]).write_bytes(change[1])
    with open(runs_root / good["fitnet"] / "metrics.jsonl", "ab") as f:  # the Hints page draws these
        f.write(b"\x80\xff\xfe binary junk\n[1, 2, 3]\n\"a string\"\nnull\n{\"kind\": \"step\", \"step\": \"x\"}\n")

    for name, content in damage.items():
        what = f"run folder {name!r}" + (f": {content[0]} = {content[1][:24]!r}" if content else " (a file manager's copy)")

        @attempt(what, "listed (damaged or interrupted, with a reason); the rest work", "page crashes")
        def _():
            info = next(r for r in store.list() if r.id == name)
            said = info.error or info.reason
            return f"{info.status}: {said[:110]}", expect[name] in (said if expect[name] != "interrupted"
                                                                         else info.status)

    @attempt("`python -m kdviz runs` on that store", "exit 0, every folder listed", "CLI tracebacks for expected errors")
    def _():
        with env(KDVIZ_PRETRAINED=""):
            rc, out, _ = cli("runs", "--runs", runs_root)
        listed = sum(1 for ln in out.splitlines()[1:] if ln.strip())
        return f"exit {rc}, {listed} rows, {out.count('damaged')} damaged", rc == 0 and listed == len(good) + len(damage)

    if can("nobody"):
        theirs = runs_root / "made-by-another-account"
        shutil.copytree(src, theirs)
        for f in theirs.iterdir():
            f.chmod(0o600)  # what the old store wrote; here owned by root, read by nobody

        @attempt("config.json unreadable (0600, made by another account), listed by `kdviz runs` as that account",
                 "listed as damaged: cannot be read", "CLI tracebacks for expected errors")
        def _():
            out = sub([*NOBODY, sys.executable, "-m", "kdviz", "runs", "--runs", str(runs_root)],
                      env={**os.environ, "KDVIZ_PRETRAINED": ""})
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("made-by")), "")
            if "Traceback" in out.stderr:
                COUNTS["CLI tracebacks for expected errors"] += 1
            return f"exit {out.returncode}: {' '.join(line.split())[:130]}", out.returncode == 0 and "cannot be read" in line
    else:
        ROWS.append({"section": SECTION[0], "what": "config.json unreadable (another account)", "expected": "damaged",
                     "observed": "setpriv unavailable here: covered by tests/test_store_hardening.py (simulated)",
                     "verdict": "skipped", "s": 0})

    if pages:
        for page in PAGES:
            @attempt(f"page {page} on the store above (odd folders, typed junk, junk metrics lines)",
                     "renders, no exception")
            def _():
                crashes, _ = render(page, runs_root)
                return (f"exception: {crashes[0][:120]}" if crashes else "no exception"), not crashes

    for name in damage:  # damaged folders are deletable from the Training lab by their listed id
        store.delete(next(r.id for r in store.list() if r.id == name))
    shutil.rmtree(runs_root / "made-by-another-account", ignore_errors=True)
    with open(runs_root / good["fitnet"] / "metrics.jsonl", "rb+") as f:
        f.truncate(len(kept[f"{good['fitnet']}/metrics.jsonl"]))

    SECTION[0] = "Read-only store"
    if can("unshare"):
        ro = tmp / "ro-store"
        shutil.copytree(runs_root, ro / "runs")
        S.write_json(ro / "runs" / good["kd"] / "status.json",
                     {"status": "running", "pid": 999_999_999, "time": 1.0, "started": 1.0})  # an interrupted run

        @attempt("read-only runs folder (bind-mounted ro) holding an interrupted run: every page", "renders (lead: "
                 "jobs.py must not rewrite statuses at start)", None)
        def _():
            if not pages:
                return "skipped (--no-pages)", "skipped"
            result = pages_in_subprocess(["unshare", "--mount", "--propagation", "private"], ro / "runs",
                                         f"mount --bind {ro}/runs {ro}/runs && mount -o remount,ro,bind {ro}/runs &&")
            observed, ok = pages_observed(result)
            return observed, ok if ok else "FAIL (lead)"

        @attempt("read-only runs folder: `kdviz runs`", "exit 0, the run listed as interrupted")
        def _():
            out = sub(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       f"mount --bind {ro}/runs {ro}/runs && mount -o remount,ro,bind {ro}/runs && "
                       f"exec {sys.executable} -m kdviz runs --runs {ro}/runs"], env={**os.environ, "KDVIZ_PRETRAINED": ""})
            if "Traceback" in out.stderr:
                COUNTS["CLI tracebacks for expected errors"] += 1
            return f"exit {out.returncode}, {out.stdout.count('interrupted')} interrupted", \
                out.returncode == 0 and "interrupted" in out.stdout

    SECTION[0] = "Deleted meanwhile"
    if pages:
        @attempt("a finished job's run deleted from another tab, then the Training lab rerun",
                 "the lab shows the job without its run (lead: pages/train.py job panel)")
        def _():
            from pages import common

            def delete_after_job(at):
                job = common.manager().submit(tiny(seed=7))
                view = common.manager().wait(job, 120)
                at.session_state["train_job"] = job
                at.run()
                common.store().delete(view.run_ids[-1])
                at.run()
            crashes, _ = render("pages/train.py", runs_root, prepare=delete_after_job)
            return (f"exception: {crashes[0][:120]}" if crashes else "no exception"), True if not crashes else "FAIL (lead)"

    # ------------------------------------------------------------ wrong results
    SECTION[0] = "Wrong results"

    @attempt("lr 1e30, one step (`train --lr 1e30 --train-subset 64`)", "refused before training: lr out of range")
    def _():
        return expect_error(["train", "--model", "mlp30", "--lr", "1e30", "--train-subset", "64", "--runs", runs_root],
                            "lr: the learning rate must be between", runs_root)

    @attempt("lr 10 (the bound) on mlp800: weights become NaN", "run failed with the cause named, never done")
    def _():
        rc, _, err = cli("train", "--model", "mlp800", "--lr", "10", "--train-subset", "256", "--batch-size", "32",
                         "--runs", tmp / "nan-runs")
        [info] = RunStore(tmp / "nan-runs", readonly={}).list()
        return (f"exit {rc}, run {info.status}: {info.reason[:90]}",
                rc == 2 and info.status == "failed" and "learning rate" in info.reason)

    @attempt("weights NaN only after the last step (test loss NaN at evaluation; simulated with NaN logits)",
             "run failed: non-finite evaluation; no NaN in any JSON")
    def _():
        real = T.predict_logits
        T.predict_logits = lambda model, x, *a, **kw: torch.full((len(x), 10), float("nan"))
        try:
            rc, _, err = cli("train", "--model", "mlp30", "--train-subset", "64", "--runs", tmp / "nan-eval")
        finally:
            T.predict_logits = real
        [info] = RunStore(tmp / "nan-eval", readonly={}).list()
        strict = [p.name for p in info.path.glob("*.json") if not strict_json(p)]
        return (f"exit {rc}, run {info.status}: {info.reason[:80]}" + (f"; NaN in {strict}" if strict else ""),
                rc == 2 and info.status == "failed" and not strict)

    @attempt("Fashion-MNIST teacher for an MNIST student (same image shape)", "refused: trained on another dataset")
    def _():
        return expect_error(["distill", "--teacher", good["fashion_teacher"], "--student", "mlp30", "--train-subset",
                             "64", "--runs", runs_root], "was trained on Fashion-MNIST, not MNIST", runs_root)

    for label, status in (("pid 1 (alive, another process)", {"pid": 1, "pid_started": 0.0}),
                          ("no pid at all", {}), ("this very process's pid, another start time",
                                                  {"pid": os.getpid(), "pid_started": 5.0})):
        @attempt(f"a run recorded as running with {label}", "interrupted (not running), deletable")
        def _():
            run_id = store.create(tiny().to_dict())
            S.write_json(store.path(run_id) / "status.json", {"status": "running", "time": 1.0, "started": 1.0, **status})
            info = store.get(run_id)
            store.delete(run_id)
            return f"{info.status}; deleted: {not store.path(run_id).exists()}", \
                info.status == "interrupted" and not store.path(run_id).exists()

    @attempt("an interrupted run's start time after a restart (a new JobManager)", "kept (history unchanged)")
    def _():
        from kdviz import jobs
        run_id = store.create(tiny().to_dict())
        S.write_json(store.path(run_id) / "status.json",
                     {"status": "running", "pid": 999_999_999, "time": 1000.0, "started": 1000.0})
        jobs.JobManager(store)
        info = store.get(run_id)
        store.delete(run_id)
        return f"{info.status}, started {info.started:.0f}", info.status == "interrupted" and info.started == 1000.0

    @attempt("Ctrl-C on `python -m kdviz train` (SIGINT after the first checkpoint)",
             "run cancelled, reason 'cancelled (Ctrl-C)', no traceback, exit 130", "CLI tracebacks for expected errors")
    def _():
        runs = tmp / "ctrl-c"
        proc = subprocess.Popen([sys.executable, "-m", "kdviz", "train", "--model", "mlp30", "--epochs", "300",
                                 "--train-subset", "2000", "--runs", str(runs)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: list(runs.glob("*/resume.pt")), proc)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        [info] = RunStore(runs, readonly={}).list()
        if "Traceback" in err:
            COUNTS["CLI tracebacks for expected errors"] += 1
        return (f"exit {proc.returncode}, {info.status}: {info.reason}",
                proc.returncode == 130 and (info.status, info.reason) == ("cancelled", "cancelled (Ctrl-C)")
                and "Traceback" not in err)

    @attempt("kill -9 of `python -m kdviz train`, then `python -m kdviz resume RUN_ID`",
             "interrupted, checkpoint loads; resumed to done with epochs 1..N once each")
    def _():
        runs = tmp / "killed"
        proc = subprocess.Popen([sys.executable, "-m", "kdviz", "train", "--model", "mlp30", "--epochs", "30",
                                 "--train-subset", "1000", "--runs", str(runs)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: list(runs.glob("*/resume.pt")), proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            proc.kill()
        killed = RunStore(runs, readonly={})
        [info] = killed.list()
        killed.load_model(info.id)
        rc, _, _ = cli("resume", info.id, "--runs", runs)
        epochs = [r["epoch"] for r in killed.metrics(info.id) if r["kind"] == "epoch"]
        after = killed.get(info.id)
        return (f"{info.status} -> resume exit {rc}, {after.status}, epochs {epochs[0]}..{epochs[-1]} ({len(epochs)})",
                info.status == "interrupted" and rc == 0 and after.status == "done" and epochs == list(range(1, 31)))

    # ------------------------------------------------------------ run ids
    SECTION[0] = "Run ids"
    outside = tmp / "outside"
    outside.mkdir()
    torch.save({"arch": "mlp30", "in_shape": [1, 28, 28], "num_classes": 10,
                "state_dict": models.build("mlp30").state_dict(), "extras": {}}, outside / "model.pt")
    escape = "pretrained/" + os.path.relpath(outside, S.ASSETS)

    @attempt(f"--teacher pretrained/../…/{outside.name} (a model.pt outside the store)", "refused: not a run id")
    def _():
        with env(KDVIZ_PRETRAINED=None):
            return expect_error(["distill", "--teacher", escape, "--student", "mlp30", "--train-subset", "64",
                                 "--runs", runs_root], "teacher: no run named", runs_root)

    for bad in (".", ".."):
        @attempt(f"{bad!r} as a run id (get, load_model, delete)", "RunError, nothing read or deleted")
        def _():
            refused = 0
            for op in (store.get, store.load_model, store.delete):
                try:
                    op(bad)
                except RunError:
                    refused += 1
            return f"{refused} of 3 refused; runs folder and its parent intact: {runs_root.is_dir()}", \
                refused == 3 and runs_root.is_dir() and tmp.is_dir()

    @attempt("two runs created in the same second with the same random suffix", "two folders, neither config overwritten",
             "runs lost or overwritten")
    def _():
        real_uuid, real_time = S.uuid.uuid4, S.time.strftime
        same = type("Same", (), {"hex": "abcd" * 8})
        draws = iter([same, same, type("Next", (), {"hex": "ef01" * 8})])
        S.uuid.uuid4, S.time.strftime = (lambda: next(draws)), (lambda fmt: "20250101-000000")
        try:
            a, b = store.create(tiny(label="first").to_dict()), store.create(tiny(label="second").to_dict())
        finally:
            S.uuid.uuid4, S.time.strftime = real_uuid, real_time
        labels = store.get(a).config["label"], store.get(b).config["label"]
        store.delete(a), store.delete(b)
        if labels != ("first", "second"):
            COUNTS["runs lost or overwritten"] += 1
        return f"{a[-13:]} and {b[-13:]}: {labels}", a != b and labels == ("first", "second")

    # ------------------------------------------------------------ bad values, bad environments
    SECTION[0] = "Tracebacks and late failures"
    empty = tmp / "empty-data"
    empty.mkdir()
    for args, said, what in [
        (["train", "--model", "mlp30", "--T", "inf"], "T: must be a finite number", "T = inf"),
        *([(["train", "--model", "mlp30", "--device", "cuda"], "device: cuda is not available",
            "--device cuda (no GPU here)")] if not torch.cuda.is_available() else []),
        (["train", "--model", "mlp30", "--device", "foo"], "device: unknown device 'foo'", "--device foo"),
        (["train", "--model", "mlp30", "--weight-decay", "-1"], "weight_decay:", "weight decay -1"),
        (["train", "--model", "mlp30", "--weight-decay", "nan"], "weight_decay: must be a finite number",
         "weight decay NaN"),
        (["distill", "--teacher", good["mlp_teacher"], "--student", "mlp30", "--method", "ensemble", "--teachers",
          good["kd"], "--teacher-weights", "0", "0"], "teacher_weights:", "ensemble weights 0, 0"),
        (["distill", "--teacher", good["mlp_teacher"], "--student", "mlp30", "--method", "ensemble", "--teachers",
          good["kd"], "--teacher-weights", "1", "nan"], "teacher_weights:", "ensemble weights 1, NaN"),
        (["train", "--model", "mlp30", "--train-subset", "0"], "train_subset:", "--train-subset 0"),
        (["train", "--model", "mlp30", "--train-subset", "-5"], "train_subset:", "--train-subset -5"),
        (["train", "--model", "mlp30", "--epochs", "99999999999999999999"], "epochs:", "--epochs 99999999999999999999"),
        (["replay", "hinton", "--T", "0", "--train-subset", "64"], "T: the temperature T", "replay --T 0"),
        (["compare", "--teacher", good["cnn_teacher"], "--student", "cnn_s", "--group", "a/b"], "group:",
         "compare --group a/b"),
        (["distill", "--teacher", good["mlp_teacher"], "--student", "mlp800", "--method", "at"], "at_layers:",
         "AT with an MLP student"),
        (["distill", "--teacher", good["cnn_teacher"], "--student", "mlp30", "--method", "fsp"], "fsp_layers:",
         "FSP with an MLP student"),
        (["train", "--model", "mlp30", "--dataset", "fashion_mnist", "--data", empty], "Fashion-MNIST is not available",
         "Fashion-MNIST missing"),
        (["train", "--model", "resnet8", "--dataset", "cifar10", "--data", empty], "CIFAR-10 is not available",
         "CIFAR-10 missing"),
        (["resume", good["kd"]], "cannot be resumed: it is done", "resume a finished run"),
    ]:
        @attempt(what, "refused before anything is created: one error line, exit 2",
                 "CLI tracebacks for expected errors")
        def _():
            return expect_error([*args, "--runs", runs_root], said, runs_root)

    (tmp / "a-file").write_text("not a folder")

    @attempt("--runs pointing at a file", "one error line: not a folder")
    def _():
        return expect_error(["train", "--model", "mlp30", "--train-subset", "64", "--runs", tmp / "a-file"],
                            "is not a folder")

    if can("nobody"):
        locked = tmp / "locked-runs"
        locked.mkdir(mode=0o755)

        @attempt("--runs not writable (root's folder, run as another account)", "one error line: cannot write")
        def _():
            out = sub([*NOBODY, sys.executable, "-m", "kdviz", "train", "--model", "mlp30", "--train-subset", "64",
                       "--runs", str(locked)], env={**os.environ, "HOME": str(tmp)})
            if "Traceback" in out.stderr:
                COUNTS["CLI tracebacks for expected errors"] += 1
            return f"exit {out.returncode}: {error_line(out.stderr)[:120]}", \
                out.returncode == 2 and "cannot write to the run folder" in out.stderr and "Traceback" not in out.stderr

    @attempt("full disk while saving the first checkpoint (tmpfs of 2 MB, mlp1200 = 9.6 MB)",
             "run failed, reason 'no space left on device', no traceback")
    def _():
        if not can("unshare"):
            return simulated_full_disk(tmp)
        full = tmp / "full"
        full.mkdir()
        out = sub(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"mount -t tmpfs -o size=2m tmpfs {full} && {sys.executable} -m kdviz train --model mlp1200 "
                   f"--train-subset 128 --runs {full}/runs; echo rc=$?; cat {full}/runs/*/status.json"])
        status = json.loads(out.stdout[out.stdout.index("{"):]) if "{" in out.stdout else {}
        if "Traceback" in out.stderr:
            COUNTS["CLI tracebacks for expected errors"] += 1
        return (f"{out.stdout.split()[0] if out.stdout else '?'}, {status.get('status')}: {status.get('reason', '')[:70]}; "
                f"{error_line(out.stderr)[:60]}",
                "rc=2" in out.stdout and status.get("status") == "failed"
                and status.get("reason", "").startswith("no space left on device") and "Traceback" not in out.stderr)

    @attempt("full disk before the run is created (tmpfs already full)", "one error line; no empty folder left")
    def _():
        if not can("unshare"):
            return "needs unshare (covered by tests/test_cli_errors.py, simulated)", "skipped"
        full = tmp / "full0"
        full.mkdir()
        out = sub(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"mount -t tmpfs -o size=64k tmpfs {full} && mkdir {full}/runs && "
                   f"(dd if=/dev/zero of={full}/filler bs=4k 2>/dev/null; true) && "
                   f"{sys.executable} -m kdviz train --model mlp30 --train-subset 64 --runs {full}/runs; "
                   f"echo rc=$?; ls -A {full}/runs | wc -l"])
        left = out.stdout.split()[-1] if out.stdout.split() else "?"
        if "Traceback" in out.stderr:
            COUNTS["CLI tracebacks for expected errors"] += 1
        return f"{out.stdout.split()[0]}: {error_line(out.stderr)[:70]}; folders left: {left}", \
            "rc=2" in out.stdout and left == "0" and "no space left on device" in out.stderr

    # ------------------------------------------------------------ data
    SECTION[0] = "Data"
    cases = {
        "IDX header claiming 200 dimensions": ({"train-images-idx3-ubyte": idx([200, 28, 28], ndim=200)},
                                               "claims 200 dimensions"),
        "a label of 200": ({"train-labels-idx1-ubyte": idx([200], bytes([200]) * 200)}, "label 200 out of range"),
        "150 labels for 200 images": ({"train-labels-idx1-ubyte": idx([150])}, "has 150 labels for 200 images"),
        "a cut-off gzip file": ({"train-images-idx3-ubyte": idx([200, 28, 28], (bytes(range(256)) * 613)[:156800])[:-600]},
                                "could not be read"),
        "60,000 images claimed, 200 stored": ({"train-images-idx3-ubyte": idx([60000, 28, 28], bytes(200 * 784))},
                                              "is truncated"),
        "non-gzip data file": ({"train-images-idx3-ubyte": b"<html>not found</html>"}, "could not be read"),
    }
    for what, (override, said) in cases.items():
        folder = mnist_folder(tmp / f"data-{abs(hash(what))}", **override)

        @attempt(f"MNIST folder with {what}: `kdviz train`", "one error line naming the file and the fault",
                 "CLI tracebacks for expected errors")
        def _():
            observed, ok = expect_error(["train", "--model", "mlp30", "--data", folder, "--runs", runs_root], said,
                                        runs_root)
            return observed, ok and str(folder) in observed

        if pages and what == "IDX header claiming 200 dimensions":
            for page in ("pages/dark_knowledge.py", "pages/train.py"):
                @attempt(f"{page} with KDVIZ_DATA = that folder", "a warning naming the file, no exception")
                def _():
                    crashes, at = render(page, runs_root, data_root=str(folder))
                    said_it = any("claims 200 dimensions" in w.value for w in at.warning)
                    return (f"exception: {crashes[0][:100]}" if crashes else f"warning shown: {said_it}"), \
                        not crashes and said_it

    cifar = tmp / "cifar-data" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    batch = pickle.dumps({b"data": np.zeros((10, 3072), dtype=np.uint8), b"labels": list(range(10))})
    (cifar / "data_batch_1").write_bytes(batch[:-100])
    (cifar / "test_batch").write_bytes(batch)

    @attempt("truncated CIFAR-10 batch", "one error line naming data_batch_1", "CLI tracebacks for expected errors")
    def _():
        return expect_error(["train", "--model", "resnet8", "--dataset", "cifar10", "--data", cifar.parent,
                             "--runs", runs_root], "data_batch_1 is damaged", runs_root)

    if can("nobody"):
        hidden = mnist_folder(tmp / "hidden-data")
        (hidden / "MNIST" / "raw").chmod(0o700)  # root's; another account cannot list it
        (tmp / "nobody-runs").mkdir(mode=0o777)
        (tmp / "nobody-runs").chmod(0o777)

        @attempt("unreadable data folder (another account's MNIST/raw)", "one error line naming the folder")
        def _():
            out = sub([*NOBODY, sys.executable, "-m", "kdviz", "train", "--model", "mlp30", "--data", str(hidden),
                       "--runs", str(tmp / "nobody-runs")], env={**os.environ, "HOME": str(tmp)})
            if "Traceback" in out.stderr:
                COUNTS["CLI tracebacks for expected errors"] += 1
            return f"exit {out.returncode}: {error_line(out.stderr)[:120]}", \
                out.returncode == 2 and "cannot be read" in out.stderr and "Traceback" not in out.stderr

    @attempt("KDVIZ_DATA pointing at a missing folder", "one error line naming it (not silently the offline sample)")
    def _():
        with env(KDVIZ_DATA=str(tmp / "typo")):
            return expect_error(["train", "--model", "mlp30", "--runs", runs_root], "(KDVIZ_DATA) does not exist",
                                runs_root)

    # ------------------------------------------------------------ the Training lab form
    SECTION[0] = "Training lab"
    @attempt("number fields (epochs 1e20, images 1 or 1e12, lr 0.0001)", "bounded inputs show what is used",
             "page crashes")
    def _():
        crashes, at = render("pages/train.py", Path(runs_root))
        fields = {"epochs_mnist": "epochs", "batch_mnist": "batch_size", "lr_mnist": "lr"}
        bounds = {key: (at.number_input(key=key).min, at.number_input(key=key).max) for key in fields}
        subset = at.number_input(key="subset_mnist")
        ok = not crashes and all(bounds[k] == T.LIMITS[f] for k, f in fields.items()) and \
            (subset.min, subset.max) == (64, data.TRAIN_SIZES["mnist"]) and \
            at.number_input(key="lr_mnist").proto.format == "%.4g"
        return f"min/max {bounds}, training images ({subset.min}, {subset.max}); lr shown as %.4g", ok
    if pages:
        @attempt("Training lab form: AT with an MLP student", "Start disabled, reason names at_layers")
        def _():
            def pick(at):
                at.selectbox(key="train_method").set_value("at").run()
                at.selectbox(key="student_mnist").set_value("mlp800").run()
            crashes, at = render("pages/train.py", runs_root, prepare=pick)
            said = [e.value for e in at.error]
            disabled = at.button(key="train_start").disabled
            return f"errors {said[:1]}, Start disabled: {disabled}", not crashes and disabled and any(
                "at_layers" in s for s in said)

    # ------------------------------------------------------------ the verdicts on every store the bench made
    SECTION[0] = "Totals"

    @attempt("the good runs after every attack", "unchanged, none lost or overwritten", "runs lost or overwritten")
    def _():
        now = fingerprint(runs_root)
        changed = [k for k in kept if kept.get(k) != now.get(k)]
        COUNTS["runs lost or overwritten"] += len({k.split("/")[0] for k in changed})
        return f"{len(kept)} files of {len(good)} runs, {len(changed)} changed", not changed

    @attempt("every run folder the bench made: status done only with finite, valid results",
             "0 wrong results recorded as done", "wrong results recorded as done")
    def _():
        done = wrong = 0
        for path in tmp.rglob("status.json"):
            root = path.parent.parent
            if "ro-store" in str(root) or not root.is_dir():
                continue
            info = RunStore(root, readonly={}).get(path.parent.name) if S.valid_id(path.parent.name) else None
            if info is None or info.status != "done":
                continue
            done += 1
            bad = not all(math.isfinite(v) for v in info.summary.values() if isinstance(v, float))
            try:
                T.validate(TrainConfig.from_dict(info.config))
                if info.config.get("teacher"):
                    T.check_teacher(RunStore(root, readonly={}), info.config["teacher"], info.config["dataset"])
            except ValueError:
                bad = True
            wrong += bad
        COUNTS["wrong results recorded as done"] += wrong
        return f"{done} done runs, {wrong} wrong", wrong == 0


def strict_json(path: Path) -> bool:
    """Whether ``path`` parses as JSON with no NaN or infinity in it."""
    def refuse(constant):
        raise ValueError(constant)
    try:
        json.loads(path.read_text(), parse_constant=refuse)
        return True
    except ValueError:
        return False


def stat_mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def wait_for(cond, proc, timeout=180):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError("the training process wrote no checkpoint")
        time.sleep(0.02)


def simulated_full_disk(tmp: Path):
    real = S.os.fsync

    def fsync(fd):
        if ".model.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        return real(fd)
    S.os.fsync = fsync
    try:
        rc, _, err = cli("train", "--model", "mlp30", "--train-subset", "64", "--runs", tmp / "full-sim")
    finally:
        S.os.fsync = real
    [info] = RunStore(tmp / "full-sim", readonly={}).list()
    return f"simulated: exit {rc}, {info.status}: {info.reason[:60]}", rc == 2 and "no space" in info.reason


def print_table(markdown: bool, seconds: float) -> None:
    cols = ("what", "expected", "observed", "verdict")
    if markdown:
        print("| section | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        for r in ROWS:
            print(f"| {r['section']} | " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    else:
        for section in dict.fromkeys(r["section"] for r in ROWS):
            print(f"\n## {section}")
            for r in (r for r in ROWS if r["section"] == section):
                print(f"- [{r['verdict']}] {r['what']}\n    expected: {r['expected']}\n    observed: {r['observed']}")
    verdicts = [r["verdict"] for r in ROWS]
    print(f"\n{len(ROWS)} attempts in {seconds:.0f} s: {verdicts.count('PASS')} pass, "
          f"{sum(v.startswith('FAIL') for v in verdicts)} fail ({sum(v == 'FAIL (lead)' for v in verdicts)} in the "
          f"lead's code), {sum(v in ('lead', 'skipped') for v in verdicts)} not attempted here")
    for name, n in COUNTS.items():
        print(f"{name}: {n}")


if __name__ == "__main__":
    main()
