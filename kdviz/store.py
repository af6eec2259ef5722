"""Run store: one folder per run, written atomically, readable after a crash.

``runs/<id>/`` holds ``config.json``, ``status.json`` (status, pid, reason),
``metrics.jsonl`` (appended as training goes), ``model.pt`` (state dict plus
what rebuilds the model), ``summary.json`` (final metrics) and, for a run that
made its own training images (data-free distillation), ``images.pt``. Read-only
roots (the shipped ``assets/pretrained``) appear as runs named ``<prefix>/<name>``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import models

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "pretrained"
FINAL = ("done", "failed", "cancelled")


class RunError(RuntimeError):
    """A run folder is missing or damaged; the message says which file."""


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


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    _atomic_write(Path(path), lambda f: f.write(json.dumps(obj, indent=1, default=str).encode()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None, readonly: dict[str, Path] | None = None):
        self.root = Path(root or os.environ.get("KDVIZ_RUNS") or "runs")
        if readonly is None:  # $KDVIZ_PRETRAINED names another shipped set; empty hides it
            shipped = os.environ.get("KDVIZ_PRETRAINED", str(ASSETS))
            readonly = {"pretrained": Path(shipped)} if shipped else {}
        self.readonly = readonly
        self._lock = threading.Lock()  # serialises appends from several job threads

    # ---------------------------------------------------------------- paths
    def path(self, run_id: str) -> Path:
        prefix, _, rest = run_id.partition("/")
        if rest and prefix in self.readonly:
            return self.readonly[prefix] / rest
        if not re.fullmatch(r"[\w.\-]+", run_id):
            raise RunError(f"no run named {run_id!r}")
        return self.root / run_id

    # ---------------------------------------------------------------- writing
    def create(self, config: dict) -> str:
        slug = "-".join(str(config.get(k, "")) for k in ("dataset", "model", "method") if config.get(k))
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{uuid.uuid4().hex[:4]}"
        self.write_config(run_id, config)
        self.set_status(run_id, "running")
        return run_id

    def write_config(self, run_id: str, config: dict) -> None:
        write_json(self.path(run_id) / "config.json", config)

    def set_status(self, run_id: str, status: str, reason: str = "") -> None:
        write_json(self.path(run_id) / "status.json",
                   {"status": status, "pid": os.getpid(), "time": time.time(), "reason": reason})

    def append_metric(self, run_id: str, row: dict) -> None:
        line = json.dumps(row, default=float) + "\n"
        with self._lock, open(self.path(run_id) / "metrics.jsonl", "a") as f:
            f.write(line)

    def save_model(self, run_id: str, model: models.TapModel, extras: torch.nn.Module | None = None,
                   half: bool = False) -> None:
        cast = (lambda t: t.half() if t.is_floating_point() else t) if half else (lambda t: t)
        payload = {
            "arch": model.arch, "in_shape": list(model.in_shape), "num_classes": model.head.out_features,
            "state_dict": {k: cast(v.detach().cpu()) for k, v in model.state_dict().items()},
            "extras": {k: {n: cast(t.detach().cpu()) for n, t in m.state_dict().items()}
                       for k, m in (extras or {}).items()},
        }
        _atomic_write(self.path(run_id) / "model.pt", lambda f: torch.save(payload, f))

    def finish(self, run_id: str, status: str, summary: dict | None = None, reason: str = "") -> None:
        if summary is not None:
            write_json(self.path(run_id) / "summary.json", summary)
        self.set_status(run_id, status, reason)

    def delete(self, run_id: str) -> None:
        path = self.path(run_id)
        if self._is_readonly(run_id):
            raise RunError(f"{run_id} is a shipped pretrained run and cannot be deleted")
        shutil.rmtree(path, ignore_errors=True)

    # ---------------------------------------------------------------- reading
    def _is_readonly(self, run_id: str) -> bool:
        return run_id.partition("/")[0] in self.readonly and "/" in run_id

    def get(self, run_id: str) -> RunInfo:
        """Read a run's small files; a damaged folder gives a RunInfo with ``error`` set."""
        path = self.path(run_id)
        info = RunInfo(run_id, path, readonly=self._is_readonly(run_id))
        if not path.is_dir():
            raise RunError(f"no run named {run_id!r}")
        try:
            info.config = json.loads((path / "config.json").read_text())
        except FileNotFoundError:
            info.error = "config.json is missing"
        except (json.JSONDecodeError, UnicodeDecodeError):
            info.error = "config.json is damaged"
        try:
            st = json.loads((path / "status.json").read_text())
            info.status, info.reason, info.started = st["status"], st.get("reason", ""), st.get("time", 0.0)
            if info.status in ("running", "queued") and not _pid_alive(st.get("pid", -1)):
                info.status, info.reason = "interrupted", "the app stopped while this run was training"
        except FileNotFoundError:  # shipped runs have none; a new run gets it right after its config
            info.status = "done" if info.readonly else "starting"
        except (json.JSONDecodeError, KeyError):
            info.status = "unknown"
        try:
            info.summary = json.loads((path / "summary.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        if info.error:
            info.status = "damaged"
        return info

    def list(self) -> list[RunInfo]:
        """Every run, newest first; damaged folders are listed with their error, never raise."""
        runs = []
        for prefix, root in [("", self.root), *self.readonly.items()]:
            if not root.is_dir():
                continue
            for p in root.iterdir():
                if p.is_dir() and not p.name.startswith("."):
                    runs.append(self.get(f"{prefix}/{p.name}" if prefix else p.name))
        return sorted(runs, key=lambda r: (r.readonly, -r.started, r.id))

    def metrics(self, run_id: str) -> list[dict]:
        """Metric rows; a half-written last line (a crash mid-append) is skipped."""
        rows = []
        try:
            with open(self.path(run_id) / "metrics.jsonl") as f:
                for line in f:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        except FileNotFoundError:
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
        except FileNotFoundError as e:
            raise RunError(f"run {run_id} has no model.pt (it never finished an epoch)") from e
        except Exception as e:  # unpickling, key or shape errors all mean a damaged checkpoint
            raise RunError(f"run {run_id}: model.pt is damaged and cannot be loaded ({type(e).__name__})") from e
        return model.to(device).eval(), payload.get("extras", {})

    # ---------------------------------------------------------------- image sets
    def save_images(self, run_id: str, **tensors: torch.Tensor) -> None:
        """Write a run's image set (uint8 images plus per-image tensors) atomically, so a page
        polling it mid-job reads the previous version or the new one, never half a file."""
        payload = {k: v.detach().cpu() for k, v in tensors.items()}
        _atomic_write(self.path(run_id) / "images.pt", lambda f: torch.save(payload, f))

    def images(self, run_id: str) -> dict[str, torch.Tensor]:
        """The tensors ``save_images`` wrote; RunError when the run has none or they are damaged."""
        path = self.path(run_id) / "images.pt"
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as e:
            raise RunError(f"run {run_id} has no image set (images.pt)") from e
        except Exception as e:  # unpickling or zip errors all mean a damaged file
            raise RunError(f"run {run_id}: images.pt is damaged ({type(e).__name__})") from e
