"""Figures of the Hinton 2015 replay: errors against a bias shift, where the
unseen digits went, and the 30-unit students' errors against temperature."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from . import SEQUENTIAL, layout, method_color


def shift_curve(shifts, errors, class_errors, digits: str, plural: str, n_test: int, n_class: int,
                paper_shift: float, best_shift: float, chosen_shift: float) -> go.Figure:
    """Test errors and errors on the shifted digits (``digits`` "7 and 8", ``plural``
    "7s and 8s") as the bias shift moves; the paper's, the best and the slider's shifts are marked."""
    kd = method_color("kd")  # every curve here is the distilled student's
    fig = go.Figure([
        go.Scatter(x=shifts, y=errors, name=f"all test errors (of {n_test:,})", line=dict(color=kd)),
        go.Scatter(x=shifts, y=class_errors, name=f"{plural} wrong (of {n_class:,})",
                   line=dict(color=kd, dash="dash")),
    ])
    for x, text, dash, pos in ((paper_shift, f"paper {paper_shift:+.1f}", "dot", "top left"),
                               (best_shift, f"best {best_shift:+.1f}", "dash", "top right"),
                               (chosen_shift, f"slider {chosen_shift:+.1f}", "solid", "bottom right")):
        fig.add_vline(x=x, line=dict(color="#444444", dash=dash, width=1), annotation_text=text,
                      annotation_position=pos)
    # Far shifts make thousands of errors; fit the axis to the marked shifts' range instead.
    shifts, marked = np.asarray(shifts), (0.0, paper_shift, best_shift, chosen_shift)
    top = max(np.asarray(errors)[np.abs(shifts - m).argmin()] for m in marked)
    return layout(fig, f"Errors vs shift of the output bias of {digits}", xaxis_title="bias shift (logit units)",
                  yaxis_title="errors (images)", yaxis_range=[0, 1.3 * top],
                  legend=dict(orientation="h", y=-0.25))


def confusion_rows(rows: dict[str, np.ndarray], classes: list[str], title: str) -> go.Figure:
    """Counts of predicted classes, one row per (digit, before/after) with the count in each cell."""
    labels = list(rows)
    z = np.array([rows[k] for k in labels])
    fig = go.Figure(go.Heatmap(z=z, x=classes, y=labels, colorscale=SEQUENTIAL, text=z, texttemplate="%{text}",
                               hovertemplate="%{y}<br>predicted %{x}: %{z} images<extra></extra>",
                               colorbar=dict(title="images")))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return layout(fig, title, height=120 + 45 * len(labels), xaxis_title="predicted as")


def temperature_curve(temperatures, errors, n_test: int, best_band: tuple[float, float] = (2.5, 4.0)) -> go.Figure:
    """Test errors of the 30-unit students against T, with the paper's best range shaded."""
    fig = go.Figure(go.Scatter(x=temperatures, y=errors, mode="lines+markers", name="30-unit student",
                               line=dict(color=method_color("kd"))))
    # No annotation on the band: on a log axis plotly reads an annotation's x as log10(x).
    fig.add_vrect(x0=best_band[0], x1=best_band[1], fillcolor="#bbbbbb", opacity=0.3, line_width=0)
    band = f"T {best_band[0]:g}–{best_band[1]:g}"
    return layout(fig, f"30 units per layer: test errors vs T (grey: the paper's best, {band})",
                  xaxis=dict(title="temperature T (log scale)", type="log", tickvals=list(temperatures)),
                  yaxis_title=f"test errors (of {n_test:,})")
