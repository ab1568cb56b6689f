"""Reads for the blotter: positions valued at the broker snapshot's last price, and our
positions reconciled with the broker's, per instrument."""

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import DecimalField, ExpressionWrapper, F, OuterRef, Subquery, Sum

from .models import BrokerPosition, Position


def positions_with_prices(queryset=None):
    """Positions annotated with the snapshot's latest `last_price` and the unrealised P&L at
    it (null without a price): one query, whatever the number of rows."""
    latest = (BrokerPosition.objects.filter(exchange=OuterRef("exchange"), symbol=OuterRef("symbol"),
                                            last_price__isnull=False)
              .order_by("-taken_at").values("last_price")[:1])
    money = DecimalField(max_digits=18, decimal_places=4)
    return (queryset if queryset is not None else Position.objects.all()).annotate(
        last_price=Subquery(latest, output_field=money),
        unrealized_pnl=ExpressionWrapper((F("last_price") - F("avg_price")) * F("net_qty"), output_field=money))


def position_totals(queryset) -> dict:
    """Realised and unrealised P&L per strategy and overall, over `queryset` (already annotated)."""
    rows = queryset.order_by().values("strategy__name").annotate(realized=Sum("realized_pnl"),
                                                                   unrealized=Sum("unrealized_pnl"))
    per_strategy = [(r["strategy__name"], r["realized"] or Decimal(0), r["unrealized"] or Decimal(0)) for r in rows]
    return {"per_strategy": per_strategy,
            "realized": sum((r[1] for r in per_strategy), Decimal(0)),
            "unrealized": sum((r[2] for r in per_strategy), Decimal(0))}


@dataclass(frozen=True)
class Reconciled:
    exchange: str
    symbol: str
    product: str
    ours: int
    broker: int | None  # None: the broker's snapshot does not list it

    @property
    def matches(self) -> bool:
        return self.ours == (self.broker or 0)


def reconciliation() -> list[Reconciled]:
    """Per instrument: the sum of our strategies' net quantities against the broker snapshot's."""
    ours: dict[tuple, int] = defaultdict(int)
    for exchange, symbol, product, net in Position.objects.exclude(net_qty=0).values_list(
            "exchange", "symbol", "product", "net_qty"):
        ours[(exchange, symbol, product)] += net
    broker = {(e, s, p): n for e, s, p, n in BrokerPosition.objects.values_list("exchange", "symbol", "product",
                                                                                 "net_qty")}
    keys = sorted(set(ours) | {k for k, n in broker.items() if n})
    rows = [Reconciled(*key, ours.get(key, 0), broker.get(key)) for key in keys]
    return sorted(rows, key=lambda r: (r.matches, r.exchange, r.symbol))  # mismatches first
