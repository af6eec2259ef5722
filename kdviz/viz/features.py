"""Figures of the "Inside the student" pages: hint maps, attention maps,
attributions and FSP matrices (training curves are ``viz.training``'s).

Maps come in as arrays (or tensors) and are drawn as images: y axis pointing
down, one pixel per unit. Signed maps use the diverging scale centred at zero.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import DIVERGING, SEQUENTIAL, layout, method_color, update_axes


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def _suffix(i: int) -> str:
    """Plotly's name suffix of the i-th subplot's axes (1-based): "", "2", "3", ..."""
    return "" if i == 1 else str(i)


def _note(fig: go.Figure, i: int, text: str) -> None:
    """A grey note in the middle of the i-th subplot, which has no heatmap."""
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, font_color="#777",
                       xref=f"x{_suffix(i)} domain", yref=f"y{_suffix(i)} domain")


def _image_axes(fig: go.Figure, n: int, square: bool = True) -> None:
    """Y pointing down, no ticks, in each of ``n`` subplots; square pixels for images
    (matrices fill their panel instead)."""
    bare = dict(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    update_axes(fig, {f"{xy}axis{_suffix(i)}": dict(bare, autorange="reversed", **(
        {"scaleanchor": f"x{_suffix(i)}"} if square else {})) if xy == "y" else bare
                      for i in range(1, n + 1) for xy in "xy"})


def _gray(image) -> go.Heatmap:
    """The input image (C, H, W uint8) as a grey heatmap, for overlays."""
    return go.Heatmap(z=_np(image).astype(float).mean(0), colorscale="gray", showscale=False, hoverinfo="skip")


# ---------------------------------------------------------------- FitNets hints

def tile(maps, order, cols: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Channels ``order`` of ``maps`` (C, H, W) tiled row by row into one image, with a
    one-pixel gap (NaN) between maps larger than a pixel; also each pixel's channel (-1 in gaps)."""
    maps = _np(maps)
    _, h, w = maps.shape
    cols = cols or math.ceil(math.sqrt(len(order)))
    rows, gap = math.ceil(len(order) / cols), int(h > 1 or w > 1)
    z = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    channel = np.full(z.shape, -1)
    for k, c in enumerate(order):
        r0, c0 = (k // cols) * (h + gap), (k % cols) * (w + gap)
        z[r0:r0 + h, c0:c0 + w] = maps[c]
        channel[r0:r0 + h, c0:c0 + w] = c
    return z, channel


def hint_tiles(hint, guided, channel_mse, n_show: int, teacher_label: str = "Teacher hint",
               student_label: str = "Student guided (after regressor)") -> go.Figure:
    """The ``n_show`` channels with the largest MSE, tiled into one heatmap per model,
    in the same order and on the same colour scale; hover shows channel and MSE."""
    mse = _np(channel_mse)
    order = np.argsort(-mse)[:n_show]
    (zt, ch), (zs, _) = tile(hint, order), tile(guided, order)
    values = np.abs(np.concatenate([zt.ravel(), zs.ravel()]))
    zmax = float(np.nanpercentile(values, 99.5)) or float(np.nanmax(values)) or 1.0  # a few hot pixels clipped
    hover = np.where(ch >= 0, mse[np.maximum(ch, 0)], np.nan)
    fig = make_subplots(1, 2, subplot_titles=(teacher_label, student_label), horizontal_spacing=0.04)
    for col, z in enumerate((zt, zs), 1):
        fig.add_trace(go.Heatmap(z=z, customdata=np.dstack([ch, hover]), colorscale=DIVERGING, zmid=0,
                                 zmin=-zmax, zmax=zmax, showscale=col == 2, colorbar=dict(title="activation"),
                                 hovertemplate="channel %{customdata[0]}<br>value %{z:.3f}"
                                               "<br>channel MSE %{customdata[1]:.4f}<extra></extra>"), 1, col)
    _image_axes(fig, 2)
    return layout(fig, f"{len(order)} of {len(mse)} channels, largest MSE first (read row by row)", height=430)


def channel_mse_bars(channel_mse, n_show: int) -> go.Figure:
    mse = _np(channel_mse)
    order = np.argsort(-mse)[:n_show]
    fig = go.Figure(go.Bar(x=[str(c) for c in order], y=mse[order], marker_color=method_color("fitnet"),
                           hovertemplate="channel %{x}<br>MSE %{y:.4f}<extra></extra>"))
    fig.update_xaxes(title="channel (sorted by MSE)", type="category")
    fig.update_yaxes(title="MSE")
    return layout(fig, "Per-channel MSE", height=280)


# ---------------------------------------------------------------- attention maps and attributions

def attention_grid(maps: dict[str, dict], image=None,
                   title: str = "Attention maps (channel mean of squared activations, L2-normalised)") -> go.Figure:
    """Rows: models (``{label: {stage: (H, W) map}}``); columns: stages, each column on one
    colour scale so models compare directly; a model without a column's stage (a BYOT exit)
    leaves its panel empty. ``image`` (C, H, W) is drawn underneath."""
    labels = list(maps)
    stages = list(dict.fromkeys(s for m in maps.values() for s in m))
    zmax = {s: max(float(_np(m[s]).max()) for m in maps.values() if s in m) for s in stages}
    fig = make_subplots(len(labels), len(stages), row_titles=labels, column_titles=stages,
                        horizontal_spacing=0.02, vertical_spacing=0.04)
    for r, label in enumerate(labels, 1):
        for c, stage in enumerate(stages, 1):
            if stage not in maps[label]:
                _note(fig, (r - 1) * len(stages) + c, "—")
                continue
            if image is not None:
                fig.add_trace(_gray(image), r, c)
            z = _np(maps[label][stage])
            fig.add_trace(go.Heatmap(z=z / (zmax[stage] or 1.0), customdata=z, coloraxis="coloraxis",
                                     opacity=0.6 if image is not None else 1.0,
                                     hovertemplate="attention %{customdata:.3f}<extra></extra>"), r, c)
    _image_axes(fig, len(labels) * len(stages))
    fig.update_layout(coloraxis=dict(colorscale=SEQUENTIAL, cmin=0, cmax=1,
                                     colorbar=dict(title="÷ largest<br>in column")))
    return layout(fig, title, height=60 + 200 * len(labels))


def at_distance_bars(distances: dict[str, dict[str, float]], methods: dict[str, str]) -> go.Figure:
    """AT distance of each student (``{label: {stage: value}}``) to the teacher, per stage."""
    fig = go.Figure([go.Bar(name=label, x=list(d), y=list(d.values()), marker_color=method_color(methods[label]),
                            hovertemplate="%{x}: %{y:.2e}<extra>" + label + "</extra>")
                     for label, d in distances.items()])
    fig.update_xaxes(title="stage")
    fig.update_yaxes(title="AT distance")
    return layout(fig, "How far each student's attention is from the teacher's", height=320, barmode="group")


def attribution_grid(attrs: dict[str, dict], image=None, clip: float = 99.0) -> go.Figure:
    """Rows: models (``{label: {method: (H, W) map or None}}``); columns: methods. Each panel
    is centred at zero and clipped at the ``clip`` percentile of its |values|, so a
    few extreme pixels do not wash out the rest; None panels say "not applicable"."""
    labels = list(attrs)
    methods = list(dict.fromkeys(m for a in attrs.values() for m in a))
    fig = make_subplots(len(labels), len(methods), row_titles=labels, column_titles=methods,
                        horizontal_spacing=0.02, vertical_spacing=0.04)
    for r, label in enumerate(labels, 1):
        for c, method in enumerate(methods, 1):
            a = attrs[label].get(method)
            if a is None:
                _note(fig, (r - 1) * len(methods) + c, "not applicable<br>(no feature maps)")
                continue
            a = _np(a)
            lim = float(np.percentile(np.abs(a), clip)) or float(np.abs(a).max()) or 1.0
            if image is not None:
                fig.add_trace(_gray(image), r, c)
            fig.add_trace(go.Heatmap(z=np.clip(a / lim, -1, 1), customdata=a, coloraxis="coloraxis",
                                     opacity=0.7 if image is not None else 1.0,
                                     hovertemplate="attribution %{customdata:.2e}<extra></extra>"), r, c)
    _image_axes(fig, len(labels) * len(methods))
    fig.update_layout(coloraxis=dict(colorscale=DIVERGING, cmin=-1, cmax=1,
                                     colorbar=dict(title=f"÷ {clip:g}th pct.<br>of |attribution|")))
    return layout(fig, f"Attributions (red: raises the class score, blue: lowers it; clipped at the "
                       f"{clip:g}th percentile)", height=60 + 200 * len(labels))


# ---------------------------------------------------------------- FSP matrices

def fsp_grid(pairs, teacher_label: str = "Teacher", student_label: str = "Student") -> go.Figure:
    """Rows: stage pairs (``explain.FSPPair``); columns: teacher, student, student − teacher.
    Teacher and student share a colour scale per row; the difference has its own."""
    fig = make_subplots(len(pairs), 3, column_titles=(teacher_label, student_label, "Student − teacher"),
                        row_titles=[p.name for p in pairs], horizontal_spacing=0.05, vertical_spacing=0.06)
    for r, p in enumerate(pairs, 1):
        gt, gs = _np(p.teacher), _np(p.student)
        lim = max(float(np.abs(gt).max()), float(np.abs(gs).max())) or 1.0
        panels = [(gt, lim), (gs, lim)]
        if p.loss is not None:
            diff = gs - gt
            panels.append((diff, float(np.abs(diff).max()) or 1.0))
        else:
            _note(fig, 3 * r, f"channels differ<br>{gt.shape} vs {gs.shape}")
        for c, (z, zlim) in enumerate(panels, 1):
            fig.add_trace(go.Heatmap(z=z / zlim, customdata=z, coloraxis="coloraxis" if c < 3 else "coloraxis2",
                                     hovertemplate="channel %{y} → channel %{x}<br>G = %{customdata:.3f}"
                                                   "<extra></extra>"), r, c)
    _image_axes(fig, 3 * len(pairs), square=False)
    scale = dict(colorscale=DIVERGING, cmin=-1, cmax=1)
    fig.update_layout(coloraxis=dict(**scale, colorbar=dict(title="G ÷ the row's<br>largest |G|", x=1.02, len=0.45,
                                                            y=0.75)),
                      coloraxis2=dict(**scale, colorbar=dict(title="difference ÷<br>its largest", x=1.02, len=0.45,
                                                             y=0.25)))
    return layout(fig, "FSP matrices G = F₁ᵀF₂ / (h·w) (rows: channel of the first map, columns: of the last)",
                  height=60 + 220 * len(pairs))

