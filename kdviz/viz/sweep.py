"""Figures of a sweep: a heatmap over two axes and lines with error bars, best points marked.

Inputs are ``kdviz.sweep.cells`` frames (one row per cell: the axis values, then the
metric's ``mean``, sample ``std`` and ``n`` over seeds).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from . import SEQUENTIAL, layout

BEST = dict(symbol="star", size=16, color="#ffffff", line=dict(color="#111111", width=1.5))


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def _best(rows: pd.DataFrame, lower_is_better: bool) -> pd.Series:
    return rows.loc[rows["mean"].idxmin() if lower_is_better else rows["mean"].idxmax()]


def _fmt(metric: str) -> str:
    return ".1f" if "errors" in metric else ".2f"


def heatmap(cells: pd.DataFrame, x: str, y: str, metric: str, lower_is_better: bool,
            titles: dict[str, str] | None = None) -> go.Figure:
    """``y`` × ``x`` grid coloured by the mean of ``metric`` over seeds (brighter is better);
    each cell reads mean ± std, the best cell of each row starts with a star (a marker drawn
    on the cell would hide its numbers)."""
    titles = titles or {}
    xs, ys = sorted(cells[x].unique()), list(dict.fromkeys(cells[y]))
    mean = cells.pivot(index=y, columns=x, values="mean").reindex(index=ys, columns=xs)
    std = cells.pivot(index=y, columns=x, values="std").reindex(index=ys, columns=xs)
    n = cells.pivot(index=y, columns=x, values="n").reindex(index=ys, columns=xs)
    f = _fmt(metric)
    best = {(v, _best(rows, lower_is_better)[x]) for v, rows in cells.groupby(y, sort=False)
            if rows["mean"].notna().any()}
    text = [[("" if np.isnan(m) else ("★ " if (yv, xv) in best else "") + f"{m:{f}}"
              + ("" if np.isnan(s) else f"<br>± {s:{f}}")) for xv, m, s in zip(xs, mrow, srow)]
            for yv, mrow, srow in zip(ys, mean.values, std.values)]
    xl, yl = [_label(v) for v in xs], [_label(v) for v in ys]
    fig = go.Figure(go.Heatmap(
        z=mean.values, x=xl, y=yl, text=text, texttemplate="%{text}", colorscale=SEQUENTIAL,
        reversescale=lower_is_better, colorbar=dict(title=metric), customdata=np.nan_to_num(n.values),
        hovertemplate=f"{titles.get(y, y)} %{{y}}, {titles.get(x, x)} %{{x}}<br>{metric}: %{{z:{f}}} "
                      "(mean of %{customdata:.0f} seeds)<extra></extra>", xgap=2, ygap=2))
    return layout(fig, f"{metric}, mean over seeds ({'fewer is better' if lower_is_better else 'higher is better'}; "
                       "★ best in its row)",
                  height=160 + 60 * len(ys), xaxis_title=titles.get(x, x), yaxis_title=titles.get(y, y),
                  xaxis_type="category", yaxis_type="category", legend=dict(orientation="h", y=-0.25))


def lines(cells: pd.DataFrame, x: str, series: str | None, metric: str, lower_is_better: bool,
          titles: dict[str, str] | None = None) -> go.Figure:
    """``metric`` against ``x``, one line per value of ``series``: mean over seeds with error
    bars of one sample standard deviation; a star marks each line's best point. T is drawn
    on a log axis (the interesting range, 1 to 20, spans decades of softness)."""
    titles = titles or {}
    palette = plotly.colors.qualitative.Plotly
    numeric = pd.api.types.is_numeric_dtype(cells[x])
    fig = go.Figure()
    groups = cells.groupby(series, sort=False) if series else [(None, cells)]
    for i, (value, rows) in enumerate(groups):
        rows = rows.sort_values(x) if numeric else rows
        xs = rows[x] if numeric else [_label(v) for v in rows[x]]
        name = f"{titles.get(series, series)} {_label(value)}" if series else metric
        color = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=xs, y=rows["mean"], mode="lines+markers", name=name, line=dict(color=color),
                                 error_y=dict(type="data", array=rows["std"].fillna(0), visible=True),
                                 customdata=rows["n"],
                                 hovertemplate=f"{titles.get(x, x)} %{{x}}: %{{y:{_fmt(metric)}}} "
                                               f"(mean of %{{customdata}} seeds)<extra>{name}</extra>"))
        if rows["mean"].notna().any():
            best = _best(rows, lower_is_better)
            fig.add_trace(go.Scatter(x=[best[x] if numeric else _label(best[x])], y=[best["mean"]], mode="markers",
                                     marker={**BEST, "color": color}, name=f"best of {name}", showlegend=False,
                                     hoverinfo="skip"))
    log = numeric and x == "T" and cells[x].min() > 0 and cells[x].max() / cells[x].min() >= 4
    return layout(fig, f"{metric} by {titles.get(x, x)} (mean ± std over seeds, ★ best)", height=420,
                  xaxis_title=titles.get(x, x) + (" (log scale)" if log else ""), yaxis_title=metric,
                  xaxis_type="log" if log else None, legend=dict(orientation="h", y=-0.25),
                  xaxis_tickvals=sorted(cells[x].unique()) if numeric else None)
