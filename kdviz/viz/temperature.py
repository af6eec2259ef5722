"""Figures for the Temperature page: soft targets at T, and the gradient of the soft term."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import METHOD_COLORS, layout, temperature_axis
from .dark import image_trace

TEACHER = METHOD_COLORS["teacher"]
CURRENT_T = "#d62728"  # the slider's temperature, marked on the T curves


def image_captions(indices, labels, predicted, classes: list[str]) -> list[str]:
    """'#index: true class', plus '→ guess ✗' when the model gets it wrong."""
    return [f"#{i}: {classes[y]}" + ("" if p == y else f" → {classes[p]} ✗")
            for i, y, p in zip(np.asarray(indices), np.asarray(labels), np.asarray(predicted))]


def image_strip(images, captions: list[str], selected: int | None = None) -> go.Figure:
    """A row of test images, each captioned on narrow lines; the selected one's caption is marked ▶."""
    n = len(images)
    lines = [c.replace(": ", "<br>").replace(" → ", "<br>→ ") for c in captions]
    fig = make_subplots(1, n, horizontal_spacing=0.01,
                        subplot_titles=[("▶ " if k == selected else "") + c for k, c in enumerate(lines)])
    for k, image in enumerate(images):
        fig.add_trace(image_trace(image), 1, k + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=12)
    return layout(fig, height=190).update_layout(margin=dict(l=10, r=10, t=60, b=5))


def _probability_axis(fig: go.Figure, log_y: bool, **where) -> None:
    if log_y:
        fig.update_yaxes(type="log", range=[-6, 0], title_text="probability (log scale)", **where)
    else:
        fig.update_yaxes(range=[0, 1], title_text="probability", **where)


def probability_bars(series: list[tuple[str, np.ndarray, str]], classes: list[str], T: float,
                     log_y: bool = False, title: str | None = None) -> go.Figure:
    """Soft targets at T as bars; ``series`` is (name, probabilities, colour), grouped side by side."""
    fig = go.Figure([go.Bar(x=classes, y=p, name=name, marker_color=color,
                            hovertemplate=f"{name}: " + "%{x}: %{y:.4f}<extra></extra>")
                     for name, p, color in series])
    _probability_axis(fig, log_y)
    fig.update_xaxes(title_text="class", type="category")
    return layout(fig, title or f"Soft targets at T = {T:g}", barmode="group", showlegend=len(series) > 1,
                  legend=dict(orientation="h", y=-0.25, x=0))


def logit_bars(logits: np.ndarray, classes: list[str]) -> go.Figure:
    """The logits z themselves: the softmax at T divides these by T."""
    fig = go.Figure(go.Bar(x=classes, y=logits, marker_color=TEACHER,
                           hovertemplate="%{x}: v = %{y:.2f}<extra></extra>"))
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="logit v (no unit)")
    return layout(fig, "Teacher's logits v")


def small_multiples(probs: np.ndarray, temperatures, classes: list[str], log_y: bool = False) -> go.Figure:
    """The same soft targets at several temperatures, side by side (one row of ``probs`` each)."""
    fig = make_subplots(1, len(temperatures), shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=[f"T = {T:g}" for T in temperatures])
    for k, p in enumerate(probs):
        fig.add_trace(go.Bar(x=classes, y=p, marker_color=TEACHER, showlegend=False,
                             hovertemplate="%{x}: %{y:.4f}<extra></extra>"), 1, k + 1)
    _probability_axis(fig, log_y, col=1)
    if log_y:
        fig.update_yaxes(type="log", range=[-6, 0])
    fig.update_xaxes(type="category", tickangle=-90)
    return layout(fig, height=300)


def _line(fig: go.Figure, x, y, name: str, color: str, dash: str, col: int, show: bool) -> None:
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, legendgroup=name, showlegend=show,
                             line=dict(color=color, dash=dash, width=1.5), hoverinfo="skip"), 1, col)


