"""Figures for the Dark knowledge page: what a teacher thinks each class resembles."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import DIVERGING, SEQUENTIAL, layout


def image_trace(image) -> go.Image:
    """One uint8 (C, H, W) image as a plotly trace; grey images are shown as RGB."""
    img = np.asarray(image, dtype=np.uint8)
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img
    return go.Image(z=img.transpose(1, 2, 0), hoverinfo="skip")


def similarity_heatmap(similarity: np.ndarray, true_class_prob: np.ndarray, classes: list[str],
                       title: str) -> go.Figure:
    """Rows: true class; columns: where its wrong-class probability goes (each row sums to 100 %).
    The removed diagonal, the mean probability of the true class, is shown on the right."""
    off = np.where(np.eye(len(classes), dtype=bool), np.nan, similarity)
    fig = make_subplots(1, 2, column_widths=[0.9, 0.1], shared_yaxes=True, horizontal_spacing=0.03)
    fig.add_trace(go.Heatmap(z=off * 100, x=classes, y=classes, colorscale=SEQUENTIAL, zmin=0,
                             texttemplate="%{z:.0f}", colorbar=dict(title="% of wrong mass", x=1.02),
                             hovertemplate="true %{y} → %{x}: %{z:.1f} % of the wrong-class mass<extra></extra>"),
                  1, 1)
    fig.add_trace(go.Heatmap(z=true_class_prob[:, None] * 100, x=["true class"], y=classes, colorscale="Greys",
                             zmin=0, zmax=100, showscale=False, texttemplate="%{z:.0f}",
                             hovertemplate="true %{y}: mean p(true class) %{z:.1f} %<extra></extra>"), 1, 2)
    fig.update_yaxes(autorange="reversed", title_text="true class", row=1, col=1)
    fig.update_xaxes(title_text="wrong class the probability goes to", row=1, col=1)
    return layout(fig, title, height=480)


def similarity_difference(teacher: np.ndarray, student: np.ndarray, classes: list[str],
                          student_name: str) -> go.Figure:
    """The student's similarity matrix beside its difference from the teacher's (percentage points)."""
    mask = np.eye(len(classes), dtype=bool)
    diff = np.where(mask, np.nan, student - teacher) * 100
    limit = max(np.nanmax(np.abs(diff)), 1e-9)
    fig = make_subplots(1, 2, subplot_titles=[f"Student ({student_name})", "Student − teacher"],
                        horizontal_spacing=0.12)
    fig.add_trace(go.Heatmap(z=np.where(mask, np.nan, student) * 100, x=classes, y=classes, colorscale=SEQUENTIAL,
                             zmin=0, texttemplate="%{z:.0f}", colorbar=dict(title="%", x=0.44),
                             hovertemplate="true %{y} → %{x}: %{z:.1f} %<extra></extra>"), 1, 1)
    fig.add_trace(go.Heatmap(z=diff, x=classes, y=classes, colorscale=DIVERGING, zmid=0, zmin=-limit, zmax=limit,
                             texttemplate="%{z:+.0f}", colorbar=dict(title="points"),
                             hovertemplate="true %{y} → %{x}: %{z:+.1f} points<extra></extra>"), 1, 2)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="true class", col=1)
    return layout(fig, height=440)


def class_map(coords: np.ndarray, classes: list[str]) -> go.Figure:
    """Classes placed by MDS on the similarity matrix: close means often confused."""
    fig = go.Figure(go.Scatter(x=coords[:, 0], y=coords[:, 1], mode="markers+text", text=classes,
                               textposition="top center", marker=dict(size=12, color="#1f77b4"),
                               hovertemplate="%{text}<extra></extra>"))
    fig.update_xaxes(title_text="MDS 1", zeroline=False)
    fig.update_yaxes(title_text="MDS 2", zeroline=False, scaleanchor="x")
    return layout(fig, "Map of the classes (close = similar to the teacher)", height=440)


def dark_examples(images, probs: np.ndarray, labels, classes: list[str]) -> go.Figure:
    """Each image above its soft targets (T = 1), the true class dark, the others coloured."""
    n = len(probs)
    fig = make_subplots(2, n, row_heights=[0.45, 0.55], vertical_spacing=0.06, horizontal_spacing=0.02,
                        subplot_titles=[f"{classes[int(y)]}<br>{1 - p[int(y)]:.0%} elsewhere"
                                        for p, y in zip(probs, labels)])
    for k in range(n):
        y = int(labels[k])
        fig.add_trace(image_trace(images[k]), 1, k + 1)
        colors = ["#111111" if c == y else "#ff7f0e" for c in range(len(classes))]
        fig.add_trace(go.Bar(x=classes, y=probs[k], marker_color=colors, showlegend=False,
                             hovertemplate="%{x}: %{y:.4f}<extra></extra>"), 2, k + 1)
    fig.update_xaxes(visible=False, row=1)
    fig.update_yaxes(visible=False, row=1)
    fig.update_xaxes(tickangle=-90, tickfont_size=9, row=2)
    fig.update_yaxes(type="log", range=[-5, 0], showticklabels=False, row=2)
    fig.update_yaxes(showticklabels=True, title_text="probability (log)", row=2, col=1)
    fig.update_annotations(font_size=11)
    return layout(fig, height=440).update_layout(margin=dict(t=50))  # room for two-line captions


def relation_matrices(matrices: dict[str, np.ndarray], labels, classes: list[str]) -> go.Figure:
    """Side-by-side heatmaps of normalised embedding distances for one batch sorted by class
    (RKD, Park et al. 2019): dark squares on the diagonal = classes that cluster."""
    names = list(matrices)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.06)
    labels = np.asarray(labels)
    starts = [i for i in range(len(labels)) if i == 0 or labels[i] != labels[i - 1]]
    ticks = [s + (np.sum(labels == labels[s]) - 1) / 2 for s in starts]
    zmax = max(float(np.max(m)) for m in matrices.values())
    for col, name in enumerate(names, 1):
        fig.add_trace(go.Heatmap(z=matrices[name], colorscale=SEQUENTIAL, reversescale=True, zmin=0, zmax=zmax,
                                 showscale=col == len(names), colorbar=dict(title="distance ∕ mean"),
                                 hovertemplate="image %{y} ↔ %{x}: %{z:.2f}<extra></extra>"), 1, col)
        axis = dict(tickvals=ticks, ticktext=[classes[labels[s]] for s in starts], showgrid=False)
        fig.update_xaxes(axis, row=1, col=col)
        fig.update_yaxes(dict(axis, autorange="reversed", scaleanchor=f"x{col if col > 1 else ''}"), row=1, col=col)
    return layout(fig, height=420)


def dkd_bars(split: dict, T: float) -> go.Figure:
    """Decoupled KD (Zhao et al. 2022): the mean TCKD and NCKD of a teacher–student pair at T (nats,
    before T²), and NCKD as classic KD weights it, by 1 − p_target of the teacher."""
    names = ["TCKD<br>target vs rest", "NCKD<br>among the wrong classes", "(1 − p_t)·NCKD<br>NCKD inside KD"]
    values = [split["tckd"], split["nckd"], split["kd_nckd"]]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=["#1f77b4", "#ff7f0e", "#ffbb78"],
                           text=[f"{v:.3g}" for v in values], textposition="outside",
                           hovertemplate="%{x}: %{y:.4g} nats<extra></extra>"))
    fig.update_yaxes(title="mean over the test set (nats)", rangemode="tozero")
    return layout(fig, f"KD split into its two parts at T = {T:g}", height=360)


def neighbour_rankings(query, rows: dict[str, tuple], classes: list[str]) -> go.Figure:
    """DarkRank's view of one query image: its nearest images by each model's embedding, closest
    first. ``rows`` maps a model's name to (images (k, C, H, W), labels (k,), distances (k,))."""
    names = list(rows)
    k = len(next(iter(rows.values()))[1])
    titles = []
    for name in names:
        _, labels, dist = rows[name]
        titles += ["query" if name == names[0] else ""] + [f"{j + 1}. {classes[int(y)]} ({d:.2f})"
                                                            for j, (y, d) in enumerate(zip(labels, dist))]
    fig = make_subplots(len(names), k + 1, row_titles=names, subplot_titles=titles, horizontal_spacing=0.01,
                        vertical_spacing=0.12)
    for r, name in enumerate(names, 1):
        images = rows[name][0]
        if r == 1:
            fig.add_trace(image_trace(query), r, 1)
        for j in range(k):
            fig.add_trace(image_trace(images[j]), r, j + 2)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=10)
    return layout(fig, "Nearest images to the query (rank. class (distance ∕ mean))", height=90 + 130 * len(names))
