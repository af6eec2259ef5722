"""Training curves of a job (loss components per step, accuracy per epoch) and the runs table.

Input is a job's metric history: the trainer's rows (``kind`` "step" or
"epoch"), each tagged with the job stage it came from (``job_stage``, e.g.
"teacher" then "student: KD"). Steps and epochs restart in every job stage,
so the x axes count them across the whole job, and a dotted line marks where
a new stage (job stage or trainer stage, e.g. FitNets' hint stage) begins.
Legends name a job stage by its first word ("teacher", "student").
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from . import layout, method_color, METHOD_COLORS

TERM_LABELS = {"ce": "CE (hard labels)", "kd": "KD: T²·KL(teacher‖student)", "hint": "hint MSE (FitNets)",
               "at": "attention transfer", "fsp": "FSP matrices", "rkd": "RKD: distances and angles",
               "dml": "mutual learning: CE + KL to peers", "dkd": "DKD: T²(α·TCKD + β·NCKD), warm-up",
               "at_grad": "gradient AT: ½‖J_S − J_T‖²", "darkrank": "DarkRank: ranking NLL",
               "byot": "BYOT exits: CE + KD + hint", "consistency": "consistency: softmax MSE, ramped"}
TERM_COLORS = {"ce": METHOD_COLORS["plain"], "kd": METHOD_COLORS["kd"], "hint": METHOD_COLORS["fitnet"],
               "at": METHOD_COLORS["at"], "fsp": METHOD_COLORS["fsp"], "rkd": METHOD_COLORS["rkd"],
               "dml": METHOD_COLORS["dml"], "dkd": METHOD_COLORS["dkd"], "at_grad": METHOD_COLORS["at_grad"],
               "darkrank": METHOD_COLORS["darkrank"], "byot": METHOD_COLORS["byot"],
               "consistency": METHOD_COLORS["meanteacher"]}
INNER_DASH = ("dot", "dashdot", "longdash", "longdashdot")  # the accuracies of a run's parts (exits, EMA teacher)


def inner_keys(rows) -> list[str]:
    """The per-part test accuracies the rows carry besides the run's own (``exit1_test_acc``, ``teacher_test_acc``)."""
    return list(dict.fromkeys(k for row in rows for k in row if k.endswith("_test_acc") and k != "test_acc"))


def inner_label(key: str) -> str:
    """'exit1_test_acc' -> 'exit 1', 'teacher_test_acc' -> 'EMA teacher' (how a page names a run's parts)."""
    return key.removesuffix("_test_acc").replace("exit", "exit ").replace("teacher", "EMA teacher")


def _segments(history, kind: str):
    """Rows of ``kind`` ("step"/"epoch") grouped by job stage, each with a job-wide x:
    epochs are counted, steps continue where the previous run of the job ended."""
    segments, offset, last, n = {}, 0, 0, 0
    for row in history:
        if row.get("kind") != kind:
            continue
        n += 1
        if kind == "step":
            if row["step"] <= last:  # a new run of the job started counting again
                offset += last
            last = row["step"]
        segments.setdefault(row.get("job_stage", ""), []).append((offset + last if kind == "step" else n, row))
    return segments


def _short(job_stage: str) -> str:
    """'student: FitNets (hint, then KD)' -> 'student' (the method is in the job's label)."""
    return job_stage.split(":")[0]


def _stage_lines(fig: go.Figure, segments) -> None:
    """A dotted line between the last point of a stage and the first of the next, named after the new one."""
    previous = None  # (x, job stage, trainer stage)
    for name, points in segments.items():
        for x, row in points:
            stage = row.get("stage", "")
            if previous and (name, stage) != previous[1:]:
                text = stage if name == previous[1] else " · ".join(filter(None, (_short(name), stage)))
                fig.add_vline(x=(previous[0] + x) / 2, line_dash="dot", line_color="#999", annotation_text=text,
                              annotation_position="top right")
            previous = (x, name, stage)


def _color(job_stage: str, method: str) -> str:
    return METHOD_COLORS["teacher"] if job_stage == "teacher" else method_color(method)


