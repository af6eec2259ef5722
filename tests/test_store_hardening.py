"""The run store against a lecturer's disk: odd folder names, damaged or wrongly typed files,
reused pids, read-only stores, ids that try to leave the store. Listing never raises."""
import json
import os
import stat

import psutil
import pytest

from kdviz import cli, store as S
from kdviz.store import RunError, RunStore


@pytest.fixture
def good(store):
    """A store with one finished-looking run, written through the store's own API."""
    run_id = store.create({"dataset": "mnist", "model": "mlp30", "method": "plain"})
    store.append_metric(run_id, {"kind": "epoch", "stage": "train", "epoch": 1, "step": 3, "train_acc": 0.5,
                                 "test_acc": 0.6, "test_loss": 1.0, "test_errors": 4, "time_s": 1.0})
    store.finish(run_id, "done", {"test_acc": 0.6, "test_errors": 4})
    store.good = run_id
    return store


def folder(store, name, **files):
    path = store.root / name
    path.mkdir(parents=True)
    for fname, content in files.items():
        fname = fname.replace("_json", ".json").replace("_jsonl", ".jsonl")
        (path / fname).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def listed(store) -> dict:
    out = {r.id: r for r in store.list()}
    assert out  # the good run at least
    return out


@pytest.mark.parametrize("name", ["a (copy)", "run+1", "tab\tname", "new\nline", "é", "x" * 201])
def test_odd_folder_names_are_listed_as_damaged_and_can_be_deleted(good, name, capsys):
    (good.root / name).mkdir()
    runs = listed(good)
    assert runs[good.good].status == "done"
    [odd] = [r for r in runs.values() if r.id != good.good]
    assert odd.status == "damaged" and "not a run id" in odd.error
    assert "\n" not in odd.id and "\t" not in odd.id  # escaped for tables and terminals
    assert cli.main(["runs", "--runs", str(good.root)]) == 0
    assert "not a run id" in capsys.readouterr().out
    good.delete(odd.id)  # the Training lab's delete works on it by the id the listing gives
    assert not (good.root / name).exists() and (good.root / good.good).is_dir()


def test_a_folder_name_that_is_not_utf8_is_listed(good):
    os.mkdir(os.fsencode(str(good.root)) + b"/bad\xff")
    odd = [r for r in good.list() if r.id != good.good]
    assert odd[0].status == "damaged" and "\\udcff" in odd[0].id


STATUS_DAMAGE = [([], "status.json is not a JSON object"), ("done", "status.json is not a JSON object"),
                 (b"\x80\x81binary", "status.json is damaged"), ({"status": 5}, "status is not of type str"),
                 ({"status": "weird"}, "unknown status"), ({}, "unknown status"),
                 (b"[" * 100_000, "status.json is damaged"), (b" " * (S.MAX_JSON_BYTES + 1), "too large")]
CONFIG_DAMAGE = [([1, 2, 3], "not a JSON object"), ("hello", "not a JSON object"), (None, "not a JSON object"),
                 ({"epochs": "3"}, "epochs: must be a whole number"), ({"T": "hot"}, "T: must be a finite number"),
                 ({"group": 7}, "group: must be a text"), ({"teachers": "abc"}, "teachers: must be a list"),
                 ({"model": "nonet"}, "unknown model"), ({"lr": True}, "lr: must be a finite number")]
SUMMARY_DAMAGE = [(b"\x00\xff", "summary.json is damaged"), ([], "summary.json is not a JSON object"),
                  ({"test_acc": "high"}, "test_acc is not a number"), ({"test_errors": 1.5}, "test_errors")]


@pytest.mark.parametrize("file,content,why", [("status.json", c, w) for c, w in STATUS_DAMAGE]
                         + [("config.json", c, w) for c, w in CONFIG_DAMAGE]
                         + [("summary.json", c, w) for c, w in SUMMARY_DAMAGE])
