"""Plotly figure builders: arrays in, ``go.Figure`` out. One module per topic;
colours and layout conventions live here so every page looks the same."""
from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

# Set once: passing template= on every figure costs ~40 ms per figure to resolve.
pio.templates.default = "plotly_white"

# One colour per method, used by every page (plotly's D3/Plotly palette).
METHOD_COLORS = {
    "teacher": "#111111",
    "plain": "#7f7f7f",
    "kd": "#1f77b4",
    "fitnet": "#2ca02c",
    "at": "#d62728",
    "fsp": "#9467bd",
    "kd_at": "#ff7f0e",
    "rkd": "#8c564b",
    "dml": "#e377c2",
    "bornagain": "#17becf",
    "ensemble": "#bcbd22",
    "datafree": "#aec7e8",
    "privileged": "#98df8a",
}
DIVERGING = "RdBu_r"  # signed maps (attributions, differences), always centred at zero
SEQUENTIAL = "Viridis"  # non-negative maps (attention, probabilities)


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method, "#444444")


def layout(fig: go.Figure, title: str = "", height: int = 360, **kw) -> go.Figure:
    """Shared look: compact margins, a title (the white template is the default)."""
    fig.update_layout(title=title, height=height,
                      margin=dict(l=50, r=20, t=50 if title else 20, b=45), **kw)
    return fig
