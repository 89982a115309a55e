"""Equity-curve figure (agent vs baselines, with a drawdown panel) as PNG bytes, and Markdown embedding it.

Matplotlib's Agg backend is selected on a Figure object (no pyplot, no global backend switch at import),
so this works headless and does not disturb other matplotlib users in the process. The Markdown helper
embeds the PNG as a base64 data URI, which Dagster renders in `MetadataValue.md`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from phoenix_rl.evaluation.backtest import BacktestResult
from phoenix_rl.evaluation.metrics import format_metric

__all__ = ["equity_curve_png", "equity_markdown", "markdown_image"]

Curves = Mapping[str, BacktestResult | pl.DataFrame]


def _equity(curve: BacktestResult | pl.DataFrame) -> pl.DataFrame:
    return curve.equity if isinstance(curve, BacktestResult) else curve


def equity_curve_png(curves: Curves, *, title: str = "Equity", path: str | Path | None = None, dpi: int = 100) -> bytes:
    """Top: equity ($) per bar of each curve against bar ts; bottom: drawdown (%) from the running peak.
    Returns the PNG bytes (and writes them to `path` when given)."""
    fig = Figure(figsize=(11, 6.5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for name, curve in curves.items():
        eq = _equity(curve)
        ts = eq["ts"].dt.replace_time_zone(None).to_numpy()
        e = eq["equity"].to_numpy().astype(np.float64)
        peak = np.maximum.accumulate(e) if len(e) else e
        lw = 1.6 if name == "agent" else 1.0
        ax_eq.plot(ts, e, label=name, linewidth=lw)
        ax_dd.plot(ts, (e / peak - 1.0) * 100.0, linewidth=lw)
    ax_eq.set_title(title)
    ax_eq.set_ylabel("equity ($)")
    ax_eq.grid(alpha=0.3)
    ax_eq.legend(loc="best", fontsize=8)
    ax_dd.set_ylabel("drawdown (%)")
    ax_dd.set_xlabel("bar start (UTC)")
    ax_dd.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


def markdown_image(png: bytes, alt: str = "equity curve") -> str:
    """Markdown image with the PNG inline as a data URI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


_TABLE_METRICS = (
    ("total_return", "total return", "{:.2%}"),
    ("sortino", "Sortino", "{:.2f}"),
    ("sharpe", "Sharpe", "{:.2f}"),
    ("max_drawdown_pct", "max DD %", "{:.2f}"),
    ("n_trades", "trades", "{:.0f}"),
    ("win_rate", "win rate", "{:.1%}"),
    ("total_cost", "costs $", "{:.2f}"),
)


def equity_markdown(curves: Curves, *, title: str = "Equity") -> str:
    """The figure embedded, followed by a metrics table for the `BacktestResult`s among `curves`."""
    md = [f"### {title}", "", markdown_image(equity_curve_png(curves, title=title), title)]
    results = {k: v for k, v in curves.items() if isinstance(v, BacktestResult)}
    if results:
        md += ["", "| policy | " + " | ".join(h for _, h, _ in _TABLE_METRICS) + " |"]
        md.append("|---" * (len(_TABLE_METRICS) + 1) + "|")
        for name, r in results.items():
            cells = [format_metric(r.metrics[k], fmt) for k, _, fmt in _TABLE_METRICS]
            md.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(md)
