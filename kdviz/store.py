"""Run store: one folder per run, written atomically, readable after a crash.

``runs/<id>/`` holds ``config.json``, ``status.json`` (status, the pid and start
time of the process that wrote it, reason), ``metrics.jsonl`` (appended as
training goes), ``model.pt`` (state dict plus what rebuilds the model),
``resume.pt`` (what continuing an interrupted run needs), ``summary.json``
(final metrics) and, for a run that made its own training images (data-free
distillation), ``images.pt``. Read-only roots (the shipped ``assets/pretrained``) appear as
runs named ``<prefix>/<name>``.

Everything read from disk is distrusted: a folder the store cannot read or
understand is listed as ``damaged`` with a one-line reason, never raised, so
one odd folder (a file manager's ``run (copy)``, a run made by another account,
junk in a JSON file) cannot take the app down. Files are written 0644 and
folders 0755, so runs made by one account are readable by another.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch

from . import models

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "pretrained"
FINAL = ("done", "failed", "cancelled")
STATUSES = ("queued", "running", "interrupted", *FINAL)
RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")  # and never "." or ".."
FILE_MODE, DIR_MODE = 0o644, 0o755
MAX_JSON_BYTES = 1 << 20  # a run's small files are a few kB; anything bigger is not ours
# Known fields of summary.json and of metric rows, and the type each must have.
SUMMARY_TYPES = {"test_acc": float, "test_errors": int, "test_loss": float, "train_acc": float, "steps": int,
                 "train_time_s": float, "params": int, "device": str, "data_source": str, "train_images": int,
                 "cohort_test_acc": list, "teacher_test_acc": float, "teacher_view_test_acc": float}
ROW_TYPES = {"kind": str, "stage": str, "epoch": int, "step": int, "lr": float, "loss": float,
             "train_acc": float, "test_acc": float, "test_loss": float, "test_errors": int, "time_s": float}
ROW_NEEDS = {"step": ("stage", "step", "loss"), "epoch": ("stage", "epoch", "step", "train_acc", "test_acc")}
IMAGE_SET = ("targets", "confidence")  # per-image tensors of a run's images.pt, besides the images
RUN_FILES = {"config.json", "status.json", "metrics.jsonl", "model.pt", "summary.json"}


class RunError(RuntimeError):
    """A run folder is missing, damaged or cannot be written; the message says which and why."""


@dataclass
class RunInfo:
    id: str
    path: Path
    config: dict = field(default_factory=dict)
    status: str = "unknown"
    summary: dict = field(default_factory=dict)
    reason: str = ""
    error: str = ""  # set when the folder is damaged: what is wrong with it
    readonly: bool = False
    started: float = 0.0

    @property
    def label(self) -> str:
        c = self.config
        name = c.get("model", "?")
        if c.get("method", "plain") != "plain":
            name += f" · {c['method']}"
        return f"{self.id} ({c.get('dataset', '?')}: {name})"


def valid_id(name: str) -> bool:
    """Whether ``name`` can name a run folder: letters, digits, ``_ . -``, not ``.`` or ``..``."""
    return isinstance(name, str) and bool(RUN_ID.fullmatch(name)) and name not in (".", "..")


def os_reason(e: OSError, with_file: bool = True) -> str:
    """A disk error in plain words: what went wrong, then the file."""
    words = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "permission denied"}.get(e.errno, e.strerror or type(e).__name__)
    return f"{words} ({e.filename})" if e.filename and with_file else words


@contextlib.contextmanager
def _writing(what: Path):
    """Turn a disk error while writing ``what`` into a RunError that says why in plain words."""
    try:
        yield
    except OSError as e:
        e.filename = e.filename or str(what)
        raise RunError(os_reason(e)) from e


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half."""
    with _writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_json(path: Path, obj) -> None:
    """Atomic JSON; a NaN or infinity is refused (it is not JSON, and it is never a result)."""
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(obj, indent=1, default=str, allow_nan=False).encode())