def temperature_curves(temperatures, entropy: np.ndarray, max_prob: np.ndarray, num_classes: int, T: float,
                       t_ratio: float, ratio_label: str) -> go.Figure:
    """Entropy (bits) and largest probability against T, with the slider's T and the ratio T marked,
    and the uniform distribution's values (the limit T → ∞) dashed."""
    temperatures = np.asarray(temperatures)
    ends = [temperatures[0], temperatures[-1]]
    max_entropy = np.log2(num_classes)
    fig = make_subplots(1, 2, subplot_titles=["Entropy of the soft targets", "Largest probability"],
                        horizontal_spacing=0.1)
    panels = ((1, entropy, max_entropy, max_entropy, " bits"), (2, max_prob, 1.0, 1 / num_classes, ""))
    for col, y, top, uniform, unit in panels:
        fig.add_trace(go.Scatter(x=temperatures, y=y, line_color=TEACHER, showlegend=False,
                                 hovertemplate="T = %{x:.3g}: %{y:.3f}" + unit + "<extra></extra>"), 1, col)
        _line(fig, ends, [uniform, uniform], "all classes equal (T → ∞)", "#999999", "dash", col, col == 1)
        _line(fig, [T, T], [0, top], f"T = {T:g} (slider)", CURRENT_T, "solid", col, col == 1)
        if np.isfinite(t_ratio) and t_ratio > 0:
            _line(fig, [t_ratio, t_ratio], [0, top], ratio_label, "#1f77b4", "dot", col, col == 1)
    temperature_axis(fig)
    fig.update_yaxes(title_text="entropy (bits)", range=[0, max_entropy * 1.05], col=1)
    fig.update_yaxes(title_text="probability", range=[0, 1.02], col=2)
    return layout(fig, height=340, legend=dict(orientation="h", y=-0.3))


def t_squared_rule(grads) -> go.Figure:
    """‖gradient of the soft term‖ against T, with and without the T² factor (log-log)."""
    hover = "T = %{x:.3g}: %{y:.3g}<extra></extra>"
    fig = go.Figure([
        go.Scatter(x=grads.temperatures, y=grads.with_t2, name="with T² (what KD trains with)",
                   line_color="#1f77b4", hovertemplate=hover),
        go.Scatter(x=grads.temperatures, y=grads.without_t2, name="without T²: shrinks as 1/T²",
                   line=dict(color="#7f7f7f", dash="dash"), hovertemplate=hover),
    ])
    temperature_axis(fig)
    fig.update_yaxes(type="log", title_text="‖gradient‖ w.r.t. student logits z")
    return layout(fig, "The T² rule: gradient of the soft term", height=440,
                  legend=dict(orientation="h", y=-0.2))


def logit_matching_limit(grads) -> go.Figure:
    """The exact KD gradient (no T²) meeting (z_s − z_t)/(N·T²) as T grows (top), and their relative gap."""
    hover = "T = %{x:.3g}: %{y:.3g}<extra></extra>"
    fig = make_subplots(2, 1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4])
    fig.add_trace(go.Scatter(x=grads.temperatures, y=grads.without_t2, name="exact ∂C/∂z = (q − p)/T",
                             line_color="#1f77b4", hovertemplate=hover), 1, 1)
    fig.add_trace(go.Scatter(x=grads.temperatures, y=grads.logit_matching, name="limit (z − v)/(N·T²)",
                             line=dict(color="#ff7f0e", dash="dash"), hovertemplate=hover), 1, 1)
    fig.add_trace(go.Scatter(x=grads.temperatures, y=grads.relative_error, name="relative difference",
                             line_color="#111111", showlegend=False, hovertemplate=hover), 2, 1)
    temperature_axis(fig, title="")
    fig.update_xaxes(title_text="temperature T (log scale)", row=2, col=1)
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="‖gradient‖", row=1, col=1)
    fig.update_yaxes(title_text="‖exact − limit‖ / ‖limit‖", row=2, col=1)
    return layout(fig, "High T: KD becomes logit matching", height=440, legend=dict(orientation="h", y=-0.2))