def test_damaged_files_make_a_damaged_run_not_a_crash(good, file, content, why):
    path = folder(good, "hurt", config_json={"dataset": "mnist", "model": "mlp30", "group": "g"},
                  status_json={"status": "done"})
    (path / file).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    runs = listed(good)
    assert runs[good.good].status == "done"
    assert runs["hurt"].status == "damaged" and why in runs["hurt"].error, runs["hurt"].error
    assert "\n" not in runs["hurt"].error
    assert all(isinstance(v, str) for k, v in runs["hurt"].config.items() if k in ("dataset", "model", "group"))


def test_wrongly_typed_config_fields_are_dropped_the_rest_stays(good):
    folder(good, "half", config_json={"dataset": "mnist", "model": "mlp30", "epochs": "many", "group": ["x"]},
           status_json={"status": "done"})
    info = good.get("half")
    assert info.status == "damaged" and info.config == {"dataset": "mnist", "model": "mlp30"}


def test_unreadable_config_is_damaged_not_a_crash(good, monkeypatch):
    """A run made by another account with mode 0600 (simulated: the tests run as root)."""
    folder(good, "theirs", config_json={"model": "mlp30"}, status_json={"status": "done"})
    real_open = open

    def refusing(path, *a, **kw):
        if str(path).endswith("theirs/config.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(S, "open", refusing, raising=False)
    info = listed(good)["theirs"]
    assert info.status == "damaged" and "config.json cannot be read (permission denied" in info.error


def test_files_and_folders_are_readable_by_other_accounts(store):
    old = os.umask(0o077)
    try:
        run_id = store.create({"model": "mlp30"})
        store.append_metric(run_id, {"kind": "step", "stage": "train", "epoch": 1, "step": 1, "loss": 1.0})
    finally:
        os.umask(old)
    path = store.path(run_id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    for f in path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_metrics_skip_junk_lines_and_badly_typed_rows(good):
    rows = {"kind": "step", "stage": "train", "epoch": 1, "step": 5, "loss": 0.5}
    with open(good.path(good.good) / "metrics.jsonl", "ab") as f:
        f.write(b"\x80\x81\xfe binary\n[1, 2]\n\"text\"\nnull\n{\"kind\": \"step\"}\n"
                b"{\"kind\": \"epoch\", \"stage\": \"train\", \"epoch\": 2, \"step\": 9, \"train_acc\": \"x\", "
                b"\"test_acc\": 0.5}\n{\"kind\": \"step\", \"stage\": \"t\", \"step\": 6, \"loss\": 1, \"kd\": \"no\"}\n"
                + json.dumps(rows).encode() + b"\n{\"kind\": \"ep")
    got = good.metrics(good.good)
    assert [r["kind"] for r in got] == ["epoch", "step"] and got[-1] == rows


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "/etc", "pretrained/..", "pretrained/../x",
                                 "pretrained/../../../../tmp/x", "", "a\\b", None, 7])
def test_ids_that_leave_the_store_are_refused(tmp_path, bad):
    store = RunStore(tmp_path / "runs", readonly={"pretrained": tmp_path / "shipped"})
    with pytest.raises(RunError):
        store.path(bad)


def test_delete_never_leaves_the_store(tmp_path):
    store = RunStore(tmp_path / "runs", readonly={})
    store.root.mkdir()
    keep = tmp_path / "precious"
    keep.mkdir()
    for bad in ("..", "../precious", "."):
        with pytest.raises(RunError):
            store.delete(bad)
    (store.root / "link").symlink_to(keep)
    with pytest.raises(RunError, match="outside"):
        store.delete("link")
    assert keep.is_dir() and store.root.is_dir()
    assert listed_or_empty(store)["link"].status == "damaged"


def listed_or_empty(store):
    return {r.id: r for r in store.list()}


def test_create_never_reuses_a_folder(store, monkeypatch):
    class SameHex:  # every run id drawn in the same second with the same suffix
        hex = "abcd" * 8
    draws = iter([SameHex, SameHex, type("Other", (), {"hex": "ef01" * 8})])
    monkeypatch.setattr(S.uuid, "uuid4", lambda: next(draws))
    monkeypatch.setattr(S.time, "strftime", lambda fmt: "20250101-000000")
    first = store.create({"model": "mlp30", "label": "first"})
    second = store.create({"model": "mlp30", "label": "second"})
    assert first != second
    assert store.get(first).config["label"] == "first" and store.get(second).config["label"] == "second"