def _read_json(path: Path):
    """The parsed file; RunError with a one-line reason when it cannot be read or is not JSON."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise RunError(f"{path.name} cannot be read ({os_reason(e, with_file=False)})") from e
    if len(raw) > MAX_JSON_BYTES:
        raise RunError(f"{path.name} is too large to be a run file")
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # undecodable bytes, not JSON, absurdly nested
        raise RunError(f"{path.name} is damaged (not JSON)") from e


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def has_type(v, kind) -> bool:
    """``v`` is a ``kind`` (float: any finite number; int: a whole number, not a bool)."""
    if kind is float:
        return is_number(v)
    if kind is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, kind)


def _type_problem(obj, types: dict, name: str) -> str:
    """'' when ``obj`` is an object whose known fields have their types, else why not."""
    if not isinstance(obj, dict):
        return f"{name} is not a JSON object"
    for key, kind in types.items():
        if key in obj and obj[key] is not None and not has_type(obj[key], kind):
            return f"{name}: {key} is not {'a number' if kind is float else f'of type {kind.__name__}'}"
    return ""


def _row_ok(row) -> bool:
    """A row's known fields have their types, its other fields (a method's loss terms and
    accuracies) are numbers, and its kind's fields are all there."""
    return (not _type_problem(row, ROW_TYPES, "row")
            and all(v is None or has_type(v, float) for k, v in row.items() if k not in ROW_TYPES)
            and all(row.get(k) is not None for k in ROW_NEEDS.get(row.get("kind"), ())))


