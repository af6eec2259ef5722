"""Plotly figure builders: arrays in, ``go.Figure`` out. One module per topic;
colours and layout conventions live here so every page looks the same."""
from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

# Set once: passing template= on every figure costs ~40 ms per figure to resolve.
pio.templates.default = "plotly_white"
# Readable on a projector: 14 px dark text (ticks, legends, annotations inherit it) and powers of ten
# as 10⁻³, never SI prefixes ("1µ" for 10⁻⁶). Set on each figure by ``layout``: Streamlit's chart
# theme replaces a figure's template in the browser, but not what the figure sets itself.
TEXT = dict(size=14, color="#222222")
AXIS = dict(tickfont=TEXT, title=dict(font=TEXT), exponentformat="power")

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
    "dkd": "#6b6ecf",  # issue 19's methods: darker tones of the Category20b palette, near their relatives
    "takd": "#393b79",
    "darkrank": "#bd9e39",
    "at_grad": "#ad494a",
    "byot": "#8ca252",
    "meanteacher": "#a55194",
    "datafree": "#aec7e8",
    "privileged": "#98df8a",
}
DIVERGING = "RdBu_r"  # signed maps (attributions, differences), always centred at zero
SEQUENTIAL = "Viridis"  # non-negative maps (attention, probabilities)


T_TICKS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def temperature_axis(fig: go.Figure, title: str = "temperature T (log scale)", **where) -> None:
    """A log T axis labelled 0.5, 1, 2, 5 ... in plain numbers (plotly's own log ticks read "5" for 0.5)."""
    fig.update_xaxes(type="log", tickvals=T_TICKS, ticktext=[f"{t:g}" for t in T_TICKS], title_text=title, **where)


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method, "#444444")


def _merge(into: dict, props: dict) -> dict:
    for key, value in props.items():
        into[key] = _merge(dict(into.get(key) or {}), value) if isinstance(value, dict) else value
    return into


def update_axes(fig: go.Figure, props: dict[str, dict]) -> None:
    """Merge ``props[axis]`` (nested dicts, no magic underscores) into each named axis in one
    assignment: plotly then validates the layout once, where update_xaxes and friends validate
    per axis and call (a grid of 9 maps: 40 ms against 8, on every rerun of a page)."""
    spec = fig.layout.to_plotly_json()
    for axis, value in props.items():
        spec[axis] = _merge(dict(spec.get(axis) or {}), value)
    fig.layout = spec


def layout(fig: go.Figure, title: str = "", height: int = 360, **kw) -> go.Figure:
    """Shared look: readable text, compact margins, a title (the white template is the default)."""
    fig.update_layout(title=title, height=height, font=TEXT, legend_font=TEXT, title_font=dict(size=16),
                      margin=dict(l=50, r=20, t=50 if title else 20, b=45), **kw)
    update_axes(fig, {axis: AXIS for axis in ("xaxis", "yaxis", *(k for k in fig.layout.to_plotly_json()
                                                                   if k.startswith(("xaxis", "yaxis"))))})
    fig.update_coloraxes(colorbar_tickfont=TEXT)
    for trace in fig.data:
        if trace.type == "heatmap":
            trace.colorbar.tickfont = TEXT
    return fig
