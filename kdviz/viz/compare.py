"""Figures of a method comparison: learning curves, loss terms, reliability, per-class accuracy.

Inputs are the long-form frames and dicts of ``kdviz.compare``; every method
keeps its colour from ``METHOD_COLORS``, and seeds of one method share a
legend entry (click it to hide them all).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import DIVERGING, SEQUENTIAL, layout, method_color
from .training import TERM_LABELS

LEGEND_BELOW = dict(legend=dict(orientation="h", yanchor="top", y=-0.22), margin=dict(b=110))


def _legend_below(fig: go.Figure) -> go.Figure:
    """A horizontal legend under the x-axis title (long method names do not fit beside a plot)."""
    return fig.update_layout(**LEGEND_BELOW)


def _runs_by_method(frame: pd.DataFrame, names: dict[str, str]):
    """(method, run, rows, legend name, whether to show it) per run: one legend entry per method."""
    shown = set()
    for (method, run), rows in frame.groupby(["method", "run"], sort=False):
        yield method, run, rows, names.get(method, method), method not in shown
        shown.add(method)


def accuracy_curves(epochs: pd.DataFrame, names: dict[str, str]) -> go.Figure:
    """Test accuracy after every epoch, one line per run; epochs are counted across
    stages, so FitNets' and FSP's feature stage comes first (chance accuracy there:
    the classifier head has not been trained yet)."""
    fig = go.Figure()
    for method, run, rows, name, first in _runs_by_method(epochs, names):
        fig.add_trace(go.Scatter(
            x=rows.epoch, y=100 * rows.test_acc, mode="lines+markers", name=name, legendgroup=method,
            showlegend=first, line=dict(color=method_color(method)),
            customdata=np.stack([rows.stage, rows.seed.astype(str)], axis=1),
            hovertemplate="%{customdata[0]} · seed %{customdata[1]}<br>epoch %{x}: %{y:.2f} %<extra>"
                          + name + "</extra>"))
    return _legend_below(layout(fig, "Test accuracy per epoch", height=420, xaxis_title="epoch (all stages)",
                                yaxis_title="test accuracy (%)", xaxis_dtick=1))


def loss_curves(steps: pd.DataFrame, names: dict[str, str]) -> go.Figure:
    """One panel per loss term (unweighted, log scale), every method that uses it overlaid."""
    terms = [t for t in TERM_LABELS if t in set(steps.term)]
    fig = make_subplots(rows=1, cols=max(len(terms), 1), subplot_titles=[TERM_LABELS[t] for t in terms])
    shown = set()
    for col, term in enumerate(terms, 1):
        for method, run, rows, name, _ in _runs_by_method(steps[steps.term == term], names):
            fig.add_trace(go.Scatter(x=rows.step, y=rows.value, mode="lines+markers", name=name, legendgroup=method,
                                     showlegend=method not in shown, line=dict(color=method_color(method), width=1.5),
                                     marker=dict(size=4),
                                     hovertemplate=f"{name}<br>step %{{x}}: %{{y:.4g}}<extra>{TERM_LABELS[term]}</extra>"),
                          row=1, col=col)
            shown.add(method)
        fig.update_yaxes(type="log", dtick=1, row=1, col=col)
        fig.update_xaxes(title_text="training step", row=1, col=col)
    fig.update_yaxes(title_text="loss (log scale)", row=1, col=1)
    return _legend_below(layout(fig, "Loss terms per step", height=420))


def reliability_diagram(bins: dict[str, dict], names: dict[str, str]) -> go.Figure:
    """Accuracy against mean confidence per confidence bin (Guo et al. 2017, fig. 1):
    points below the diagonal are over-confident, above it under-confident."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                               line=dict(color="#bbbbbb", dash="dash")))
    for method, b in bins.items():
        filled = b["count"] > 0
        fig.add_trace(go.Scatter(
            x=b["confidence"][filled], y=b["accuracy"][filled], mode="lines+markers", name=names.get(method, method),
            line=dict(color=method_color(method), dash="dot" if method == "teacher" else "solid"),
            customdata=b["count"][filled],
            hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>%{customdata:.0f} images<extra></extra>"))
    return _legend_below(layout(fig, "Reliability diagram (test set)", height=480, xaxis_title="mean confidence in bin",
                                yaxis_title="accuracy in bin", xaxis_range=[0, 1.02], yaxis_range=[0, 1.02]))


def per_class_heatmap(per_class: pd.DataFrame, names: dict[str, str], relative_to: str | None = None) -> go.Figure:
    """Method x class test accuracy (%); with ``relative_to`` (e.g. "plain") the change against
    that method's row in percentage points, red where a method helps, blue where it hurts."""
    z = per_class - per_class.loc[relative_to] if relative_to else per_class
    signed = relative_to is not None
    limit = (float(np.nanmax(np.abs(z.values))) or 1.0) if signed else None
    fig = go.Figure(go.Heatmap(
        z=z.values, x=list(z.columns), y=[names.get(m, m) for m in z.index], text=np.round(z.values, 1),
        texttemplate="%{text}", colorscale=DIVERGING if signed else SEQUENTIAL,
        zmid=0 if signed else None, zmin=-limit if signed else None, zmax=limit if signed else None,
        colorbar=dict(title="Δ (pp)" if signed else "acc. (%)"),
        hovertemplate="%{y}<br>class %{x}: %{z:.2f}" + (" pp" if signed else " %") + "<extra></extra>"))
    title = f"Per-class accuracy, change vs {names.get(relative_to, relative_to)}" if signed else "Per-class accuracy"
    return layout(fig, title, height=120 + 40 * len(z), xaxis_title="true class", yaxis_autorange="reversed")


def generation_curves(generations: pd.DataFrame) -> go.Figure:
    """Born-again networks: test accuracy of each generation, one line per group."""
    fig = go.Figure()
    for group, rows in generations.groupby("group", sort=False):
        fig.add_trace(go.Scatter(x=rows["generation"], y=rows["test accuracy (%)"], mode="lines+markers",
                                 name=group, line=dict(color=method_color("bornagain")), text=rows["run"],
                                 hovertemplate="generation %{x}: %{y:.2f} %<br>%{text}<extra></extra>"))
    fig.update_xaxes(title="generation (0 = trained on labels only)", dtick=1)
    fig.update_yaxes(title="test accuracy (%)")
    return _legend_below(layout(fig, "Born-again networks: accuracy by generation"))


def takd_chain(chains: pd.DataFrame) -> go.Figure:
    """TAKD (Mirzadeh et al. 2020): test accuracy down the chain teacher → assistant → student, one line
    per TAKD run, and a diamond for the plain KD student of the same size distilled straight from the teacher."""
    fig = go.Figure()
    steps = ["teacher", "assistant", "student"]
    for k, row in enumerate(chains.itertuples(index=False)):
        archs = [row.teacher, row.assistant, row.student]
        fig.add_trace(go.Scatter(
            x=[f"{s}<br>({a})" for s, a in zip(steps, archs)],
            y=[row[4], row[5], row[6]], mode="lines+markers+text", name="via the assistant (TAKD)",
            legendgroup="takd", showlegend=k == 0, line=dict(color=method_color("takd")), marker=dict(size=10),
            text=[f"{v:.2f} %" for v in row[4:7]], textposition="top center", customdata=[row.run] * 3,
            hovertemplate="%{x}: %{y:.2f} %<br>%{customdata}<extra></extra>"))
        if row[7] == row[7]:  # a direct KD student exists
            fig.add_trace(go.Scatter(
                x=[f"student<br>({row.student})"], y=[row[7]], mode="markers+text", name="KD straight from the teacher",
                legendgroup="kd", showlegend=k == 0, marker=dict(symbol="diamond", size=13, color=method_color("kd")),
                text=[f"{row[7]:.2f} %"], textposition="bottom center",
                hovertemplate="KD student, no assistant: %{y:.2f} %<extra></extra>"))
    fig.update_yaxes(title="test accuracy (%)")
    return _legend_below(layout(fig, "Teacher → assistant → student", height=400))


def inner_accuracy_bars(inner: pd.DataFrame) -> go.Figure:
    """The test accuracy of every part of a run: each BYOT exit and the deepest, a mean teacher's
    moving average and its student. One group of bars per run, in its method's colour."""
    fig = go.Figure()
    for run, rows in inner.groupby("run", sort=False):
        method = rows.method.iloc[0]
        fig.add_trace(go.Bar(x=rows.part, y=rows["test accuracy (%)"], name=run, marker_color=method_color(method),
                             text=[f"{v:.2f}" for v in rows["test accuracy (%)"]], textposition="outside",
                             hovertemplate="%{x}: %{y:.2f} %<extra>" + run + "</extra>"))
    low = float(inner["test accuracy (%)"].min()) if len(inner) else 0.0
    fig.update_yaxes(title="test accuracy (%)", range=[max(0.0, low - 5), 100])
    fig.update_xaxes(title="part of the run", type="category")
    return _legend_below(layout(fig, "Exits of a self-distilled network, a mean teacher and its student",
                                height=400, barmode="group"))