def _process_start(pid) -> float | None:
    """Start time of the live process ``pid``, or None (no such process, a zombie, a garbage pid)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except Exception:  # NoSuchProcess, AccessDenied, OverflowError for absurd pids, ...
        return None


def alive(pid, pid_started) -> bool:
    """Whether the process that wrote a status still runs: its pid is alive *and* started
    when the status says (a reused pid, e.g. 1 in a restarted container, is another process)."""
    start = _process_start(pid)
    return start is not None and is_number(pid_started) and abs(start - pid_started) < 1.0


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None, readonly: dict[str, Path] | None = None):
        self.root = Path(root or os.environ.get("KDVIZ_RUNS") or "runs")
        if readonly is None:  # $KDVIZ_PRETRAINED names another shipped set; empty hides it
            shipped = os.environ.get("KDVIZ_PRETRAINED", str(ASSETS))
            readonly = {"pretrained": Path(shipped)} if shipped else {}
        self.readonly = readonly
        self._lock = threading.Lock()  # serialises appends from several job threads

    # ---------------------------------------------------------------- paths
    def checkpoint_version(self, run_id: str) -> float:
        """The modification time of a run's checkpoint (0 without one): a cache keyed on it
        recomputes once the run is trained further or resumed."""
        path = self.path(run_id) / "model.pt"
        return path.stat().st_mtime if path.exists() else 0.0

    def path(self, run_id: str) -> Path:
        """The folder of ``run_id``; RunError for a name that is not a run id or leaves its root."""
        if not isinstance(run_id, str):
            raise RunError(f"no run named {run_id!r}")
        prefix, _, rest = run_id.partition("/")
        root, name = (self.readonly[prefix], rest) if rest and prefix in self.readonly else (self.root, run_id)
        if not valid_id(name):
            raise RunError(f"no run named {run_id!r} (a run id has only letters, digits, '_', '.' and '-')")
        path = root / name
        try:
            inside = path.resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            inside = False
        if not inside:
            raise RunError(f"run {run_id} points outside its run folder")
        return path

    def check_writable(self) -> None:
        """RunError unless new runs can be created in the root (checked before any work starts)."""
        if self.root.exists() and not self.root.is_dir():
            raise RunError(f"the run folder {self.root} is not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create the run folder {self.root} ({os_reason(e, with_file=False)})") from e
        if not os.access(self.root, os.W_OK | os.X_OK):
            why = "read-only file system" if _readonly_fs(self.root) else "permission denied"
            raise RunError(f"cannot write to the run folder {self.root} ({why})")

    # ---------------------------------------------------------------- writing
    def _fresh_id(self, config: dict) -> str:
        slug = "-".join(str(config.get(k, "")) for k in ("dataset", "model", "method") if config.get(k))
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", slug)[:60]
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{uuid.uuid4().hex[:8]}"

    def create(self, config: dict) -> str:
        """A new run folder (never an existing one) with its config and status 'running'.
        On a disk error nothing is left behind and RunError says why."""
        self.check_writable()
        for _ in range(100):
            run_id = self._fresh_id(config)
            try:
                (self.root / run_id).mkdir(mode=DIR_MODE)  # exclusive: never an existing folder
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise RunError(f"cannot create a run in {self.root} ({os_reason(e, with_file=False)})") from e
        else:
            raise RunError(f"could not find a free run id in {self.root}")
        path = self.root / run_id
        try:
            os.chmod(path, DIR_MODE)  # whatever the umask
            self.write_config(run_id, config)
            self.set_status(run_id, "running")
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return run_id

    def import_run(self, files: dict[str, bytes]) -> str:
        """Add a run that ended in another store (a Ray worker's), given its files by name;
        returns its new id. It appears all at once: written aside, then renamed in."""
        derived = {n for n in files if re.fullmatch(r"[\w.-]+\.npy", n) and not n.startswith(".")}  # write_array's
        if set(files) - RUN_FILES - derived or "config.json" not in files:
            raise RunError(f"cannot import a run made of {sorted(files)}")
        config = json.loads(files["config.json"])
        staging = self.root / f".{self._fresh_id(config)}.importing"
        staging.mkdir(mode=DIR_MODE, parents=True)
        for name, blob in files.items():
            _atomic_write(staging / name, blob)
        for _ in range(100):
            run_id = self._fresh_id(config)
            try:
                staging.rename(self.root / run_id)  # fails on an existing run: never overwrites one
                return run_id
            except OSError:
                continue
        raise RunError(f"could not find a free run id in {self.root}")

    def write_config(self, run_id: str, config: dict) -> None:
        write_json(self.path(run_id) / "config.json", config)

    def _status(self, run_id: str) -> dict:
        try:
            st = _read_json(self.path(run_id) / "status.json")
        except (FileNotFoundError, RunError):
            return {}
        return st if isinstance(st, dict) else {}

    def set_status(self, run_id: str, status: str, reason: str = "") -> None:
        """Record ``status`` as written by this process; the run's start time is kept."""
        now, me = time.time(), os.getpid()
        started = self._status(run_id).get("started")
        write_json(self.path(run_id) / "status.json",
                   {"status": status, "pid": me, "pid_started": _process_start(me), "time": now,
                    "started": started if is_number(started) else now, "reason": reason})

    def append_metric(self, run_id: str, row: dict) -> None:
        line = json.dumps(row, default=float, allow_nan=False) + "\n"
        path = self.path(run_id) / "metrics.jsonl"
        with self._lock, _writing(path), open(path, "a") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(line)

    def rewrite_metrics(self, run_id: str, rows: list[dict]) -> None:
        """Replace the metric rows (a resumed run drops the rows of the epoch it redoes)."""
        path = self.path(run_id) / "metrics.jsonl"
        with self._lock:
            _atomic_write(path, "".join(json.dumps(r, default=float, allow_nan=False) + "\n" for r in rows).encode())

    def save_model(self, run_id: str, model: models.TapModel, extras: torch.nn.Module | None = None,
                   half: bool = False) -> None:
        cast = (lambda t: t.half() if t.is_floating_point() else t) if half else (lambda t: t)
        payload = {
            "arch": model.arch, "in_shape": list(model.in_shape), "num_classes": model.head.out_features,
            "state_dict": {k: cast(v.detach().cpu()) for k, v in model.state_dict().items()},
            "extras": {k: {n: cast(t.detach().cpu()) for n, t in m.state_dict().items()}
                       for k, m in (extras or {}).items()},
        }
        self.save_blob(run_id, "model.pt", payload)

    def save_blob(self, run_id: str, name: str, obj) -> None:
        """torch.save ``obj`` to the run's file ``name``. Serialised in memory first, so that a
        full disk reads as 'no space left on device', not as an error from inside torch's writer."""
        buf = io.BytesIO()
        torch.save(obj, buf)
        _atomic_write(self.path(run_id) / name, buf.getvalue())

    def save_json(self, path: Path, obj) -> None:
        """Atomic JSON at ``path``, a file of the store's own beside its runs (a sweep's plan), so that
        every write goes through the store (a classroom viewer's guarded store refuses them all)."""
        if not Path(path).resolve().is_relative_to(self.root.resolve()):
            raise RunError(f"{path} is outside the run folder {self.root}")
        write_json(path, obj)

    def finish(self, run_id: str, status: str, summary: dict | None = None, reason: str = "") -> None:
        if summary is not None:
            write_json(self.path(run_id) / "summary.json", summary)
        self.set_status(run_id, status, reason)

    def delete(self, run_id: str) -> None:
        if self._is_readonly(run_id):
            raise RunError(f"{run_id} is a shipped pretrained run and cannot be deleted")
        if valid_id(run_id):
            path = self.path(run_id)
        else:  # a damaged folder with an odd name, by the id the listing gives it
            path = next((r.path for r in self.list() if r.id == run_id and not r.readonly), None)
            if path is None:
                raise RunError(f"no run named {run_id!r}")
        shutil.rmtree(path, ignore_errors=True)

    # ---------------------------------------------------------------- reading
    def _is_readonly(self, run_id: str) -> bool:
        return run_id.partition("/")[0] in self.readonly and "/" in run_id

    def get(self, run_id: str) -> RunInfo:
        """Read a run's small files; a damaged folder gives a RunInfo with ``error`` set
        (and status 'damaged'); RunError only when there is no such run."""
        path = self.path(run_id)
        info = RunInfo(run_id, path, readonly=self._is_readonly(run_id))
        if not path.is_dir():
            raise RunError(f"no run named {run_id!r}")
        from .train import config_problems  # the trainer owns TrainConfig's field types; it imports this module
        problems = []
        try:
            config = _read_json(path / "config.json")
            bad = config_problems(config)
            problems += [f"config.json: {why}" for why in list(bad.values())[:1]]
            if isinstance(config, dict):  # the fields that pass stay usable (labels, tables)
                info.config = {k: v for k, v in config.items() if k not in bad}
        except FileNotFoundError:
            problems.append("config.json is missing")
        except RunError as e:
            problems.append(str(e))
        try:
            st = _read_json(path / "status.json")
            if problem := _type_problem(st, {"status": str, "reason": str}, "status.json"):
                raise RunError(problem)
            if st.get("status") not in STATUSES:
                raise RunError(f"status.json: unknown status {str(st.get('status'))[:40]!r}")
            info.status, info.reason = st["status"], st.get("reason") or ""
            started = st.get("started", st.get("time"))
            info.started = float(started) if is_number(started) else 0.0
            if info.status in ("running", "queued") and not alive(st.get("pid"), st.get("pid_started")):
                info.status, info.reason = "interrupted", "the process training it stopped (the app or the command ended)"
        except FileNotFoundError:  # shipped runs have none; a new run gets it right after its config
            info.status = "done" if info.readonly else "starting"
        except RunError as e:
            problems.append(str(e))
        try:
            summary = _read_json(path / "summary.json")
            if problem := _type_problem(summary, SUMMARY_TYPES, "summary.json"):
                problems.append(problem)
            else:
                info.summary = summary
        except FileNotFoundError:
            pass
        except RunError as e:
            problems.append(str(e))
        if problems:
            info.error, info.status = "; ".join(problems), "damaged"
        return info

    def list(self) -> list[RunInfo]:
        """Every run, newest first. Never raises: a folder that cannot be read or understood
        is listed as damaged, with a one-line reason."""
        runs = []
        for prefix, root in [("", self.root), *self.readonly.items()]:
            try:
                entries = sorted(root.iterdir()) if root.is_dir() else []
            except OSError:
                continue  # an unreadable root lists nothing (check_writable says why on training)
            for p in entries:
                try:
                    if p.name.startswith(".") or not p.is_dir():
                        continue
                except OSError:
                    continue
                runs.append(self._entry(prefix, root, p))
        return sorted(runs, key=lambda r: (r.readonly, -r.started, r.id))

    def _entry(self, prefix: str, root: Path, p: Path) -> RunInfo:
        shown = p.name if valid_id(p.name) else repr(p.name)[1:-1]  # odd bytes and newlines escaped
        run_id = f"{prefix}/{shown}" if prefix else shown
        if not valid_id(p.name):
            return RunInfo(run_id, p, status="damaged", readonly=bool(prefix),
                           error=f"the folder name {shown!r} is not a run id (only letters, digits, '_', '.' "
                                 "and '-'); rename the folder to use it")
        try:
            return self.get(run_id)
        except Exception as e:  # a link leaving the store, a folder deleted meanwhile, ...
            return RunInfo(run_id, p, status="damaged", readonly=bool(prefix),
                           error=(str(e).splitlines() or [type(e).__name__])[0])

    def metrics(self, run_id: str) -> list[dict]:
        """Metric rows; a half-written last line (a crash mid-append) and any line that is
        not a well-typed row object are skipped; an unreadable file gives no rows."""
        rows = []
        try:
            with open(self.path(run_id) / "metrics.jsonl", "rb") as f:
                for line in f:
                    try:
                        row = json.loads(line.decode("utf-8"))
                    except (ValueError, RecursionError):
                        continue
                    if _row_ok(row):
                        rows.append(row)
        except (OSError, RunError):
            pass
        return rows

    def load_model(self, run_id: str, device: str | torch.device = "cpu"):
        """Rebuild a run's model (eval mode, float32) and its extras' state dicts."""
        path = self.path(run_id) / "model.pt"
        if not path.parent.is_dir():
            raise RunError(f"no run named {run_id!r}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            model = models.build(payload["arch"], payload["in_shape"], payload["num_classes"])
            model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                   for k, v in payload["state_dict"].items()})
            extras = payload.get("extras", {})
            if not isinstance(extras, dict):
                raise TypeError("extras is not a dict")
        except FileNotFoundError as e:
            raise RunError(f"run {run_id} has no model.pt (it never finished an epoch)") from e
        except Exception as e:  # unpickling, key, type or shape errors all mean a damaged checkpoint
            raise RunError(f"run {run_id}: model.pt is damaged and cannot be loaded ({type(e).__name__})") from e
        return model.to(device).eval(), extras

    # ---------------------------------------------------------------- derived arrays
    def write_array(self, run_id: str, name: str, array: np.ndarray) -> None:
        """Keep an array computed from a run (e.g. its test-set logits) in its folder, so it is
        computed once; a shipped run keeps what it was shipped with, and where nothing can be
        written (a read-only or full disk) it is simply computed again next time."""
        if not self._is_readonly(run_id):
            buf = io.BytesIO()
            np.save(buf, array)
            try:
                _atomic_write(self.path(run_id) / name, buf.getvalue())
            except RunError:
                pass

    def read_array(self, run_id: str, name: str) -> np.ndarray | None:
        """The array, or None when it is missing, damaged, or older than the run's checkpoint
        (computed from an earlier epoch; shipped runs never change)."""
        path = self.path(run_id) / name
        try:
            if not self._is_readonly(run_id) and path.stat().st_mtime < (path.parent / "model.pt").stat().st_mtime:
                return None
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # missing, unreadable or damaged: compute it again
            return None

    # ---------------------------------------------------------------- image sets
    def save_images(self, run_id: str, **tensors: torch.Tensor) -> None:
        """Write a run's image set (uint8 images plus per-image tensors) atomically, so a page
        polling it mid-job reads the previous version or the new one, never half a file."""
        self.save_blob(run_id, "images.pt", {k: v.detach().cpu() for k, v in tensors.items()})

    def images(self, run_id: str) -> dict[str, torch.Tensor]:
        """The tensors ``save_images`` wrote: uint8 ``images`` (N, C, H, W) and, one per image,
        ``targets`` and ``confidence``; RunError when the run has none or they are damaged."""
        path = self.path(run_id) / "images.pt"
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
            x = found["images"]
            if x.dtype != torch.uint8 or x.dim() != 4 or any(len(found[k]) != len(x) for k in IMAGE_SET):
                raise ValueError("not an image set")
        except FileNotFoundError as e:
            raise RunError(f"run {run_id} has no image set (images.pt)") from e
        except Exception as e:  # unpickling, key, type or shape errors all mean a damaged file
            raise RunError(f"run {run_id}: images.pt is damaged ({type(e).__name__})") from e
        return found


def _readonly_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