def loss_figure(history, method: str = "plain") -> go.Figure:
    """Each loss term (unweighted) and the weighted total per logged step, log scale."""
    fig = go.Figure()
    segments = _segments(history, "step")
    many = len(segments) > 1
    for name, points in segments.items():
        xs = [x for x, _ in points]
        terms = [t for t in TERM_LABELS if any(t in row for _, row in points)]
        for term in terms:
            fig.add_trace(go.Scatter(x=xs, y=[row.get(term) for _, row in points], mode="lines",
                                     name=f"{_short(name)}: {TERM_LABELS[term]}" if many else TERM_LABELS[term],
                                     line=dict(color=TERM_COLORS[term], width=1.5,
                                               dash="dot" if name == "teacher" else "solid")))
        if len(terms) > 1:
            fig.add_trace(go.Scatter(x=xs, y=[row["loss"] for _, row in points], mode="lines",
                                     name=f"{_short(name)}: weighted total" if many else "weighted total",
                                     line=dict(color=_color(name, method), width=3)))
    _stage_lines(fig, segments)
    layout(fig, "Loss per step", xaxis_title="training step (whole job)", yaxis_title="loss (log scale)",
           yaxis_type="log", yaxis_dtick=1, legend=dict(orientation="h", y=-0.25))
    return fig


def accuracy_figure(history, method: str = "plain") -> go.Figure:
    """Train and test accuracy after every epoch (train accuracy is measured with
    dropout and augmentation on, so it can sit below test accuracy), and the test
    accuracy of the run's parts when it logs them: every BYOT exit, a mean teacher."""
    fig = go.Figure()
    segments = _segments(history, "epoch")
    for name, points in segments.items():
        xs = [x for x, _ in points]
        color = _color(name, method)
        prefix = f"{_short(name)}: " if len(segments) > 1 else ""
        inner = inner_keys(row for _, row in points)
        for key, label, dash in (("test_acc", "test", "solid"), ("train_acc", "train (during the epoch)", "dash"),
                                 *((k, f"{inner_label(k)}: test", d) for k, d in zip(inner, INNER_DASH))):
            fig.add_trace(go.Scatter(x=xs, y=[100 * row[key] for _, row in points], mode="lines+markers",
                                     name=f"{prefix}{label}", line=dict(color=color, dash=dash)))
    _stage_lines(fig, segments)
    if not segments:
        fig.add_annotation(text="appears after the first epoch", x=0.5, y=0.5, xref="paper", yref="paper",
                           showarrow=False, font=dict(color="#999"))
    layout(fig, "Accuracy per epoch", xaxis_title="epoch (whole job)", yaxis_title="accuracy (%)",
           yaxis_range=[0, 100], xaxis_dtick=1, legend=dict(orientation="h", y=-0.25))
    return fig


ALPHA_METHODS = ("kd", "fitnet", "kd_at", "ensemble", "bornagain", "takd")  # loss (1 − alpha)·CE + alpha·T²·KL
T_METHODS = (*ALPHA_METHODS, "dkd", "byot")  # soft targets at T, weighted otherwise


def runs_table(runs) -> pd.DataFrame:
    """One row per stored run (``RunInfo``), newest first, for the Training lab's table."""
    models = {r.id: r.config.get("model", "?") for r in runs}
    rows = []
    for r in runs:
        c, s = r.config, r.summary
        method = c.get("method", "plain")
        acc = s.get("test_acc")
        rows.append({
            "run": r.id, "status": r.status, "dataset": c.get("dataset"), "student / model": c.get("model"),
            "teacher": models.get(c.get("teacher"), c.get("teacher")) if c.get("teacher") else None,
            "method": method, "T": c.get("T") if method in T_METHODS else None,
            "alpha": c.get("alpha") if method in ALPHA_METHODS else None,
            "epochs": c.get("epochs"), "train images": s.get("train_images"),
            "test acc (%)": None if acc is None else round(100 * acc, 2), "test errors": s.get("test_errors"),
            "duration (s)": None if s.get("train_time_s") is None else round(s["train_time_s"], 1),
            "note": r.error or r.reason,
        })
    return pd.DataFrame(rows)
