"""Reads for the blotter: positions valued at the broker snapshot's last price, and their
P&L totals. (Reconciliation with the broker's positions: orders.reconcile.)"""

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