def write_status(store, run_id, **status):
    S.write_json(store.path(run_id) / "status.json", {"status": "running", "time": 1.0, **status})


@pytest.mark.parametrize("pid,pid_started", [
    (1, 0.0),  # pid 1 is alive (the container's init) but is not the process that started the run
    (os.getpid(), 12.0),  # this very process, but the recorded start time is another's: a reused pid
    (None, None), ("abc", 1.0), (10**30, 1.0), (-5, 1.0), (True, 1.0), (999_999_999, 1.0),
])
def test_a_run_is_running_only_while_the_process_that_started_it_lives(good, pid, pid_started):
    write_status(good, good.good, pid=pid, pid_started=pid_started)
    info = good.get(good.good)
    assert info.status == "interrupted" and "stopped" in info.reason


def test_this_process_running_a_run_reads_as_running(good):
    me = psutil.Process()
    write_status(good, good.good, pid=me.pid, pid_started=me.create_time())
    assert good.get(good.good).status == "running"
    write_status(good, good.good, pid=me.pid)  # an old status.json without the start time
    assert good.get(good.good).status == "interrupted"


def test_statuses_keep_the_run_start_time(store):
    run_id = store.create({"model": "mlp30"})
    started = store.get(run_id).started
    S.write_json(store.path(run_id) / "status.json",
                 {**json.loads((store.path(run_id) / "status.json").read_text()), "pid": 999_999_999})
    assert store.get(run_id).status == "interrupted" and store.get(run_id).started == started
    store.set_status(run_id, "cancelled", "cancelled by the user")
    assert store.get(run_id).started == started


def test_reading_a_store_writes_nothing(good, monkeypatch):
    """A read-only runs folder (a USB stick, another account's store) is browsable."""
    write_status(good, good.good, pid=999_999_999, pid_started=1.0)  # interrupted
    before = {p: p.stat().st_mtime_ns for p in good.root.rglob("*")}

    def no_writes(*a, **kw):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(S, "_atomic_write", no_writes)
    monkeypatch.setattr(S.os, "replace", no_writes)
    assert good.get(good.good).status == "interrupted" and good.metrics(good.good)
    assert cli.main(["runs", "--runs", str(good.root)]) == 0
    assert {p: p.stat().st_mtime_ns for p in good.root.rglob("*")} == before


def test_create_in_a_folder_that_is_a_file_says_so(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    store = RunStore(tmp_path / "runs", readonly={})
    assert store.list() == []
    with pytest.raises(RunError, match="is not a folder"):
        store.create({"model": "mlp30"})


def test_a_full_disk_leaves_no_folder_behind(store, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(S.os, "fsync", full)
    with pytest.raises(RunError, match="no space left on device"):
        store.create({"model": "mlp30"})
    assert list(store.root.iterdir()) == []


def test_json_never_holds_nan(store):
    run_id = store.create({"model": "mlp30"})
    with pytest.raises(ValueError):
        S.write_json(store.path(run_id) / "summary.json", {"test_loss": float("nan")})
    with pytest.raises(ValueError):
        store.append_metric(run_id, {"kind": "step", "loss": float("inf")})
    assert not (store.path(run_id) / "summary.json").exists()


def test_checkpoint_version_changes_when_the_checkpoint_is_rewritten(tmp_path):
    import os
    from kdviz.store import RunStore
    store = RunStore(tmp_path)
    (tmp_path / "r1").mkdir()
    assert store.checkpoint_version("r1") == 0.0  # no checkpoint yet
    (tmp_path / "r1" / "model.pt").write_bytes(b"x")
    os.utime(tmp_path / "r1" / "model.pt", (1000.0, 1000.0))
    assert store.checkpoint_version("r1") == 1000.0
    os.utime(tmp_path / "r1" / "model.pt", (2000.0, 2000.0))
    assert store.checkpoint_version("r1") == 2000.0
