"""The settlement estimate of a demand-response event. Pure functions.

After a reduction event the gateway estimates what the programme will pay or charge:

* **declared** kW — the cleared (declared) capacity: the event's requested reduction;
* **delivered** kW — the baseline minus the measured import, averaged over the event
  (interval by interval, from the performance records);
* **response ratio** — delivered / declared;
* the **payment or penalty** under :class:`SettlementRules`. A response at or above
  ``min_ratio`` of the cleared capacity is paid at the clearing price for the delivered
  energy, at most ``max_paid_ratio`` × declared; below it nothing is paid and each missing
  kW·h (declared − delivered, over the event) costs ``penalty_factor`` × the clearing price.

The shipped example rule (the defaults): below 50 % of the cleared capacity, a penalty of
0.5 × the clearing price per missing kW·h. It is the example given in the project's issue
tracker, not a transcription of one province's 实施细则; the clearing price default
(2.0 CNY/kWh) is illustrative — set yours in ``[control.settlement]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SettlementRules:
    """How a programme pays (CNY/kWh, ratios of the cleared capacity)."""

    clearing_price_cny_per_kwh: float = 2.0
    min_ratio: float = 0.5
    max_paid_ratio: float = 1.2
    penalty_factor: float = 0.5

    def describe(self) -> str:
        return (f"paid at {self.clearing_price_cny_per_kwh:g} CNY/kWh for a response of "
                f"{100 * self.min_ratio:g}–{100 * self.max_paid_ratio:g} % of the cleared "
                f"capacity; below {100 * self.min_ratio:g} %, {self.penalty_factor:g} × the "
                "clearing price per missing kW·h")


@dataclass(frozen=True)
class Settlement:
    """An event's settlement estimate (kW, kW·h, CNY; ratio 0..)."""

    event_id: str
    declared_kw: float
    delivered_kw: float
    response_ratio: float
    duration_h: float
    delivered_kwh: float
    missing_kwh: float
    payment_cny: float
    penalty_cny: float
    net_cny: float
    clearing_price_cny_per_kwh: float
    baseline_kw: float | None
    baseline_method: str | None
    baseline_coverage: float | None
    baseline_quality: str | None
    rules: str

    def to_dict(self) -> dict[str, Any]:
        return {key: round(value, 4) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


def settle(event_id: str, declared_kw: float, records: Sequence[dict[str, Any]],
           rules: SettlementRules, *, interval_s: float, baseline: dict[str, Any]
           ) -> Settlement | None:
    """The estimate from the event's performance ``records`` (each an interval of
    ``interval_s`` with ``delivered_kw``; the last may be shorter: ``duration_s``).
    None when no interval has a delivered figure (no baseline)."""
    spans = [(float(r["delivered_kw"]), float(r.get("duration_s", interval_s)))
             for r in records if r.get("delivered_kw") is not None]
    seconds = sum(s for _, s in spans)
    if not spans or seconds <= 0 or declared_kw <= 0:
        return None
    delivered_kw = sum(kw * s for kw, s in spans) / seconds
    hours = seconds / 3600.0
    ratio = delivered_kw / declared_kw
    price = rules.clearing_price_cny_per_kwh
    payment = penalty = missing = 0.0
    if ratio >= rules.min_ratio:
        payment = min(delivered_kw, rules.max_paid_ratio * declared_kw) * hours * price
    else:
        missing = (declared_kw - max(0.0, delivered_kw)) * hours
        penalty = rules.penalty_factor * price * missing
    return Settlement(
        event_id=event_id, declared_kw=declared_kw, delivered_kw=delivered_kw,
        response_ratio=ratio, duration_h=hours, delivered_kwh=delivered_kw * hours,
        missing_kwh=missing, payment_cny=payment, penalty_cny=penalty,
        net_cny=payment - penalty, clearing_price_cny_per_kwh=price,
        baseline_kw=baseline.get("kw"), baseline_method=baseline.get("method"),
        baseline_coverage=baseline.get("coverage"), baseline_quality=baseline.get("quality"),
        rules=rules.describe())
