"""The indicators a scorecard may use: what the platform will compute daily per borrower from its
sensors and ledger (issue 13, "Features from the platform"). An expert file naming anything else is
refused, so a typo cannot silently score every borrower as "missing"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Indicator:
    name: str
    kind: Literal["numeric", "categorical"]
    unit: str
    about: str


INDICATORS: dict[str, Indicator] = {i.name: i for i in (
    Indicator("days_past_due_max_90d", "numeric", "days",
              "worst days past due on any drawdown over the last 90 days"),
    Indicator("ltv_max_90d", "numeric", "ratio", "highest loan-to-value over the last 90 days"),
    Indicator("overadvance_days_90d", "numeric", "days",
              "days drawn above the limit over the last 90 days"),
    Indicator("trust_below_one_share_30d", "numeric", "share",
              "share of the last 30 days with collateral trust below 1"),
    Indicator("critical_alerts_90d", "numeric", "count", "critical pledge alerts over 90 days"),
    Indicator("days_of_stock", "numeric", "days", "verified inventory ÷ average daily sales"),
    Indicator("inventory_turnover_90d", "numeric", "turns", "goods sold ÷ average verified stock"),
    Indicator("sales_trend_90d", "numeric", "ratio",
              "sales of the last 30 days ÷ the monthly average of the 60 before"),
    Indicator("sales_volatility_90d", "numeric", "ratio",
              "coefficient of variation of weekly sales"),
    Indicator("line_utilisation_30d", "numeric", "share",
              "share of shift time the production lines ran (manufacturers)"),
    Indicator("core_on_time_share_180d", "numeric", "share",
              "share of the core enterprise's confirmed payables paid on the due date"),
    Indicator("tenure_months", "numeric", "months", "months since the first facility"),
    Indicator("industry", "categorical", "", "the borrower's industry segment"),
    Indicator("chain_tier", "categorical", "", "tier in the core enterprise's chain: 1, 2, 3"),
)}
