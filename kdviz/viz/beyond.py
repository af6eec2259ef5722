"""Figures of the experiments beyond the training data: data-free synthesis curves,
privileged vs label-only students, and students distilled through different transfer sets."""
from __future__ import annotations

import plotly.graph_objects as go

from . import layout, method_color

SYNTHESIS_TERMS = {"ce": "CE to the target classes", "bn": "BatchNorm statistics (all layers)",
                   "tv": "total variation", "l2": "l2 prior", "competition": "competition: 1 − JS"}


def synthesis_curves(rows: list[dict]) -> go.Figure:
    """Each DeepInversion loss term (unweighted) per logged step; batches of images follow one another."""
    rows = [r for r in rows if r.get("kind") == "synthesis"]
    fig = go.Figure()
    for term, name in SYNTHESIS_TERMS.items():
        if any(term in r for r in rows):
            fig.add_trace(go.Scatter(x=[r["step"] for r in rows], y=[r.get(term) for r in rows], mode="lines",
                                     name=name))
    starts = [r["step"] for a, r in zip(rows, rows[1:]) if r["batch"] != a["batch"]]
    for x in starts:
        fig.add_vline(x=x, line_dash="dot", line_color="#999")
    return layout(fig, "Synthesis losses (a dotted line: the next batch of images starts from noise)",
                  xaxis_title="optimisation step", yaxis_title="loss (log scale)", yaxis_type="log",
                  legend=dict(orientation="h", y=-0.25))


def privileged_bars(teacher: dict[str, float], students: dict[str, float], view_label: str) -> go.Figure:
    """Test accuracy of the teacher on clean and degraded images and of the two students
    (which only ever see the degraded view). ``students``: {"labels": acc, "privileged": acc}."""
    bars = [("teacher on clean images", teacher.get("clean"), method_color("teacher")),
            ("teacher on the degraded view", teacher.get("degraded"), "#777777"),
            ("student, labels only", students.get("labels"), method_color("plain")),
            ("student + privileged teacher", students.get("privileged"), method_color("privileged"))]
    bars = [b for b in bars if b[1] is not None]
    fig = go.Figure(go.Bar(x=[b[0] for b in bars], y=[100 * b[1] for b in bars], marker_color=[b[2] for b in bars],
                           text=[f"{100 * b[1]:.1f} %" for b in bars], textposition="outside"))
    return layout(fig, f"MNIST test accuracy; the students see only: {view_label}", yaxis_title="test accuracy (%)",
                  yaxis_range=[0, 105])


def transfer_bars(rows: list[dict], plain: float | None, teacher: float | None) -> go.Figure:
    """One bar per transfer set (``transfer.bars``), with the plain student's and the teacher's
    accuracy as lines across."""
    fig = go.Figure(go.Bar(x=[r["name"] for r in rows], y=[100 * r["test_acc"] for r in rows],
                           marker_color=method_color("kd"), text=[f"{100 * r['test_acc']:.1f} %" for r in rows],
                           textposition="outside",
                           customdata=[r["images"] for r in rows],
                           hovertemplate="%{x}<br>%{y:.2f} % on MNIST test<br>%{customdata:,} transfer images"
                                         "<extra></extra>"))
    for value, name, color, pos in ((teacher, "teacher", method_color("teacher"), "top left"),
                                    (plain, "plain student (MNIST labels)", method_color("plain"), "bottom left")):
        if value is not None:
            fig.add_hline(y=100 * value, line=dict(color=color, dash="dash"),
                          annotation_text=f"{name}: {100 * value:.1f} %", annotation_position=pos)
    return layout(fig, "Students distilled from one MNIST teacher through different transfer sets, "
                       "tested on MNIST", yaxis_title="MNIST test accuracy (%)", yaxis_range=[0, 105])
