"""Charts of the reading pages (plotly figures; the pages only show them).

:func:`bone_age_chart`: bone age against chronological age, in years, with the Greulich-Pyle normal band
(CA +/- 2 SD, Brush Foundation table) for the child's sex, the estimate with its interval, and the
reader's age when there is one.
"""

from __future__ import annotations

import plotly.graph_objects as go

from ..clinical.greulich_pyle import normal_band


def bone_age_chart(
    sex: str,
    chronological_age_months: float,
    bone_age_months: float,
    interval: tuple[float, float] | None = None,
    reader_months: float | None = None,
) -> go.Figure:
    band = normal_band(sex)
    ca = [b[0] / 12 for b in band]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=ca,
            y=[b[2] / 12 for b in band],
            mode="lines",
            line={"width": 0},
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ca,
            y=[b[1] / 12 for b in band],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(46,139,87,0.18)",
            name="normal (±2 SD, Greulich-Pyle)",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ca,
            y=ca,
            mode="lines",
            line={"dash": "dot", "color": "seagreen"},
            name="bone age = chronological age",
        )
    )
    err = None
    if interval is not None:
        err = {
            "type": "data",
            "symmetric": False,
            "array": [(interval[1] - bone_age_months) / 12],
            "arrayminus": [(bone_age_months - interval[0]) / 12],
        }
    fig.add_trace(
        go.Scatter(
            x=[chronological_age_months / 12],
            y=[bone_age_months / 12],
            mode="markers",
            marker={"size": 11, "color": "crimson"},
            error_y=err,
            name="model (with its interval)",
        )
    )
    if reader_months is not None:
        fig.add_trace(
            go.Scatter(
                x=[chronological_age_months / 12],
                y=[reader_months / 12],
                mode="markers",
                marker={"size": 11, "symbol": "diamond", "color": "royalblue"},
                name="reader",
            )
        )
    fig.update_layout(
        xaxis_title="chronological age (years)",
        yaxis_title="bone age (years)",
        height=340,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig
