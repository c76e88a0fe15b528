"""Demand-response event reports: per-interval performance as a table, a plot, and the
settlement estimate.

Reads the performance the control loop stored (``Store.performance``): for each interval
of an event, the site's average import (actual), the import limit it was holding, and for
reduction events the baseline (with its method and quality), the requested reduction and
the delivered one; and the event's settlement estimate (``settlement:<event>`` state).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from rich.table import Table


def summary(records: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Event totals: mean requested and delivered kW, and their ratio."""
    targets = [r["target_kw"] for r in records if r.get("target_kw") is not None]
    delivered = [r["delivered_kw"] for r in records if r.get("delivered_kw") is not None]
    target = statistics.fmean(targets) if targets else None
    achieved = statistics.fmean(delivered) if delivered else None
    ratio = achieved / target if target and achieved is not None else None
    return {"target_kw": target, "delivered_kw": achieved, "ratio": ratio,
            "max_over_limit_kw": max((r["actual_kw"] - r["limit_kw"] for r in records),
                                     default=None)}


def table(event_id: str, records: Sequence[dict[str, Any]], zone: tzinfo) -> Table:
    result = Table(title=f"event {event_id}")
    columns = ("interval", "baseline kW", "target kW", "limit kW", "actual kW",
               "delivered kW", "delivered %")
    for column in columns:
        result.add_column(column, justify="left" if column == "interval" else "right")
    for record in records:
        start = datetime.fromtimestamp(record["interval_start"], zone).strftime("%m-%d %H:%M")
        target, delivered = record.get("target_kw"), record.get("delivered_kw")
        percent = f"{100 * delivered / target:.0f}" if target and delivered is not None else "—"
        result.add_row(start, _kw(record.get("baseline_kw")), _kw(target),
                       _kw(record["limit_kw"]), _kw(record["actual_kw"]), _kw(delivered),
                       percent)
    totals = summary(records)
    ratio = totals["ratio"]
    result.caption = (f"mean requested {_kw(totals['target_kw'])} kW, delivered "
                      f"{_kw(totals['delivered_kw'])} kW"
                      + (f" ({100 * ratio:.0f} %)" if ratio is not None else ""))
    methods = {(r.get("baseline_method"), r.get("baseline_quality")) for r in records
               if r.get("baseline_method")}
    for method, quality in sorted(methods, key=str):
        result.caption += f"; baseline {method} ({quality} quality)"
    return result


def settlement_table(body: dict[str, Any]) -> Table:
    """The settlement estimate the control loop stored when the event ended."""
    result = Table(title=f"settlement estimate, event {body['event_id']}", show_header=False)
    result.add_column("item")
    result.add_column("value", justify="right")
    coverage = body.get("baseline_coverage")
    rows = [
        ("declared (cleared) capacity", f"{body['declared_kw']:.1f} kW"),
        ("delivered", f"{body['delivered_kw']:.1f} kW"),
        ("response ratio", f"{100 * body['response_ratio']:.0f} %"),
        ("duration", f"{body['duration_h']:.2f} h"),
        ("delivered energy", f"{body['delivered_kwh']:.1f} kW·h"),
        ("missing energy", f"{body['missing_kwh']:.1f} kW·h"),
        ("clearing price", f"{body['clearing_price_cny_per_kwh']:.2f} CNY/kW·h"),
        ("payment", f"{body['payment_cny']:.2f} CNY"),
        ("penalty", f"{body['penalty_cny']:.2f} CNY"),
        ("net", f"{body['net_cny']:.2f} CNY"),
        ("baseline", f"{_kw(body.get('baseline_kw'))} kW, {body.get('baseline_method')}, "
                     f"coverage {'—' if coverage is None else f'{100 * coverage:.0f} %'}, "
                     f"{body.get('baseline_quality')} quality"),
    ]
    for item, value in rows:
        result.add_row(item, value)
    result.caption = f"rules: {body['rules']}"
    return result


def _kw(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure: Any, path: Path) -> Path:
    """Lay ``figure`` out, write it to ``path`` (folders created) and free it."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot().close(figure)
    return path


def plot(event_id: str, records: Sequence[dict[str, Any]], path: Path, zone: tzinfo) -> Path:
    """A PNG of baseline, target (the import limit) and actual import over the event."""
    plt = pyplot()
    times: Any = [datetime.fromtimestamp(r["interval_start"], zone) for r in records]
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=110)
    if any(r.get("baseline_kw") is not None for r in records):
        axes.step(times, [r.get("baseline_kw") or float("nan") for r in records], where="post",
                  label="baseline", color="#888888", linestyle="--")
    axes.step(times, [r["limit_kw"] for r in records], where="post", label="target (limit)",
              color="#d62728")
    axes.step(times, [r["actual_kw"] for r in records], where="post", label="actual import",
              color="#1f77b4", linewidth=2)
    axes.set_ylabel("site import, kW")
    axes.set_title(f"demand-response event {event_id}")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.autofmt_xdate()
    return save_png(figure, path)
